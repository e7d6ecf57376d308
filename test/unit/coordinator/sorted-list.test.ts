import test from 'ava';
import { SortedList } from '../../../src/coordinator/sorted-list.js';
import { mulberry32 as random } from '../../helpers/random.js';

interface Item {
  key: number;
  v: string;
}
const byKey = (x: Item): number => x.key;
const empty = () => SortedList.from<Item, number>([], byKey);

/** The list as a plain sorted array, the slow obvious way. */
const reference = (m: Map<number, Item>): Item[] => [...m.values()].sort((a, b) => a.key - b.key);

/** One random add (with probability `addBias`) or remove of a key below `keys`, to the list and to `truth` alike. */
function change(l: SortedList<Item, number>, truth: Map<number, Item>, rnd: () => number, keys: number, addBias: number, step: number): SortedList<Item, number> {
  const key = Math.floor(rnd() * keys);
  if (rnd() >= addBias) {
    truth.delete(key);
    return l.without(key);
  }
  const item = { key, v: `v${step}` };
  truth.set(key, item);
  return l.with(item);
}

test('from sorts by key; of equal keys the last wins', (t) => {
  const l = SortedList.from(['b', 'c', 'a', 'b'], (s) => s);
  t.deepEqual([...l.toArray()], ['a', 'b', 'c']);
  const items = SortedList.from([{ key: 2, v: 'x' }, { key: 1, v: 'y' }, { key: 2, v: 'z' }], byKey);
  t.deepEqual(items.toArray(), [{ key: 1, v: 'y' }, { key: 2, v: 'z' }]);
  t.is(items.size, 2);
  t.deepEqual(empty().toArray(), []);
  t.is(empty().size, 0);
});

test('with replaces an item of the same key; without an absent key returns the same list', (t) => {
  const l = SortedList.from([{ key: 1, v: 'a' }], byKey);
  const replaced = l.with({ key: 1, v: 'b' });
  t.is(replaced.size, 1);
  t.is(replaced.get(1)?.v, 'b');
  t.is(l.get(1)?.v, 'a');
  t.is(l.without(7), l);
  t.is(empty().without(1).size, 0);
});

test('random adds and removes match a sorted array, through splits and merges, down to empty and back', (t) => {
  const rnd = random(1);
  const truth = new Map<number, Item>();
  let l = empty();
  // Grow well past one level of 64-wide nodes, churn, then drain completely and grow again.
  const phases = [
    { ops: 6000, addBias: 0.8 },
    { ops: 6000, addBias: 0.5 },
    { ops: 9000, addBias: 0.2 },
    { ops: 500, addBias: 0.9 },
  ];
  let step = 0;
  for (const { ops, addBias } of phases) {
    for (let i = 0; i < ops; i++, step++) {
      l = change(l, truth, rnd, 8000, addBias, step);
      if (step % 997 === 0) {
        t.deepEqual(SortedList.shapeErrors(l), [], `shape at step ${step}`);
        t.deepEqual([...l], reference(truth), `iteration at step ${step}`);
        t.deepEqual(l.toArray(), reference(truth), `array at step ${step}`);
      }
    }
    t.is(l.size, truth.size);
    t.deepEqual(SortedList.shapeErrors(l), []);
    t.deepEqual(l.toArray(), reference(truth));
    for (let k = 0; k < 8000; k += 37) t.is(l.get(k), truth.get(k), `get ${k}`);
    if (addBias === 0.2) {
      for (const k of [...truth.keys()]) l = l.without(k);
      truth.clear();
      t.is(l.size, 0);
      t.deepEqual([...l], []);
    }
  }
});

test('a list made from an array (its tree built on first change) changes like one built item by item', (t) => {
  const rnd = random(3);
  const truth = new Map<number, Item>();
  for (let i = 0; i < 3000; i++) {
    const key = Math.floor(rnd() * 10000);
    truth.set(key, { key, v: `a${i}` });
  }
  let l = SortedList.from([...truth.values()], byKey);
  t.is(l.size, truth.size);
  for (let i = 0; i < 3000; i++) l = change(l, truth, rnd, 10000, 0.5, i);
  t.deepEqual(SortedList.shapeErrors(l), []);
  t.deepEqual(l.toArray(), reference(truth));
});

test('ascending and descending runs (the bench appends at the end) stay correct', (t) => {
  let up = SortedList.from<number, number>([], (x) => x);
  let down = up;
  for (let i = 0; i < 5000; i++) {
    up = up.with(i);
    down = down.with(5000 - i);
  }
  t.deepEqual(SortedList.shapeErrors(up), []);
  t.deepEqual(SortedList.shapeErrors(down), []);
  t.deepEqual(SortedList.shapeErrors(SortedList.from(up, (x) => x)), [], 'bulk-built');
  t.deepEqual([...up], Array.from({ length: 5000 }, (_, i) => i));
  t.deepEqual([...down], Array.from({ length: 5000 }, (_, i) => i + 1));
  for (let i = 0; i < 5000; i += 2) up = up.without(i);
  t.deepEqual(up.toArray(), Array.from({ length: 2500 }, (_, i) => 2 * i + 1));
  t.deepEqual(SortedList.shapeErrors(up), []);
});

test('an old version is unchanged by later adds and removes, materialised before or after them', (t) => {
  const rnd = random(2);
  const truth = new Map<number, Item>();
  let l = empty();
  const snapshots: { list: SortedList<Item, number>; expected: Item[] }[] = [];
  for (let i = 0; i < 20000; i++) {
    l = change(l, truth, rnd, 5000, 0.6, i);
    if (i % 2500 === 0) {
      // Half of the snapshots are read (materialised) now, half only at the end.
      if (snapshots.length % 2 === 0) l.toArray();
      snapshots.push({ list: l, expected: reference(truth) });
    }
  }
  for (const [i, s] of snapshots.entries()) {
    t.deepEqual(s.list.toArray(), s.expected, `snapshot ${i}`);
    t.deepEqual([...s.list], s.expected, `snapshot ${i} iterated`);
    t.is(s.list.size, s.expected.length, `snapshot ${i} size`);
    for (const x of s.expected.slice(0, 50)) t.is(s.list.get(x.key), x);
  }
});

test('a version is materialised once and shared; JSON shows only the items', (t) => {
  const l = SortedList.from(['10.0.0.2', '10.0.0.10', '10.0.0.1'], (ip) => Number(ip.split('.')[3]));
  t.is(l.toArray(), l.toArray());
  const next = l.with('10.0.0.3');
  t.is(next.toArray(), next.toArray());
  t.not(next.toArray(), l.toArray());
  t.is(JSON.stringify({ l: next }), '{"l":["10.0.0.1","10.0.0.2","10.0.0.3","10.0.0.10"]}');
  t.true(l.has(10));
  t.false(l.has(3));
});
