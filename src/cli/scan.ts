/**
 * `netwall audit scan --from-here`: the outside view. From wherever the CLI
 * runs (e.g. the lab's internet host), probe the nodes' and gateways'
 * underlay addresses on a sample of TCP and UDP ports and compare with what
 * may answer there: the WireGuard UDP ports, the gateways' public listener
 * ports (HTTP/HTTPS, the TCP exposures) and the administration TCP ports
 * (ssh). The allowed set comes from the coordinator (`GET
 * /v1/audits/surface`) or from a file of the same shape (`--expect`).
 *
 * Verdict per address and port: TCP open (connected) / closed (RST) /
 * filtered (no answer); UDP open (a reply) / closed (ICMP port unreachable)
 * / open|filtered (silence). Findings: `violation` — open on a port that may
 * not answer; `unfiltered` — closed on such a port (no service, but the
 * packet reached the host's stack: its firewall does not drop it; a
 * violation with --strict); `ok` — filtered; `allowed` — an allowed port,
 * whatever its state.
 */
import type { Runner } from '../shared/runner.js';
import { pool, probeOnce } from '../shared/probe.js';
import { isIpv4 } from '../shared/ipv4.js';
import { CliError, UsageError } from './parse.js';

export interface SurfaceHost {
  name: string;
  kind: string;
  addresses: { address: string; what: string }[];
  udp: number[];
  tcp: number[];
}

export interface Surface {
  hosts: SurfaceHost[];
  coordinator?: { addresses: string[] };
}

/** Ports scanned on every address besides the allowed ones. */
export const SCAN_PORTS = {
  tcp: [22, 25, 53, 80, 111, 443, 2375, 2379, 3306, 5432, 6379, 7300, 7400, 7401, 8080, 8443, 9100, 10250],
  udp: [53, 123, 161, 51820],
} as const;

export interface ScanOptions {
  /** TCP ports any host may answer on (administration: ssh). */
  allowTcp: number[];
  /** UDP ports any host may answer on. */
  allowUdp: number[];
  /** The gateways' HTTP/HTTPS listener ports (a gateway run-time setting; default 80, 443). */
  listenerPorts: number[];
  /** More ports to scan. */
  tcpPorts: number[];
  udpPorts: number[];
  /** Scan the fixed samples (SCAN_PORTS) too (default true). */
  sample?: boolean;
}

export type ScanState = 'open' | 'closed' | 'filtered' | 'open|filtered' | 'error';
export type ScanFinding = 'ok' | 'allowed' | 'unfiltered' | 'violation' | 'error';

export interface ScanCell {
  host: string;
  kind: string;
  address: string;
  protocol: 'tcp' | 'udp';
  port: number;
  allowed: boolean;
  /** Why the port may answer (`wireguard`, `listener`, `exposure`, `admin`), or null. */
  because: string | null;
}

export interface ScanResult extends ScanCell {
  state: ScanState;
  detail: string;
  finding: ScanFinding;
}

/** The surface as given (a file or the API answer), checked. */
export function parseSurface(body: unknown, where: string): Surface {
  const b = body as Partial<Surface> | null;
  if (!b || typeof b !== 'object' || !Array.isArray(b.hosts)) throw new CliError(`${where}: expected {"hosts": [...]} (the answer of 'netwall audit surface --json')`);
  const ports = (v: unknown): number[] => (Array.isArray(v) ? v.filter((p): p is number => Number.isInteger(p) && p >= 1 && p <= 65535) : []);
  return {
    hosts: b.hosts.map((h, i) => {
      const x = h as Partial<SurfaceHost>;
      if (typeof x?.name !== 'string' || !Array.isArray(x.addresses)) throw new CliError(`${where}: hosts[${i}] needs a name and addresses`);
      return {
        name: x.name,
        kind: typeof x.kind === 'string' ? x.kind : 'host',
        addresses: x.addresses.filter((a) => a && typeof a.address === 'string' && isIpv4(a.address)).map((a) => ({ address: a.address, what: String(a.what ?? '') })),
        udp: ports(x.udp),
        tcp: ports(x.tcp),
      };
    }),
    coordinator: { addresses: (b.coordinator?.addresses ?? []).filter((a) => typeof a === 'string' && isIpv4(a)) },
  };
}

/**
 * Every (address, protocol, port) to scan. Targets: host names of the
 * surface, `coordinator`, or IPv4 addresses; none: every node and gateway.
 * Every address is scanned on the same ports: the samples, every allowed
 * port of any host, and the extra ones.
 */
export function planScan(surface: Surface, targets: readonly string[], o: ScanOptions): ScanCell[] {
  const byName = new Map(surface.hosts.map((h) => [h.name, h]));
  const picked: { host: SurfaceHost; address: string }[] = [];
  const add = (host: SurfaceHost, address: string) => {
    if (!picked.some((p) => p.address === address)) picked.push({ host, address });
  };
  const coordinator: SurfaceHost = { name: 'coordinator', kind: 'coordinator', addresses: (surface.coordinator?.addresses ?? []).map((a) => ({ address: a, what: 'mgmt' })), udp: [], tcp: [] };
  const list = targets.length === 0 || targets.includes('all') ? [...surface.hosts.map((h) => h.name), ...targets.filter((t) => t !== 'all')] : targets;
  for (const t of list) {
    const host = t === 'coordinator' ? coordinator : byName.get(t);
    if (host) {
      if (host.addresses.length === 0) throw new UsageError(`${t}: no underlay address known`);
      for (const a of host.addresses) add(host, a.address);
    } else if (isIpv4(t)) {
      const owner = surface.hosts.find((h) => h.addresses.some((a) => a.address === t)) ?? (coordinator.addresses.some((a) => a.address === t) ? coordinator : undefined);
      add(owner ?? { name: '?', kind: 'unknown', addresses: [], udp: [], tcp: [] }, t);
    } else {
      throw new UsageError(`unknown target '${t}': a node or gateway name, 'coordinator', or an IPv4 address`);
    }
  }
  const sample = o.sample ?? true;
  const tcp = new Set<number>([...(sample ? SCAN_PORTS.tcp : []), ...o.allowTcp, ...o.tcpPorts]);
  const udp = new Set<number>([...(sample ? SCAN_PORTS.udp : []), ...o.allowUdp, ...o.udpPorts]);
  for (const h of surface.hosts) {
    for (const p of h.udp) udp.add(p);
    for (const p of h.tcp) tcp.add(p);
    if (h.kind === 'gateway') for (const p of o.listenerPorts) tcp.add(p);
  }
  const cells: ScanCell[] = [];
  for (const { host, address } of picked) {
    const why = (protocol: 'tcp' | 'udp', port: number): string | null => {
      if (protocol === 'udp') {
        if (host.udp.includes(port)) return 'wireguard';
        return o.allowUdp.includes(port) ? 'admin' : null;
      }
      if (host.tcp.includes(port)) return 'exposure';
      if (host.kind === 'gateway' && o.listenerPorts.includes(port)) return 'listener';
      return o.allowTcp.includes(port) ? 'admin' : null;
    };
    for (const port of [...tcp].sort((a, b) => a - b)) cells.push({ host: host.name, kind: host.kind, address, protocol: 'tcp', port, allowed: why('tcp', port) !== null, because: why('tcp', port) });
    for (const port of [...udp].sort((a, b) => a - b)) cells.push({ host: host.name, kind: host.kind, address, protocol: 'udp', port, allowed: why('udp', port) !== null, because: why('udp', port) });
  }
  return cells;
}

export function judgeScan(allowed: boolean, state: ScanState, strict: boolean): ScanFinding {
  if (state === 'error') return 'error';
  if (allowed) return 'allowed';
  if (state === 'open') return 'violation';
  if (state === 'closed') return strict ? 'violation' : 'unfiltered';
  return 'ok';
}

/** Scan in-process from here: TCP connects and UDP datagrams, bounded in time and concurrency. */
export async function scanHere(cells: readonly ScanCell[], timeoutMs: number, concurrency = 64): Promise<{ state: ScanState; detail: string }[]> {
  return pool(cells, concurrency, async (c) => {
    const r = await probeOnce({ protocol: c.protocol, address: c.address, port: c.port }, timeoutMs);
    const state: ScanState =
      r.got === 'answered' ? 'open' : r.got === 'refused' ? 'closed' : r.got === 'error' ? 'error' : c.protocol === 'udp' && r.got === 'silent' ? 'open|filtered' : 'filtered';
    return { state, detail: r.detail };
  });
}

/** nmap's grepable output → `address/protocol/port` → state, plus each host's state for ports it did not list. */
export function parseNmapGrepable(text: string): { ports: Map<string, ScanState>; ignored: Map<string, ScanState> } {
  const ports = new Map<string, ScanState>();
  const ignored = new Map<string, ScanState>();
  const norm = (s: string): ScanState => (s === 'open' || s === 'closed' || s === 'filtered' || s === 'open|filtered' ? s : s === 'closed|filtered' || s === 'unfiltered' ? 'filtered' : 'error');
  for (const line of text.split('\n')) {
    const host = /^Host: (\S+)/.exec(line)?.[1];
    if (!host) continue;
    const list = /\tPorts: ([^\t]*)/.exec(line)?.[1];
    for (const entry of list ? list.split(', ') : []) {
      const [port, state, proto] = entry.split('/');
      if (port && state && proto) ports.set(`${host}/${proto}/${port}`, norm(state));
    }
    const ign = /\tIgnored State: (\S+)/.exec(line)?.[1];
    if (ign) ignored.set(host, norm(ign));
  }
  return { ports, ignored };
}

/** Scan with nmap (TCP: SYN scan as root, connect scan otherwise; UDP: root only). */
export async function scanNmap(cells: readonly ScanCell[], runner: Runner, o: { root: boolean; timeoutMs: number }): Promise<{ results: { state: ScanState; detail: string }[]; notes: string[] }> {
  const notes: string[] = [];
  const found = new Map<string, ScanState>();
  const ignored = new Map<string, ScanState>();
  for (const protocol of ['tcp', 'udp'] as const) {
    const mine = cells.filter((c) => c.protocol === protocol);
    if (mine.length === 0) continue;
    if (protocol === 'udp' && !o.root) {
      notes.push('nmap: UDP scans need root; UDP ports were not scanned');
      continue;
    }
    const addresses = [...new Set(mine.map((c) => c.address))];
    const ports = [...new Set(mine.map((c) => c.port))].sort((a, b) => a - b);
    const scan = protocol === 'udp' ? '-sU' : o.root ? '-sS' : '-sT';
    const argv = ['nmap', '-n', '-Pn', scan, '--max-retries', '1', '--host-timeout', '120s', '--max-rtt-timeout', `${Math.max(100, o.timeoutMs)}ms`, '-T4', '-oG', '-', '-p', ports.join(','), ...addresses];
    const res = await runner.run(argv, { allowFailure: true, timeoutMs: 180_000 });
    if (res.exitCode !== 0) throw new CliError(`nmap: exit ${res.exitCode}: ${(res.stderr.trim() || res.stdout.trim()).split('\n').pop() ?? ''}`);
    const parsed = parseNmapGrepable(res.stdout);
    for (const [k, v] of parsed.ports) found.set(k, v);
    for (const [k, v] of parsed.ignored) ignored.set(`${k}/${protocol}`, v);
  }
  const results = cells.map((c) => {
    const state = found.get(`${c.address}/${c.protocol}/${c.port}`) ?? ignored.get(`${c.address}/${c.protocol}`);
    if (state) return { state, detail: 'nmap' };
    if (c.protocol === 'udp' && !o.root) return { state: 'error' as const, detail: 'not scanned (nmap -sU needs root)' };
    return { state: 'filtered' as const, detail: 'nmap: not listed' };
  });
  return { results, notes };
}
