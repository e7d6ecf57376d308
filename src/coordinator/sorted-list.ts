/**
 * An immutable sorted list with O(log n) insert and remove: a persistent
 * B+tree. A change copies only the nodes on the path to the changed leaf
 * (at most FANOUT entries per level) and shares the rest with the list it
 * came from, so every earlier version stays valid and unchanged. That is
 * what lets the coordinator keep a compiled tenant up to date per workload
 * without copying tenant-wide arrays, while documents already rendered from
 * an older version keep reading that version.
 *
 * `toArray` materialises a version once (O(n)) and keeps the array: readers
 * of one version share it, and must not mutate it. The other way round, a
 * list made `from` items sorts them only when first read, and builds its
 * tree only when first changed or searched: compiling a tenant costs no
 * sorting or trees for lists nobody uses.
 */

/** Entries per node: wide enough for a shallow tree, small enough that copying a node is cheap. */
const FANOUT = 64;
/** Below this many entries a node is merged with a neighbour (keeps the tree shallow under removals). */
const MIN_FILL = FANOUT / 4;

export type SortKey = number | string;

/** A leaf holds items; a branch holds children. `keys[i]` is the last (largest) key under entry i. */
interface Node<T, K extends SortKey> {
  keys: K[];
  items: T[] | null;
  children: Node<T, K>[] | null;
  size: number;
}

const leaf = <T, K extends SortKey>(keys: K[], items: T[]): Node<T, K> => ({ keys, items, children: null, size: keys.length });

function branch<T, K extends SortKey>(children: Node<T, K>[]): Node<T, K> {
  let size = 0;
  for (const c of children) size += c.size;
  return { keys: children.map(lastKey), items: null, children, size };
}

const lastKey = <T, K extends SortKey>(n: Node<T, K>): K => n.keys[n.keys.length - 1]!;

/** The first index whose key is >= `key` (keys.length when none). */
function lowerBound<K extends SortKey>(keys: readonly K[], key: K): number {
  let lo = 0;
  let hi = keys.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (keys[mid]! < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Copy of `xs` with `x` at `i` (replacing `remove` entries there). */
function spliced<X>(xs: readonly X[], i: number, remove: number, ...x: X[]): X[] {
  const out = xs.slice();
  out.splice(i, remove, ...x);
  return out;
}

/** A node with more than FANOUT entries, as two halves. */
function split<T, K extends SortKey>(n: Node<T, K>): Node<T, K>[] {
  const width = n.children ? n.children.length : n.keys.length;
  if (width <= FANOUT) return [n];
  const half = width >> 1;
  if (n.children) return [branch(n.children.slice(0, half)), branch(n.children.slice(half))];
  return [leaf(n.keys.slice(0, half), n.items!.slice(0, half)), leaf(n.keys.slice(half), n.items!.slice(half))];
}

function insert<T, K extends SortKey>(n: Node<T, K>, key: K, item: T): Node<T, K>[] {
  const i = lowerBound(n.keys, key);
  if (!n.children) {
    if (n.keys[i] === key) return [leaf(n.keys, spliced(n.items!, i, 1, item))];
    return split(leaf(spliced(n.keys, i, 0, key), spliced(n.items!, i, 0, item)));
  }
  // Past the last key: the last child grows.
  const c = Math.min(i, n.children.length - 1);
  return split(branch(spliced(n.children, c, 1, ...insert(n.children[c]!, key, item))));
}

/** `n` without `key`; `n` itself when the key is absent. */
function remove<T, K extends SortKey>(n: Node<T, K>, key: K): Node<T, K> {
  const i = lowerBound(n.keys, key);
  if (i === n.keys.length || (!n.children && n.keys[i] !== key)) return n;
  if (!n.children) return leaf(spliced(n.keys, i, 1), spliced(n.items!, i, 1));
  const child = remove(n.children[i]!, key);
  if (child === n.children[i]) return n;
  const width = (x: Node<T, K>) => (x.children ? x.children.length : x.keys.length);
  if (width(child) === 0) return branch(spliced(n.children, i, 1));
  if (width(child) >= MIN_FILL || n.children.length === 1) return branch(spliced(n.children, i, 1, child));
  // Underfull: merge with a neighbour, splitting again if the two do not fit one node.
  const j = i > 0 ? i - 1 : i + 1;
  const [a, b] = j < i ? [n.children[j]!, child] : [child, n.children[j]!];
  const merged = a.children ? branch([...a.children, ...b.children!]) : leaf([...a.keys, ...b.keys], [...a.items!, ...b.items!]);
  return branch(spliced(n.children, Math.min(i, j), 2, ...split(merged)));
}

function get<T, K extends SortKey>(n: Node<T, K>, key: K): T | undefined {
  for (;;) {
    const i = lowerBound(n.keys, key);
    if (i === n.keys.length) return undefined;
    if (!n.children) return n.keys[i] === key ? n.items![i] : undefined;
    n = n.children[i]!;
  }
}

function collect<T, K extends SortKey>(n: Node<T, K>, out: T[]): void {
  if (n.children) for (const c of n.children) collect(c, out);
  else for (const x of n.items!) out.push(x);
}

/** Bottom-up build from already sorted keys and items, full nodes (O(n)). */
function build<T, K extends SortKey>(keys: readonly K[], items: readonly T[]): Node<T, K> {
  let level: Node<T, K>[] = [];
  for (let i = 0; i < keys.length; i += FANOUT) level.push(leaf(keys.slice(i, i + FANOUT), items.slice(i, i + FANOUT)));
  if (level.length === 0) return leaf([], []);
  while (level.length > 1) {
    const up: Node<T, K>[] = [];
    for (let i = 0; i < level.length; i += FANOUT) up.push(branch(level.slice(i, i + FANOUT)));
    level = up;
  }
  return level[0]!;
}

/** `items` in key order, the last of equal keys kept. */
function sortedByKey<T, K extends SortKey>(items: readonly T[], keyOf: (item: T) => K): readonly T[] {
  const keys = items.map(keyOf);
  let ordered = true;
  for (let i = 1; ordered && i < keys.length; i++) ordered = keys[i - 1]! < keys[i]!;
  // Input often comes in key order already (the store loads workloads by name; one node's workloads come from that list).
  if (ordered) return items;
  // Array.prototype.sort is stable: among equal keys the later item stays last.
  const decorated = items.map((item, i) => ({ key: keys[i]!, item }));
  decorated.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  const sorted: T[] = [];
  decorated.forEach((d, i) => {
    if (i > 0 && decorated[i - 1]!.key === d.key) sorted[sorted.length - 1] = d.item;
    else sorted.push(d.item);
  });
  return sorted;
}

export class SortedList<T, K extends SortKey = SortKey> implements Iterable<T> {
  // Private fields: neither JSON nor deep-equality sees the tree, only what toJSON says.
  // At least one of root and array is set; each is computed from the other when first needed.
  #root: Node<T, K> | null;
  /** The items in key order; or, while `#unsorted`, as given to `from`. */
  #array: readonly T[] | null;
  #unsorted: boolean;
  /** An item's sort key; keys are unique (adding an item with a key present replaces it). */
  readonly #keyOf: (item: T) => K;
  #map: ReadonlyMap<K, T> | null = null;

  private constructor(root: Node<T, K> | null, keyOf: (item: T) => K, array: readonly T[] | null, unsorted = false) {
    this.#root = root;
    this.#keyOf = keyOf;
    this.#array = array;
    this.#unsorted = unsorted;
  }

  /** The list of `items` (in any order) sorted by `keyOf`; of items with equal keys, the last wins. */
  static from<T, K extends SortKey>(items: Iterable<T>, keyOf: (item: T) => K): SortedList<T, K> {
    return new SortedList(null, keyOf, [...items], true);
  }

  #tree(): Node<T, K> {
    if (!this.#root) {
      const array = this.toArray();
      this.#root = build(array.map(this.#keyOf), array);
    }
    return this.#root;
  }

  get size(): number {
    return this.#root ? this.#root.size : this.toArray().length;
  }

  has(key: K): boolean {
    return get(this.#tree(), key) !== undefined;
  }

  get(key: K): T | undefined {
    return get(this.#tree(), key);
  }

  /** A new version with `item` in its place (replacing an item of the same key). */
  with(item: T): SortedList<T, K> {
    const parts = insert(this.#tree(), this.#keyOf(item), item);
    return new SortedList(parts.length === 1 ? parts[0]! : branch(parts), this.#keyOf, null);
  }

  /** A new version without the item of `key` (this version when there is none). */
  without(key: K): SortedList<T, K> {
    const tree = this.#tree();
    let root = remove(tree, key);
    if (root === tree) return this;
    // A branch left with one child gives way to it, so the tree shrinks as it empties.
    while (root.children?.length === 1) root = root.children[0]!;
    if (root.children?.length === 0) root = leaf([], []);
    return new SortedList(root, this.#keyOf, null);
  }

  /** Every item in key order; computed once per version and shared (do not mutate). */
  toArray(): readonly T[] {
    if (this.#unsorted) {
      this.#array = sortedByKey(this.#array!, this.#keyOf);
      this.#unsorted = false;
    } else if (!this.#array) {
      const out: T[] = [];
      collect(this.#root!, out);
      this.#array = out;
    }
    return this.#array!;
  }

  /**
   * Key → item, computed once per version and shared: for readers that look
   * up many keys in one version (rendering every host's document), where a
   * hash lookup beats a walk down the tree.
   */
  toMap(): ReadonlyMap<K, T> {
    if (!this.#map) {
      const keyOf = this.#keyOf;
      this.#map = new Map(this.toArray().map((x) => [keyOf(x), x]));
    }
    return this.#map;
  }

  /** What is wrong with the tree's shape, if anything (for tests): balanced, no node over FANOUT, keys and sizes in step. */
  static shapeErrors<T, K extends SortKey>(list: SortedList<T, K>): string[] {
    const errors: string[] = [];
    const depths = new Set<number>();
    const visit = (n: Node<T, K>, depth: number, root: boolean): void => {
      const width = n.children ? n.children.length : n.keys.length;
      if (width > FANOUT) errors.push(`a node of ${width} entries at depth ${depth}`);
      if (!root && width === 0) errors.push(`an empty node at depth ${depth}`);
      for (let i = 1; i < n.keys.length; i++) if (!(n.keys[i - 1]! < n.keys[i]!)) errors.push(`keys out of order at depth ${depth}`);
      if (!n.children) {
        depths.add(depth);
        if (n.items!.length !== n.keys.length || n.size !== n.keys.length) errors.push(`a leaf whose items, keys and size differ at depth ${depth}`);
        return;
      }
      if (root && width === 1) errors.push('a root branch with one child');
      let size = 0;
      n.children.forEach((c, i) => {
        size += c.size;
        if (c.keys.length && n.keys[i] !== lastKey(c)) errors.push(`a stale key at depth ${depth}`);
        visit(c, depth + 1, false);
      });
      if (size !== n.size) errors.push(`a branch of size ${n.size} over ${size} items at depth ${depth}`);
    };
    visit(list.#tree(), 0, true);
    if (depths.size > 1) errors.push(`leaves at depths ${[...depths].join(', ')}`);
    return errors;
  }

  /** In JSON a list is its items. */
  toJSON(): readonly T[] {
    return this.toArray();
  }

  [Symbol.iterator](): Iterator<T> {
    return this.toArray()[Symbol.iterator]();
  }
}
