/**
 * scripts/bench data-plane — what the wall costs on the wire. Root only; runs
 * entirely in network namespaces named `nwb<pid>-…` (test/lab/helpers/netns.ts)
 * and removes them, and every process it started (by pid), on exit.
 *
 * World: two lab hosts n1, n2 (own network + mount namespaces, wireguard-go
 * each: the system's, or `--wireguard-go PATH`; its version is printed, as
 * TUN offloads, from 2023, change the per-packet costs) on a bridged veth
 * underlay (192.0.2.0/24), one container on each (routed veth, as the CNI
 * plugin makes it), one tenant whose policy allows client → server tcp 5201
 * (iperf3) and icmp. The real Reconciler applies the
 * desired documents (wg + routes + the whole `inet netwall` table).
 *
 * Each lab node gets its own CPU, as two machines would (`--no-pin`: none):
 * n1's wireguard-go and the client's iperf3/ping on CPU 0, n2's wireguard-go
 * and the server's iperf3 on CPU 1 — the same in both modes.
 *
 * Measured in one run, container → container across the mesh:
 *   underlay  node → node on the underlay (veth, no wg, no netwall), RUNS runs: context
 *   netwall   (a) as reconciled
 *   baseline  (b) the same, after `nft delete table inet netwall` on both nodes
 *   floor     (c) no netwall table either, but the least any stateful filter
 *                 needs (FLOOR_TABLE: WireGuard's UDP untracked, forward
 *                 accepts established/related and drops invalid, nothing
 *                 else): what connection tracking alone costs, so the gap
 *                 between (a) and (b) splits into tracking and netwall's rules
 * after one uncounted warm-up run (a), in the order a b a c a b a c … a
 * (CYCLES runs of each of b and c, each between two netwall runs; the table
 * reconciled back before each a): one iperf3 TCP run of SECONDS (after 1 s
 * omitted) and then `ping -c PING_COUNT -i 0.01` per phase. The figure is the
 * median of the per-pair ratios — each b (or c) against the mean of its two
 * neighbouring a runs, which cancels load that drifts during the run — with
 * their quartiles; the ratio of the medians and last a / first a (drift) are
 * printed beside it. A probe on a port the policy does not allow, run
 * alongside every iperf3 run, proves each mode is what it claims (blocked
 * with the table, open without it and with the floor).
 *
 * With perf (and the nodes pinned; `--no-perf`: not), each run also samples
 * the receiving node's CPU — the one that saturates — and reports how much of
 * it netfilter's hooks, rule evaluation and conntrack take per mode
 * (sampleNetfilter): the cost itself, where the throughput ratio shows it
 * through the run-to-run noise.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { Reconciler } from '../src/shared/dataplane/reconcile.js';
import { ensureTenantKey } from '../src/shared/dataplane/wireguard.js';
import type { DesiredState, PeerState } from '../src/shared/desired.js';
import { NetnsLab, labUnavailable, waitForAsync, type LabHost } from '../test/lab/helpers/netns.js';
import { recordBenchmark } from './bench-record.js';
import { nodeFirewall } from '../src/node-agent/nftables.js';

// ---------------------------------------------------------------- shared with bench-rules.ts

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export function percentile(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

export interface IperfResult {
  gbps: number;
  retransmits: number;
}

/**
 * One iperf3 TCP run from `ns` to `address` (JSON output; the first second
 * omitted as slow start). `prefix` goes before `iperf3` (e.g. `taskset -c 0`).
 */
export async function iperf(lab: NetnsLab, ns: string, address: string, seconds: number, port = 5201, prefix: readonly string[] = []): Promise<IperfResult> {
  const res = await lab.exec(ns, [...prefix, 'iperf3', '-c', address, '-p', String(port), '-t', String(seconds), '-O', '1', '-J'], {
    timeoutMs: (seconds + 15) * 1000,
    allowFailure: true,
  });
  const doc = JSON.parse(res.stdout || '{}') as {
    error?: string;
    end?: { sum_received?: { bits_per_second?: number }; sum_sent?: { retransmits?: number } };
  };
  const bps = doc.end?.sum_received?.bits_per_second;
  if (res.exitCode !== 0 || bps === undefined) throw new Error(`iperf3 ${ns} → ${address}:${port}: ${doc.error || res.stderr.trim() || `exit ${res.exitCode}`}`);
  return { gbps: bps / 1e9, retransmits: doc.end?.sum_sent?.retransmits ?? 0 };
}

/** `runs` iperf3 runs; the median throughput and all runs' figures. */
export async function iperfSeries(lab: NetnsLab, ns: string, address: string, runs: number, seconds: number, prefix: readonly string[] = []): Promise<{ median: number; runs: number[]; retransmits: number }> {
  const results: IperfResult[] = [];
  for (let i = 0; i < runs; i++) results.push(await iperf(lab, ns, address, seconds, 5201, prefix));
  return { median: median(results.map((r) => r.gbps)), runs: results.map((r) => r.gbps), retransmits: results.reduce((a, r) => a + r.retransmits, 0) };
}

export interface PingStats {
  /** Every reply's round-trip time (ms). */
  rtts: number[];
  sent: number;
  received: number;
  min: number;
  avg: number;
  p50: number;
  p99: number;
}

/** `ping -c count -i 0.01`, per-packet RTTs parsed from its lines (ms); `prefix` as for iperf. */
export async function pingStats(lab: NetnsLab, ns: string, address: string, count = 200, prefix: readonly string[] = []): Promise<PingStats> {
  const res = await lab.exec(ns, [...prefix, 'ping', '-n', '-c', String(count), '-i', '0.01', '-W', '1', address], { allowFailure: true, timeoutMs: 30_000 });
  const rtts = [...res.stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]));
  if (rtts.length === 0) throw new Error(`ping ${ns} → ${address}: no replies\n${res.stdout}${res.stderr}`);
  return {
    rtts,
    sent: count,
    received: rtts.length,
    min: Math.min(...rtts),
    avg: rtts.reduce((a, b) => a + b, 0) / rtts.length,
    p50: percentile(rtts, 50),
    p99: percentile(rtts, 99),
  };
}

export const fmtPing = (p: PingStats): string =>
  `min ${p.min.toFixed(3)} / avg ${p.avg.toFixed(3)} / p50 ${p.p50.toFixed(3)} / p99 ${p.p99.toFixed(3)} ms (${p.received}/${p.sent})`;

export const fmtRuns = (s: { median: number; runs: number[]; retransmits: number }): string =>
  `${s.median.toFixed(2)} Gbit/s median (runs ${s.runs.map((r) => r.toFixed(2)).join(', ')}; ${s.retransmits} retransmits)`;

/** Stop everything on Ctrl-C/TERM too: namespaces and children are ours to remove. */
export function cleanupOnSignals(cleanup: () => Promise<void>): void {
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      console.error(`\n${sig}: cleaning up`);
      void cleanup().finally(() => process.exit(130));
    });
  }
}

/** A hard stop: if the bench overruns its budget, clean up and fail rather than hang. */
export function deadline(seconds: number, cleanup: () => Promise<void>): NodeJS.Timeout {
  const timer = setTimeout(() => {
    console.error(`bench: over the ${seconds} s budget, aborting`);
    void cleanup().finally(() => process.exit(1));
  }, seconds * 1000);
  timer.unref();
  return timer;
}

// ---------------------------------------------------------------- the world

/**
 * Where the receiving node's CPU goes (n2's, CPU 1 when pinned: the one that
 * runs out first with a wireguard-go without TUN offloads — the sender's CPU
 * idles about half the time): `perf record` samples it (cpu-clock, call
 * graphs) for PERF_SECONDS in the middle of a run, and the shares of the
 * netfilter call trees in its busy samples are read from `perf report`, with
 * the idle share beside them. A share of a saturated CPU is what the
 * throughput pays for, and it is far less noisy than the throughput itself.
 */
interface NetfilterShare {
  /** Idle samples (swapper), in % of all: how far the CPU was from saturated. */
  idle: number;
  /** nf_hook_slow with everything it calls: every netfilter hook (the underlay's bridge included). */
  hooks: number;
  /** nft_do_chain: evaluating rules. */
  rules: number;
  /** nf_conntrack_in: connection tracking's lookup and state machine. */
  conntrack: number;
}
const PERF_SECONDS = 2;
const execFileP = promisify(execFile);

async function sampleNetfilter(cpu: number, file: string, delayMs: number): Promise<NetfilterShare> {
  await new Promise((r) => setTimeout(r, delayMs));
  await execFileP('perf', ['record', '-q', '-e', 'cpu-clock', '-C', String(cpu), '-g', '-o', file, '--', 'sleep', String(PERF_SECONDS)]);
  const report = async (...args: string[]): Promise<string> => (await execFileP('perf', ['report', '-i', file, '-q', '-g', 'none', ...args], { maxBuffer: 1 << 26 })).stdout;
  // Shares of the busy samples: a sample that falls after the run ends (perf takes its time to start) is idle, not work.
  const idle = Number(/^\s*([\d.]+)%\s+swapper\s*$/m.exec(await report('--sort', 'comm'))?.[1] ?? 0);
  const bySymbol = await report('--children', '--sort', 'sym');
  // Lines: "children% self% [k] symbol".
  const share = (sym: string): number =>
    (Number(new RegExp(`^\\s*([\\d.]+)%\\s+[\\d.]+%\\s+\\[k\\] ${sym}\\s*$`, 'm').exec(bySymbol)?.[1] ?? 0) * 100) / (100 - idle);
  return { idle, hooks: share('nf_hook_slow'), rules: share('nft_do_chain'), conntrack: share('nf_conntrack_in') };
}

/** Underlay context: RUNS iperf3 runs of UNDERLAY_SECONDS. */
const RUNS = 3;
const UNDERLAY_SECONDS = 2;
/** Each measured iperf3 run (after 1 s omitted). */
const SECONDS = 3;
/** a b a c a b a c … a: CYCLES runs of each of b and c, each between two netwall runs. */
const CYCLES = 6;
/** Pings after each run (10 ms apart). */
const PING_COUNT = 50;
const IPERF_PORT = 5201;
const BLOCKED_PORT = 5202;
const UNDERLAY = { n1: '192.0.2.1', n2: '192.0.2.2' } as const;
const TENANT = 'bench';
const WG_PORT = 51820;
/**
 * Mode (c): the cheapest table that still tracks connections, as a stateful
 * wall must (replies and new flows told apart for TCP and UDP alike).
 */
const FLOOR = 'netwall_floor';
const FLOOR_TABLE = `table inet ${FLOOR} {
\tchain raw_prerouting {
\t\ttype filter hook prerouting priority raw; policy accept;
\t\tudp dport ${WG_PORT} notrack
\t}
\tchain raw_output {
\t\ttype filter hook output priority raw; policy accept;
\t\tudp sport ${WG_PORT} notrack
\t}
\tchain forward {
\t\ttype filter hook forward priority filter; policy accept;
\t\tct state established,related accept
\t\tct state invalid drop
\t}
}
`;
const CLIENT = { name: 'client', address: '10.1.1.10', labels: { app: 'client' } };
const SERVER = { name: 'server', address: '10.1.2.10', labels: { app: 'server' } };

type NodeName = 'n1' | 'n2';

function nodeDoc(n: NodeName, keys: Record<NodeName, string>, version = 1): DesiredState {
  const slice = (m: NodeName): string => `10.1.${m === 'n1' ? 1 : 2}.0/24`;
  const address = (m: NodeName): string => `10.1.${m === 'n1' ? 1 : 2}.1`;
  const peers: PeerState[] = (['n1', 'n2'] as const).map((m) => ({
    host: m,
    kind: 'node',
    publicKey: keys[m],
    endpoint: `${UNDERLAY[m]}:${WG_PORT}`,
    allowedIps: [`${address(m)}/32`, slice(m)],
    meshAddress: address(m),
  }));
  return {
    schema: 1,
    kind: 'node',
    host: n,
    version,
    settings: { mtu: 1420, statusIntervalSeconds: 30, keepaliveSeconds: null },
    tenants: [
      {
        tenant: TENANT,
        iface: `nw-${TENANT}`,
        subnet: '10.1.0.0/16',
        slice: slice(n),
        address: address(n),
        listenPort: WG_PORT,
        publicKey: keys[n],
        peers,
        workloads: n === 'n1' ? [CLIENT] : [SERVER],
        firewall: {
          groups: { 'app=client': [`${CLIENT.address}/32`], 'app=server': [`${SERVER.address}/32`] },
          rules: [
            { origin: 'iperf', from: 'app=client', to: 'app=server', protocol: 'tcp', ports: [{ from: IPERF_PORT, to: IPERF_PORT }] },
            { origin: 'iperf', from: 'app=client', to: 'app=server', protocol: 'icmp', ports: [] },
          ],
        },
        entryPoints: [],
        egress: { gateway: null, allow: [] },
      },
    ],
    exposures: [],
    networks: [TENANT],
  };
}

// ---------------------------------------------------------------- the run

async function main(): Promise<void> {
  const unavailable = labUnavailable(['ip', 'nft', 'wg', 'wireguard-go', 'sysctl', 'nsenter', 'unshare', 'socat', 'ping', 'iperf3', 'ss']);
  if (unavailable) {
    console.error(`bench data-plane: ${unavailable} (iperf3: apt-get install -y iperf3)`);
    process.exit(2);
  }
  const started = performance.now();
  const load = loadavg();
  const cpus = availableParallelism();
  // One CPU per lab node (its wireguard-go and its container's iperf3/ping), identical in both modes.
  const pin = cpus >= 2 && !process.argv.includes('--no-pin');
  // The receiving node's CPU profile needs it pinned (one CPU to sample) and perf.
  const profile = pin && labUnavailable(['perf']) === null && !process.argv.includes('--no-perf');
  const perfDir = profile ? mkdtempSync(join(tmpdir(), 'netwall-bench-perf-')) : null;
  const onCpu = (n: NodeName): string[] => (pin ? ['taskset', '-c', n === 'n1' ? '0' : '1'] : []);
  // Another wireguard-go build for both nodes, in every mode (default: the one on the system PATH).
  const wgFlag = process.argv.indexOf('--wireguard-go');
  const wireguardGoBinary = wgFlag > 0 ? process.argv[wgFlag + 1] : undefined;
  if (wgFlag > 0 && !wireguardGoBinary) {
    console.error('bench data-plane: --wireguard-go needs a path');
    process.exit(2);
  }
  // NetnsLab removes /run/wireguard at cleanup when it created it, and an rmdir in the root mount
  // namespace detaches the per-host tmpfs mounted there in every other live lab (their `wg` then
  // loses wireguard-go's socket). Making sure it exists first keeps this run from doing that to others.
  mkdirSync('/run/wireguard', { recursive: true });
  const lab = new NetnsLab(`nwb${process.pid}`);
  const reconcilers: Reconciler[] = [];
  let cleaned = false;
  const cleanup = async (): Promise<void> => {
    if (cleaned) return;
    cleaned = true;
    for (const r of reconcilers) await r.stopUserspace().catch(() => undefined);
    await lab.cleanup();
    if (perfDir) rmSync(perfDir, { recursive: true, force: true });
    const left = await lab.leftovers();
    if (left.length > 0) console.error(`bench data-plane: namespaces left behind: ${left.join(' ')}`);
  };
  cleanupOnSignals(cleanup);
  deadline(170, cleanup);

  const lines: string[] = [];
  const out = (s: string): void => {
    console.log(s);
    lines.push(s);
  };
  const wgExits: string[] = [];
  try {
    const hosts: Record<NodeName, LabHost> = { n1: await lab.host('n1'), n2: await lab.host('n2') };
    await lab.underlay([
      { ns: hosts.n1.ns, address: `${UNDERLAY.n1}/24` },
      { ns: hosts.n2.ns, address: `${UNDERLAY.n2}/24` },
    ]);
    const c1 = await lab.container(hosts.n1.ns, TENANT, CLIENT.name, CLIENT.address);
    const c2 = await lab.container(hosts.n2.ns, TENANT, SERVER.name, SERVER.address);
    const keys = { n1: ensureTenantKey(hosts.n1.stateDir, TENANT).publicKey, n2: ensureTenantKey(hosts.n2.stateDir, TENANT).publicKey };
    // Changes are logged quietly; anything else the reconciler says (a wireguard-go exit) is printed at once.
    const reconciler = (n: NodeName): Reconciler =>
      new Reconciler({
        firewall: nodeFirewall(),
        runner: hosts[n].runner,
        spawner: { spawn: (argv, env) => hosts[n].spawner.spawn([...onCpu(n), ...argv], env) },
        log: (l) => {
          if (!l.startsWith('[#]')) console.error(`${n}: ${l}`);
        },
        onWireguardExit: (iface, code) => wgExits.push(`${n} ${iface} exited (${code}) at ${((performance.now() - started) / 1000).toFixed(1)} s`),
        keyFileFor: (t) => ensureTenantKey(hosts[n].stateDir, t).privateKeyFile,
        wireguardMode: 'auto',
        ...(wireguardGoBinary ? { wireguardGoBinary } : {}),
      });
    const rec: Record<NodeName, Reconciler> = { n1: reconciler('n1'), n2: reconciler('n2') };
    reconcilers.push(rec.n1, rec.n2);

    // Servers: iperf3 in the server container and on n2's underlay; a listener on a port no policy allows.
    lab.background(['ip', 'netns', 'exec', c2.ns, ...onCpu('n2'), 'iperf3', '-s', '-p', String(IPERF_PORT)]);
    lab.background(['ip', 'netns', 'exec', hosts.n2.ns, ...onCpu('n2'), 'iperf3', '-s', '-p', String(IPERF_PORT), '-B', UNDERLAY.n2]);
    await lab.listening(c2.ns, 'tcp', IPERF_PORT);
    await lab.listening(hosts.n2.ns, 'tcp', IPERF_PORT);
    await lab.listen(c2.ns, 'tcp', BLOCKED_PORT);

    // ---- context: the underlay alone (before anything of netwall exists)
    await waitForAsync(() => lab.ping(hosts.n1.ns, UNDERLAY.n2), 5000, 'underlay ping');
    const underlay = await iperfSeries(lab, hosts.n1.ns, UNDERLAY.n2, RUNS, UNDERLAY_SECONDS, onCpu('n1'));
    const underlayPing = await pingStats(lab, hosts.n1.ns, UNDERLAY.n2, PING_COUNT, onCpu('n1'));

    // ---- netwall: the real reconciler on both nodes
    const reconcileMs: Record<NodeName, number> = { n1: 0, n2: 0 };
    for (const n of ['n1', 'n2'] as const) {
      const t0 = performance.now();
      const res = await rec[n].reconcile(nodeDoc(n, keys));
      reconcileMs[n] = performance.now() - t0;
      if (res.errors.length > 0) throw new Error(`${n}: reconcile: ${res.errors.join('; ')}`);
    }
    for (const n of ['n1', 'n2'] as const) {
      const left = await rec[n].plan(nodeDoc(n, keys));
      if (left.length > 0) throw new Error(`${n}: second plan not empty (${left.length} changes)`);
    }
    await waitForAsync(() => lab.ping(c1.ns, c2.address), 10_000, 'client → server across the mesh (handshake)');

    type Mode = 'a' | 'b' | 'c';
    const tableOn = async (n: NodeName, name: string): Promise<boolean> =>
      (await hosts[n].runner.run(['nft', 'list', 'table', 'inet', name], { allowFailure: true })).exitCode === 0;
    /**
     * One measured run with its mode check: which table is on both nodes, and the port no policy
     * allows is blocked (a) or open (b, c), probed while the run is under way (its 1 s timeout falls
     * in the omitted first second instead of adding to the phase).
     */
    const measured = async (label: string, mode: Mode): Promise<{ run: IperfResult; verified: string; cpu: NetfilterShare | null }> => {
      for (const n of ['n1', 'n2'] as const) {
        if ((await tableOn(n, 'netwall')) !== (mode === 'a')) throw new Error(`${label}: table inet netwall ${mode === 'a' ? 'missing' : 'present'} on ${n}`);
        if ((await tableOn(n, FLOOR)) !== (mode === 'c')) throw new Error(`${label}: table inet ${FLOOR} ${mode === 'c' ? 'missing' : 'present'} on ${n}`);
      }
      const probe = lab.reach(c1.ns, 'tcp', c2.address, BLOCKED_PORT, { seconds: 1 });
      // perf starts sampling about a second after it is started: from ~1.5 s in (after the omitted second), inside the run.
      const sample = perfDir ? sampleNetfilter(1, join(perfDir, `${label}.data`), 500) : Promise.resolve(null);
      const run = await iperf(lab, c1.ns, c2.address, SECONDS, IPERF_PORT, onCpu('n1'));
      const cpu = await sample;
      const open = await probe;
      if (open === (mode === 'a')) throw new Error(`${label}: tcp ${BLOCKED_PORT} (no policy) is ${open ? 'open' : 'blocked'}`);
      return { run, verified: `${mode}: tcp ${BLOCKED_PORT} ${open ? 'open' : 'blocked'}`, cpu };
    };

    const restoreMs: number[] = [];
    const restoreNotes: string[] = [];
    const deleteTable = async (floor: boolean): Promise<void> => {
      for (const n of ['n1', 'n2'] as const) {
        await hosts[n].runner.run(['nft', 'delete', 'table', 'inet', 'netwall']);
        if (floor) await hosts[n].runner.run(['nft', '-f', '-'], { input: FLOOR_TABLE });
      }
    };
    const restoreTable = async (): Promise<void> => {
      for (const n of ['n1', 'n2'] as const) {
        if (await tableOn(n, FLOOR)) await hosts[n].runner.run(['nft', 'delete', 'table', 'inet', FLOOR]);
        const t0 = performance.now();
        const res = await rec[n].reconcile(nodeDoc(n, keys));
        restoreMs.push(performance.now() - t0);
        if (res.errors.length > 0) throw new Error(`${n}: restore: ${res.errors.join('; ')}`);
        const kinds = res.changes.map((c) => (c.kind === 'firewall-replace' ? `${c.kind}:${c.reason}` : c.kind));
        if (kinds.join(',') !== 'firewall-replace:missing') restoreNotes.push(`${n}: restore also planned ${kinds.filter((k) => !k.startsWith('firewall')).join(',')}`);
      }
    };

    // Warm-up (not counted): wireguard-go's first bulk traffic (Go heap, GC pacing), TCP caches.
    const warmup = await measured('warm-up (a)', 'a');

    // a b a c a b a c … a: every b and c run sits between two netwall runs, so load that drifts
    // during the run (this machine is shared) shows up as a difference between the a runs, not as
    // overhead.
    const runs: Record<Mode, number[]> = { a: [], b: [], c: [] };
    /** Each b and c run against the mean of its two neighbouring a runs (a / b, a / c). */
    const pairs: Record<'b' | 'c', number[]> = { b: [], c: [] };
    const rtt: Record<Mode, number[]> = { a: [], b: [], c: [] };
    const verified = new Set<string>([warmup.verified]);
    const retransmits: Record<Mode, number> = { a: 0, b: 0, c: 0 };
    const cpuShares: Record<Mode, NetfilterShare[]> = { a: [], b: [], c: [] };
    const order: Mode[] = [];
    for (let i = 0; i < 2 * CYCLES; i++) order.push('a', i % 2 === 0 ? 'b' : 'c');
    order.push('a');
    for (const [phase, mode] of order.entries()) {
      if (phase > 0) await (mode === 'a' ? restoreTable() : deleteTable(mode === 'c'));
      const { run, verified: v, cpu } = await measured(`${mode}${runs[mode].length + 1}`, mode);
      verified.add(v);
      if (cpu) cpuShares[mode].push(cpu);
      runs[mode].push(run.gbps);
      retransmits[mode] += run.retransmits;
      rtt[mode].push(...(await pingStats(lab, c1.ns, c2.address, PING_COUNT, onCpu('n1'))).rtts);
    }
    const aRuns = runs.a;
    for (const [phase, mode] of order.entries()) {
      if (mode === 'a') continue;
      // a runs sit at the even phases: the one before this run is a[(phase - 1) / 2].
      pairs[mode].push((aRuns[(phase - 1) / 2]! + aRuns[(phase + 1) / 2]!) / 2 / runs[mode][pairs[mode].length]!);
    }

    // ---- report
    const gb = (xs: number[]): string => `${median(xs).toFixed(3)} Gbit/s median (runs ${xs.map((x) => x.toFixed(3)).join(', ')})`;
    const quartiles = (xs: number[]): string => `quartiles ${percentile(xs, 25).toFixed(3)}–${percentile(xs, 75).toFixed(3)}`;
    const ratio = median(pairs.b);
    const overFloor = median(pairs.c);
    const rttText = (xs: number[]): string =>
      `min ${Math.min(...xs).toFixed(3)} / avg ${(xs.reduce((s2, x) => s2 + x, 0) / xs.length).toFixed(3)} / p50 ${percentile(xs, 50).toFixed(3)} / p99 ${percentile(xs, 99).toFixed(3)} ms (n=${xs.length})`;
    const rttOver = (x: number[], y: number[]): string =>
      `p50 ${((percentile(x, 50) - percentile(y, 50)) * 1000).toFixed(0)} µs, min ${((Math.min(...x) - Math.min(...y)) * 1000).toFixed(0)} µs`;
    out(`load average at start ${load.map((x) => x.toFixed(2)).join(' ')} (${cpus} CPUs; shared machine, other jobs may run alongside)`);
    const wgVersion = (await execFileP(wireguardGoBinary ?? 'wireguard-go', ['--version'])).stdout.split('\n')[0]?.trim();
    out(`world: 2 nodes (${wgVersion}, MTU 1420) on a veth+bridge underlay, 1 container each; iperf3 TCP ${SECONDS} s runs (+1 s omitted), ping -c ${PING_COUNT} -i 0.01 after each run`);
    out(
      pin
        ? "CPUs: one per node, in every mode: n1's wireguard-go + the client (iperf3, ping) on CPU 0, n2's wireguard-go + the server on CPU 1"
        : `CPUs: not pinned (${cpus < 2 ? 'one CPU' : '--no-pin'}): both nodes and both containers share every CPU`,
    );
    out(`underlay node→node (veth, no wg, no netwall), context: ${fmtRuns(underlay)}; rtt ${fmtPing(underlayPing)}`);
    out(
      `order: 1 warm-up run (a, ${warmup.run.gbps.toFixed(3)} Gbit/s, not counted), then a b a c … a (${CYCLES} runs each of b and c): netwall table deleted on both nodes before each b and c (the floor table added for c), reconciled back before each a; checked during each run (${[...verified].join(' / ')})`,
    );
    out(`netwall  (a) container→container over wg: ${gb(runs.a)}; ${retransmits.a} retransmits`);
    out(`baseline (b) same, no table at all:       ${gb(runs.b)}; ${retransmits.b} retransmits`);
    out(`floor    (c) same, conntrack floor table: ${gb(runs.c)}; ${retransmits.c} retransmits`);
    out(
      `throughput ratio netwall/baseline: ${ratio.toFixed(3)} (median of ${pairs.b.length} per-pair ratios: each b against the mean of its neighbouring a runs; ${quartiles(pairs.b)})   (target >= 0.95: ${ratio >= 0.95 ? 'met' : 'NOT met'})`,
    );
    out(`throughput ratio netwall/floor:    ${overFloor.toFixed(3)} (median of ${pairs.c.length}, the same way; ${quartiles(pairs.c)}): what netwall's rules cost beyond connection tracking itself`);
    out(`throughput ratio floor/baseline:   ${(ratio / overFloor).toFixed(3)} (the two medians above divided): what connection tracking alone costs here`);
    out(
      `per-pair ratios in run order: a/b ${pairs.b.map((x) => x.toFixed(3)).join(', ')}; a/c ${pairs.c.map((x) => x.toFixed(3)).join(', ')}; ratio of the medians a/b ${(median(runs.a) / median(runs.b)).toFixed(3)}, a/c ${(median(runs.a) / median(runs.c)).toFixed(3)}; drift last a / first a ${(aRuns[aRuns.length - 1]! / aRuns[0]!).toFixed(3)}`,
    );
    if (profile) {
      const m = (mode: Mode, k: keyof NetfilterShare): number => median(cpuShares[mode].map((x) => x[k]));
      const pct = (x: number): string => `${x.toFixed(2)} %`;
      out(
        `receiving node's CPU (n2's, CPU 1; perf cpu-clock, ${PERF_SECONDS} s inside each run, medians; idle netwall ${pct(m('a', 'idle'))} / baseline ${pct(m('b', 'idle'))} / floor ${pct(m('c', 'idle'))} of the samples, the rest in shares of the busy ones): netfilter hooks netwall ${pct(m('a', 'hooks'))} / baseline ${pct(m('b', 'hooks'))} (the underlay bridge's) / floor ${pct(m('c', 'hooks'))}; rule evaluation (nft_do_chain) netwall ${pct(m('a', 'rules'))} / floor ${pct(m('c', 'rules'))}; conntrack (nf_conntrack_in) netwall ${pct(m('a', 'conntrack'))} / floor ${pct(m('c', 'conntrack'))}`,
      );
      out(
        `  so the table costs ${(m('a', 'hooks') - m('b', 'hooks')).toFixed(2)} points of the receiving CPU's busy time (floor: ${(m('c', 'hooks') - m('b', 'hooks')).toFixed(2)}; netwall's rules beyond the floor: ${(m('a', 'hooks') - m('c', 'hooks')).toFixed(2)}); per run, netwall's hooks: ${cpuShares.a.map((x) => x.hooks.toFixed(2)).join(', ')}`,
      );
    }
    out(`wg over veth vs veth alone: ${((median(runs.b) / underlay.median) * 100).toFixed(1)} % of the underlay's throughput`);
    out(`rtt netwall  (a): ${rttText(rtt.a)}`);
    out(`rtt baseline (b): ${rttText(rtt.b)}`);
    out(`rtt floor    (c): ${rttText(rtt.c)}`);
    out(`rtt overhead netwall vs baseline: ${rttOver(rtt.a, rtt.b)}; floor vs baseline: ${rttOver(rtt.c, rtt.b)}`);
    out(`first reconcile (wireguard-go start, keys, peers, routes, table): n1 ${reconcileMs.n1.toFixed(0)} ms, n2 ${reconcileMs.n2.toFixed(0)} ms; table restore after delete (reconcile, per node): median ${median(restoreMs).toFixed(0)} ms (n=${restoreMs.length})`);
    if (wgExits.length > 0 || restoreNotes.length > 0) out(`WARNING: wireguard-go died during the run (${[...wgExits, ...restoreNotes].join('; ')}): later runs used a restarted interface`);
    out(`bench wall time: ${((performance.now() - started) / 1000).toFixed(0)} s   (budget < 180 s)`);
  } finally {
    await cleanup();
  }
  recordBenchmark('data-plane', lines);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err: Error) => {
    console.error(`bench data-plane: ${err.stack ?? err.message}`);
    process.exit(1);
  });
}
