/**
 * A pure model of the parts of a Linux host the data plane drives: links,
 * IPv4 addresses, WireGuard configuration, routes, rules, one nftables table
 * and sysctls. It answers the exact commands the agent runs (as a Runner) and
 * fails on anything else, so state-transition tests run without root.
 */
import { CommandError } from '../../../src/shared/errors.js';
import type { RunOptions, RunResult, Runner } from '../../../src/shared/runner.js';
import { normalizeCidr } from '../../../src/shared/dataplane/routes.js';

export interface FakePeer {
  publicKey: string;
  endpoint: string | null;
  allowedIps: string[];
  keepalive: number | null;
  latestHandshake: number;
}

export interface FakeLink {
  name: string;
  kind: string;
  mtu: number;
  up: boolean;
  addresses: string[];
  publicKey: string | null;
  listenPort: number;
  peers: Map<string, FakePeer>;
}

const CONNTRACK_CHECKSUM = 'net.netfilter.nf_conntrack_checksum';

export class FakeKernel implements Runner {
  readonly links = new Map<string, FakeLink>();
  /** key `table|dst` → dev */
  readonly routes = new Map<string, string>();
  readonly rules = new Set<string>(); // `priority|from|table`
  readonly sysctls = new Map<string, string>([
    ['net.ipv4.ip_forward', '0'],
    [CONNTRACK_CHECKSUM, '1'],
  ]);
  table: string | null = null;
  /** Values of the named drop counters (reason → packets, bytes). */
  readonly counters = new Map<string, { packets: number; bytes: number }>([['spoof', { packets: 3, bytes: 180 }]]);
  /** Element transactions applied (`nft -f -` with create/delete element). */
  elementTransactions = 0;
  /** Every command run, joined. */
  readonly log: string[] = [];
  /** `ip link add … type wireguard` fails (no kernel module). */
  kernelWireguard = true;
  /** Conntrack is a module that the first table using it loads: its sysctls appear then. */
  conntrackModule = false;
  /** Private key file → public key (the files are not read). */
  constructor(private readonly keyFiles: Map<string, string>) {}

  /** A link goes away with its routes (wireguard-go exiting, `ip link del`). */
  deleteLink(name: string): void {
    this.links.delete(name);
    for (const [rk, dev] of this.routes) if (dev === name) this.routes.delete(rk);
  }

  /** Stands in for wireguard-go: its tun appears when it starts. */
  addUserspaceLink(name: string): void {
    this.links.set(name, newLink(name, 'tun'));
  }

  async run(argv: readonly string[], options: RunOptions = {}): Promise<RunResult> {
    const key = argv.join(' ');
    this.log.push(key);
    try {
      return { stdout: this.exec([...argv], options), stderr: '', exitCode: 0 };
    } catch (err) {
      if (!(err instanceof KernelError)) throw err;
      if (options.allowFailure) return { stdout: '', stderr: err.message, exitCode: 1 };
      throw new CommandError(argv, 1, err.message);
    }
  }

  private link(name: string | undefined): FakeLink {
    const link = name ? this.links.get(name) : undefined;
    if (!link) throw new KernelError(`Cannot find device "${name}"`);
    return link;
  }

  private exec(a: string[], options: RunOptions): string {
    const k = a.join(' ');
    if (a[0] === 'sysctl') {
      if (a[1] === '-w') {
        const [name = '', value = ''] = (a[2] ?? '').split('=');
        if (!this.sysctls.has(name)) throw new KernelError(`sysctl: cannot stat /proc/sys/${name.replaceAll('.', '/')}: No such file or directory`);
        this.sysctls.set(name, value);
        return '';
      }
      // `sysctl k1 k2 …`: a line per key the kernel has (the others go to stderr).
      return a.slice(1).flatMap((name) => (this.sysctls.has(name) ? [`${name} = ${this.sysctls.get(name)}\n`] : [])).join('');
    }
    if (k === 'ip -j -d link show') {
      return JSON.stringify(
        [...this.links.values()].map((l) => ({ ifname: l.name, mtu: l.mtu, flags: l.up ? ['UP'] : [], linkinfo: { info_kind: l.kind } })),
      );
    }
    if (k === 'ip -j -4 addr show') {
      return JSON.stringify(
        [...this.links.values()].map((l) => ({ ifname: l.name, addr_info: l.addresses.map((c) => ({ family: 'inet', local: c.split('/')[0], prefixlen: 32 })) })),
      );
    }
    if (k === 'ip -j -4 route show table all') {
      return JSON.stringify(
        [...this.routes].map(([rk, dev]) => {
          const [table = '', dst = ''] = rk.split('|');
          return { dst: dst.endsWith('/32') ? dst.slice(0, -3) : dst, dev, ...(table === 'main' ? {} : { table }), protocol: 'boot' };
        }),
      );
    }
    if (k === 'ip -j -4 rule show') {
      return JSON.stringify(
        [...this.rules].map((r) => {
          const [priority = '', from = '', table = ''] = r.split('|');
          const [src, len] = from.split('/');
          return { priority: Number(priority), src, srclen: Number(len), table };
        }),
      );
    }
    if (a[0] === 'wg' && a[1] === 'show') {
      const l = this.link(a[2]);
      if (l.kind !== 'wireguard' && l.kind !== 'tun') throw new KernelError('not a wireguard interface');
      if (a[3] === 'listen-port') return `${l.listenPort}\n`;
      const head = `PRIVATE\t${l.publicKey ?? '(none)'}\t${l.listenPort}\toff`;
      const peers = [...l.peers.values()].map((p) =>
        [p.publicKey, '(none)', p.endpoint ?? '(none)', p.allowedIps.join(',') || '(none)', p.latestHandshake, 0, 0, p.keepalive ?? 'off'].join('\t'),
      );
      return `${[head, ...peers].join('\n')}\n`;
    }
    if (a[0] === 'wg' && a[1] === 'set') return this.wgSet(this.link(a[2]), a.slice(3));
    if (a[0] === 'ip' && a[1] === 'link') return this.ipLink(a.slice(2));
    if (a[0] === 'ip' && a[1] === '-4' && a[2] === 'address') {
      const l = this.link(a[6]);
      const cidr = normalizeCidr(a[4] ?? '');
      if (a[3] === 'add') {
        if (l.addresses.includes(cidr)) throw new KernelError('File exists');
        l.addresses.push(cidr);
      } else {
        if (!l.addresses.includes(cidr)) throw new KernelError('Cannot assign requested address');
        l.addresses = l.addresses.filter((x) => x !== cidr);
      }
      return '';
    }
    if (a[0] === 'ip' && a[1] === 'route') {
      const dst = normalizeCidr(a[3] ?? '');
      const dev = a[5] ?? '';
      const table = a[6] === 'table' ? (a[7] ?? '') : 'main';
      this.link(dev);
      const rk = `${table}|${dst}`;
      if (a[2] === 'replace') this.routes.set(rk, dev);
      else if (!this.routes.delete(rk)) throw new KernelError('No such process');
      return '';
    }
    if (a[0] === 'ip' && a[1] === 'rule') {
      const rk = `${a[8]}|${normalizeCidr(a[4] ?? '')}|${a[6]}`;
      if (a[2] === 'add') this.rules.add(rk);
      else if (!this.rules.delete(rk)) throw new KernelError('No such file or directory');
      return '';
    }
    if (k === 'nft list table inet netwall') {
      if (this.table === null) throw new KernelError('No such file or directory');
      // As nft 1.0 lists it: counter objects on three lines, with their values.
      return this.table.replace(/\tcounter d_([a-z_]+) \{ \}/g, (_l, r: string) => {
        const c = this.counters.get(r) ?? { packets: 0, bytes: 0 };
        return `\tcounter d_${r} {\n\t\tpackets ${c.packets} bytes ${c.bytes}\n\t}`;
      });
    }
    if (k === 'nft -j list counters table inet netwall') {
      if (this.table === null) throw new KernelError('No such file or directory');
      return JSON.stringify({ nftables: [...this.counters].map(([r, c]) => ({ counter: { name: `d_${r}`, ...c } })) });
    }
    if (k === 'nft -f -') {
      const input = options.input ?? '';
      if (/^(create|delete) element /.test(input)) return this.elementTransaction(input);
      const lines = input.split('\n');
      if (lines[0] !== 'table inet netwall {}' || lines[1] !== 'delete table inet netwall') throw new KernelError('unexpected transaction');
      this.counters.clear();
      for (const m of input.matchAll(/\tcounter d_([a-z_]+) \{ packets (\d+) bytes (\d+) \}/g)) this.counters.set(m[1]!, { packets: Number(m[2]), bytes: Number(m[3]) });
      // The "kernel's rendering": our text without counter values, set members in the kernel's own order.
      this.table = canonicalSets(lines.slice(2).join('\n').replace(/\{ packets \d+ bytes \d+ \}/g, '{ }'));
      if (this.conntrackModule && !this.sysctls.has(CONNTRACK_CHECKSUM) && this.table.includes('ct state')) this.sysctls.set(CONNTRACK_CHECKSUM, '1');
      return '';
    }
    throw new Error(`FakeKernel: unexpected command: ${k}`);
  }

  /** `create element` / `delete element` lines, all or nothing, like one nft transaction. */
  private elementTransaction(input: string): string {
    if (this.table === null) throw new KernelError('No such file or directory');
    let table = this.table;
    for (const line of input.trim().split('\n')) {
      const m = /^(create|delete) element inet netwall (\S+) \{ (.*) \}$/.exec(line);
      if (!m) throw new KernelError(`syntax error: ${line}`);
      const [, op, set, list] = m as unknown as [string, string, string, string];
      const members = setMembers(table, set);
      if (!members) throw new KernelError(`Could not process rule: No such file or directory: set ${set}`);
      for (const e of list.split(', ')) {
        if (op === 'create' && members.includes(e)) throw new KernelError('Could not process rule: File exists');
        if (op === 'delete' && !members.includes(e)) throw new KernelError('Could not process rule: No such file or directory');
        if (op === 'create') members.push(e);
        else members.splice(members.indexOf(e), 1);
      }
      table = withSetMembers(table, set, members);
    }
    this.table = table;
    this.elementTransactions++;
    return '';
  }

  private ipLink(a: string[]): string {
    if (a[0] === 'add' && a[2] === 'type' && a[3] === 'wireguard') {
      if (!this.kernelWireguard) throw new KernelError('Error: Unknown device type.');
      if (this.links.has(a[1] ?? '')) throw new KernelError('File exists');
      this.links.set(a[1] ?? '', newLink(a[1] ?? '', 'wireguard'));
      return '';
    }
    if (a[0] === 'del' && a[1] === 'dev') {
      this.deleteLink(this.link(a[2]).name);
      return '';
    }
    if (a[0] === 'show' && a[1] === 'dev') {
      this.link(a[2]);
      return '';
    }
    if (a[0] === 'set' && a[1] === 'dev') {
      const l = this.link(a[2]);
      if (a[3] === 'mtu') l.mtu = Number(a[4]);
      else if (a[3] === 'up') l.up = true;
      else throw new Error(`FakeKernel: ip link set ${a.join(' ')}`);
      return '';
    }
    throw new Error(`FakeKernel: unexpected ip link ${a.join(' ')}`);
  }

  private wgSet(l: FakeLink, a: string[]): string {
    let peer: FakePeer | null = null;
    for (let i = 0; i < a.length; i += 2) {
      const [word, value = ''] = [a[i], a[i + 1]];
      if (word === 'remove') {
        if (peer) l.peers.delete(peer.publicKey);
        i -= 1;
        continue;
      }
      if (word === 'listen-port') l.listenPort = Number(value);
      else if (word === 'private-key') {
        const pub = this.keyFiles.get(value);
        if (!pub) throw new KernelError(`cannot read ${value}`);
        l.publicKey = pub;
      } else if (word === 'peer') {
        peer = l.peers.get(value) ?? { publicKey: value, endpoint: null, allowedIps: [], keepalive: null, latestHandshake: 0 };
        l.peers.set(value, peer);
      } else if (peer && word === 'endpoint') peer.endpoint = value;
      else if (peer && word === 'persistent-keepalive') peer.keepalive = value === 'off' ? null : Number(value);
      else if (peer && word === 'allowed-ips') peer.allowedIps = value ? value.split(',').map(normalizeCidr).sort() : [];
      else throw new Error(`FakeKernel: wg set ${a.join(' ')}`);
    }
    return '';
  }

  /** A path-independent picture of the state, for comparing. */
  snapshot(): unknown {
    return {
      links: [...this.links.values()]
        .map((l) => ({ ...l, addresses: [...l.addresses].sort(), peers: [...l.peers.values()].sort((x, y) => x.publicKey.localeCompare(y.publicKey)) }))
        .sort((x, y) => x.name.localeCompare(y.name)),
      routes: [...this.routes].sort(),
      rules: [...this.rules].sort(),
      table: this.table,
      sysctls: [...this.sysctls].sort(),
    };
  }
}

function newLink(name: string, kind: string): FakeLink {
  return { name, kind, mtu: 1420, up: false, addresses: [], publicKey: null, listenPort: 0, peers: new Map() };
}

class KernelError extends Error {}

const setBlockRe = (set: string): RegExp => new RegExp(`(\\tset ${set} \\{\\n\\t\\ttype [^\\n]*\\n(?:\\t\\t(?:flags|auto-merge)[^\\n]*\\n)*)(\\t\\telements = \\{ [^}]* \\}\\n)?(\\t\\})`);

/** Members of a set in a table text, or null when there is no such set. */
export function setMembers(table: string, set: string): string[] | null {
  const m = setBlockRe(set).exec(table);
  if (!m) return null;
  const line = m[2];
  return line ? line.trim().slice('elements = { '.length, -2).split(/,\s*/).filter((e) => e !== '') : [];
}

function withSetMembers(table: string, set: string, members: string[]): string {
  const sorted = [...members].sort();
  return table.replace(setBlockRe(set), (_all, head: string, _els, close: string) =>
    `${head}${sorted.length > 0 ? `\t\telements = { ${sorted.join(',\n\t\t\t     ')} }\n` : ''}${close}`,
  );
}

/** The fake kernel lists workload set members sorted as strings, however they were added. */
function canonicalSets(table: string): string {
  let out = table;
  for (const m of table.matchAll(/\tset (veth_addr|g_\S+) \{/g)) out = withSetMembers(out, m[1]!, setMembers(out, m[1]!) ?? []);
  return out;
}
