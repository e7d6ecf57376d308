/**
 * scripts/bench rules — the firewall at scale: one node's document with 10,000
 * workloads and 1,000 policies, rendered by the real `renderFirewall` and
 * applied by the real `applyFirewallChange` (`nft -f -`, one atomic replace)
 * inside a network namespace `nwb<pid>-n1` that is removed on exit. Root only.
 *
 * World (built here, not by the coordinator, so the shape is fixed):
 * 10 tenants x 1,000 workloads; this node hosts 100 of each tenant (1,000
 * local workloads → veth_addr), the other 9,000 sit on 9 other nodes and
 * appear only as set elements. Labels app=app0..19 x env=env0..4 (10
 * workloads per combination per tenant). 100 policies per tenant, each with
 * its own (from, to) selector pair ({app} → {app, env}) and its own ports
 * (tcp, some with two ports, every tenth udp); groups are named like the
 * coordinator names them (s_<sha>). Every policy has local members at both
 * ends, so this node enforces all 1,000 (the worst case).
 *
 * Figures (all through the agent's real path: `Reconciler.reconcile()` with
 * wireguard-go for the 10 tenants' interfaces, the firewall memory file in a
 * state directory, every command through nsenter into the namespace):
 *  (a) render (pure, median), and the agent's render (its tenant cache, one
 *      tenant changed, the document parsed anew); a full replace of the large
 *      table (a policy's port changes: new structure) as one reconcile tick,
 *      split into nft time
 *      (list + nft -f + list), other commands (sysctl, ip, wg observation) and
 *      JS (render, plan, memory file); the idle tick (nothing changed: the
 *      drift check lists the table).
 *  (b) one workload added/removed on this node as one reconcile tick, each
 *      document parsed anew as the agent gets it: the element fast path (one
 *      `nft -f` of create/delete element lines, no listing) and the same change on a tick where the drift check is due
 *      (the table is listed first; clock advanced past
 *      FAST_PATH_MAX_UNVERIFIED_MS).
 *  (c) iperf3 TCP between two containers on this node (same-node routed veths,
 *      through the forward chain) with the large table vs a small one (the
 *      same two workloads and one policy) vs no table at all, interleaved in
 *      one run: rounds of (large, small, none) in rotating order, medians and
 *      per-round ratios. Veth carries GSO-sized packets (up to 64 KB), so
 *      large/none is what the wall costs where per-packet work is paid once
 *      per aggregate, as with a wireguard-go that has TUN offloads.
 */
import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { containerInterfaceName } from '../src/node-agent/names.js';
import { NODE_TABLE, nodeFirewall, renderFirewall } from '../src/node-agent/nftables.js';
import { replaceTransaction, type RenderedFirewall } from '../src/shared/dataplane/nft-table.js';
import { FAST_PATH_MAX_UNVERIFIED_MS, Reconciler, type ReconcileResult } from '../src/shared/dataplane/reconcile.js';
import { ensureTenantKey } from '../src/shared/dataplane/wireguard.js';
import type { AllowRule, DesiredState, LocalWorkload, PeerState, TenantState } from '../src/shared/desired.js';
import { selectorKey, type Labels } from '../src/shared/names.js';
import type { RunOptions, RunResult, Runner } from '../src/shared/runner.js';
import { NetnsLab, labUnavailable } from '../test/lab/helpers/netns.js';
import { cleanupOnSignals, deadline, iperf, median, percentile, pingStats } from './bench-data-plane.js';
import { recordBenchmark } from './bench-record.js';

const TENANTS = 10;
const NODES = 10; // this node (n0) + 9 others
const PER_TENANT = 1000;
const LOCAL_PER_TENANT = 100;
const POLICIES_PER_TENANT = 100;
const APPS = 20;
const ENVS = 5;
const ROUNDS = 6;
const SECONDS = 4;
const IPERF_PORT = 5201;
const SELF = 'n0';

const IPERF_CLIENT: LocalWorkload = { name: 'iperf-client', address: '10.1.1.250', labels: { app: 'iperf-client' } };
const IPERF_SERVER: LocalWorkload = { name: 'iperf-server', address: '10.1.1.251', labels: { app: 'iperf-server' } };
const IPERF_RULES: Policy['rules'] = [
  { protocol: 'tcp', ports: [{ from: IPERF_PORT, to: IPERF_PORT }] },
  { protocol: 'icmp', ports: [] },
];
/** The one-workload change of (b): tenant3, joins s(app=app3) and s(app=app3,env=env1). */
const NEW_WORKLOAD: LocalWorkload = { name: 'new-w', address: '10.4.1.200', labels: { app: 'app3', env: 'env1' } };

/** A document as the agent holds it: parsed anew from the coordinator's answer, sharing nothing with the last one. */
const fresh = (doc: DesiredState): DesiredState => JSON.parse(JSON.stringify(doc)) as DesiredState;
const groupId = (selector: Labels): string => `s_${createHash('sha256').update(selectorKey(selector)).digest('hex').slice(0, 12)}`;
const fakeKey = (i: number): string => Buffer.alloc(32, i % 251).toString('base64');

interface Workload extends LocalWorkload {
  node: string;
}

interface Policy {
  name: string;
  from: Labels;
  to: Labels;
  rules: Omit<AllowRule, 'origin' | 'from' | 'to'>[];
}

const matches = (labels: Labels, selector: Labels): boolean => Object.entries(selector).every(([k, v]) => labels[k] === v);

export function tenantWorld(t: number): { workloads: Workload[]; policies: Policy[] } {
  const workloads: Workload[] = [];
  for (let k = 0; k < PER_TENANT; k++) {
    const n = Math.floor(k / LOCAL_PER_TENANT); // 0 = this node
    workloads.push({
      name: `t${t}-w${k}`,
      node: `n${n}`,
      address: `10.${t + 1}.${n + 1}.${10 + (k % LOCAL_PER_TENANT)}`,
      labels: { app: `app${k % APPS}`, env: `env${Math.floor(k / APPS) % ENVS}` },
    });
  }
  const policies: Policy[] = [];
  for (let i = 0; i < POLICIES_PER_TENANT; i++) {
    const band = Math.floor(i / APPS);
    const port = 1000 + t * 1000 + i;
    const protocol = i % 10 === 9 ? 'udp' : 'tcp';
    const ports = i % 4 === 3 ? [{ from: port, to: port }, { from: port + 20000, to: port + 20010 }] : [{ from: port, to: port }];
    policies.push({
      name: `t${t}-p${i}`,
      from: { app: `app${i % APPS}` },
      to: { app: `app${(i + 1 + band) % APPS}`, env: `env${band % ENVS}` },
      rules: [{ protocol, ports }],
    });
  }
  if (t === 0) {
    // The iperf pair replaces two generated local workloads and the last policy (the last rule of the chain).
    workloads.splice(LOCAL_PER_TENANT - 2, 2, { ...IPERF_CLIENT, node: SELF }, { ...IPERF_SERVER, node: SELF });
    policies.splice(POLICIES_PER_TENANT - 1, 1, { name: 'iperf', from: IPERF_CLIENT.labels, to: IPERF_SERVER.labels, rules: IPERF_RULES });
  }
  return { workloads, policies };
}

/** This node's TenantState, cut down the way the coordinator does: rules with a local member at either end. */
function tenantState(t: number, workloads: readonly Workload[], policies: readonly Policy[]): TenantState {
  const tenant = `tenant${t}`;
  const local = workloads.filter((w) => w.node === SELF);
  const groups: Record<string, string[]> = {};
  const rules: AllowRule[] = [];
  for (const p of policies) {
    const from = workloads.filter((w) => matches(w.labels, p.from));
    const to = workloads.filter((w) => matches(w.labels, p.to));
    if (!from.some((w) => w.node === SELF) && !to.some((w) => w.node === SELF)) continue;
    const [gf, gt] = [groupId(p.from), groupId(p.to)];
    groups[gf] = from.map((w) => `${w.address}/32`).sort();
    groups[gt] = to.map((w) => `${w.address}/32`).sort();
    for (const r of p.rules) rules.push({ origin: p.name, from: gf, to: gt, protocol: r.protocol, ports: r.ports });
  }
  const peers: PeerState[] = Array.from({ length: NODES }, (_, n) => ({
    host: `n${n}`,
    kind: 'node',
    publicKey: fakeKey(n * 16 + t),
    endpoint: `192.0.2.${n + 1}:${51820 + t}`,
    allowedIps: [`10.${t + 1}.${n + 1}.1/32`, `10.${t + 1}.${n + 1}.0/24`],
    meshAddress: `10.${t + 1}.${n + 1}.1`,
  }));
  return {
    tenant,
    iface: `nw-${tenant}`,
    subnet: `10.${t + 1}.0.0/16`,
    slice: `10.${t + 1}.1.0/24`,
    address: `10.${t + 1}.1.1`,
    listenPort: 51820 + t,
    publicKey: fakeKey(t),
    peers,
    workloads: local.map(({ name, address, labels }) => ({ name, address, labels })),
    firewall: { groups, rules },
    entryPoints: [],
    egress: { gateway: null, allow: [] },
  };
}

export interface World {
  tenants: { workloads: Workload[]; policies: Policy[] }[];
}

export function docOf(world: World, version: number, extra: LocalWorkload | null = null): DesiredState {
  const tenants = world.tenants.map((w, t) => {
    const workloads = extra && extra.address.startsWith(`10.${t + 1}.`) ? [...w.workloads, { ...extra, node: SELF }] : w.workloads;
    return tenantState(t, workloads, w.policies);
  });
  return { schema: 1, kind: 'node', host: SELF, version, settings: { mtu: 1420, statusIntervalSeconds: 30, keepaliveSeconds: null }, tenants, exposures: [], networks: tenants.map((t) => t.tenant) };
}

/** The small table of (c): tenant0 with only the iperf pair and its policy. */
function smallDoc(version: number): DesiredState {
  const workloads: Workload[] = [
    { ...IPERF_CLIENT, node: SELF },
    { ...IPERF_SERVER, node: SELF },
  ];
  const policy: Policy = { name: 'iperf', from: IPERF_CLIENT.labels, to: IPERF_SERVER.labels, rules: IPERF_RULES };
  return { schema: 1, kind: 'node', host: SELF, version, settings: { mtu: 1420, statusIntervalSeconds: 30, keepaliveSeconds: null }, tenants: [tenantState(0, workloads, [policy])], exposures: [], networks: ['tenant0'] };
}

/** A document whose structure differs from `docOf(world, v)`: one policy of tenant5 allows another port. */
function structuralDoc(world: World, version: number): DesiredState {
  const doc = docOf(world, version);
  const rule = doc.tenants[5]!.firewall.rules[0]!;
  rule.ports = [{ from: 65000, to: 65000 }];
  return doc;
}

/** Times every command by what it runs: nft, or anything else (sysctl, ip, wg). */
class TimingRunner implements Runner {
  nftMs = 0;
  otherMs = 0;
  readonly nftCalls: string[] = [];
  constructor(private readonly inner: Runner) {}
  async run(argv: readonly string[], options?: RunOptions): Promise<RunResult> {
    const t0 = performance.now();
    try {
      return await this.inner.run(argv, options);
    } finally {
      const dt = performance.now() - t0;
      if (argv[0] === 'nft') {
        this.nftMs += dt;
        this.nftCalls.push(argv.slice(1).join(' '));
      } else this.otherMs += dt;
    }
  }
  reset(): void {
    this.nftMs = 0;
    this.otherMs = 0;
    this.nftCalls.length = 0;
  }
}

// ---------------------------------------------------------------- measuring

async function timed<T>(fn: () => Promise<T> | T): Promise<{ ms: number; value: T }> {
  const t0 = performance.now();
  const value = await fn();
  return { ms: performance.now() - t0, value };
}

async function tableStats(runner: Runner): Promise<{ rules: number; sets: number; elements: number; chains: number }> {
  const res = await runner.run(['nft', '-j', 'list', 'table', 'inet', 'netwall']);
  const doc = JSON.parse(res.stdout) as { nftables: { rule?: unknown; set?: { elem?: unknown[] }; map?: { elem?: unknown[] }; chain?: unknown }[] };
  let rules = 0;
  let sets = 0;
  let elements = 0;
  let chains = 0;
  for (const o of doc.nftables) {
    if (o.rule) rules++;
    if (o.chain) chains++;
    const s = o.set ?? o.map;
    if (s) {
      sets++;
      elements += s.elem?.length ?? 0;
    }
  }
  return { rules, sets, elements, chains };
}

const ms = (x: number): string => `${x.toFixed(1)} ms`;
const stats = (xs: number[]): string => `median ${ms(median(xs))} (min ${ms(Math.min(...xs))}, max ${ms(Math.max(...xs))}, n=${xs.length})`;

async function main(): Promise<void> {
  const unavailable = labUnavailable(['ip', 'nft', 'nsenter', 'sysctl', 'ping', 'iperf3', 'ss']);
  if (unavailable) {
    console.error(`bench rules: ${unavailable} (iperf3: apt-get install -y iperf3)`);
    process.exit(2);
  }
  const started = performance.now();
  const lab = new NetnsLab(`nwb${process.pid}`);
  let cleaned = false;
  const reconcilers: Reconciler[] = [];
  const cleanup = async (): Promise<void> => {
    if (cleaned) return;
    cleaned = true;
    for (const r of reconcilers) await r.stopUserspace().catch(() => undefined);
    await lab.cleanup();
    const left = await lab.leftovers();
    if (left.length > 0) console.error(`bench rules: namespaces left behind: ${left.join(' ')}`);
  };
  cleanupOnSignals(cleanup);
  deadline(300, cleanup);

  const lines: string[] = [];
  const out = (s: string): void => {
    console.log(s);
    lines.push(s);
  };
  try {
    // ---- the documents (pure)
    const world: World = { tenants: Array.from({ length: TENANTS }, (_, t) => tenantWorld(t)) };
    const big = docOf(world, 1);
    const changed = docOf(world, 2, NEW_WORKLOAD);
    const small = smallDoc(1);
    const workloads = world.tenants.reduce((a, t) => a + t.workloads.length, 0);
    const policies = world.tenants.reduce((a, t) => a + t.policies.length, 0);
    const localWorkloads = big.tenants.reduce((a, t) => a + t.workloads.length, 0);
    const enforced = big.tenants.reduce((a, t) => a + t.firewall.rules.length, 0);
    const groups = big.tenants.reduce((a, t) => a + Object.keys(t.firewall.groups).length, 0);
    const groupElements = big.tenants.reduce((a, t) => a + Object.values(t.firewall.groups).reduce((x, g) => x + g.length, 0), 0);
    out(`load average at start ${loadavg().map((x) => x.toFixed(2)).join(' ')} (${availableParallelism()} CPUs; shared machine, other jobs may run alongside)`);
    out(`world: ${TENANTS} tenants, ${workloads} workloads (${localWorkloads} on this node), ${policies} policies (${enforced} allow rules enforced here), ${groups} address groups with ${groupElements} members`);

    // ---- (a) render, pure: what every tick pays (structure hash + element sets), and the full text (a replace only)
    for (let i = 0; i < 3; i++) void renderFirewall(big).text;
    const renderTimes: number[] = [];
    const textTimes: number[] = [];
    let rendered: RenderedFirewall = renderFirewall(big);
    for (let i = 0; i < 9; i++) {
      (globalThis as { gc?: () => void }).gc?.();
      const r = await timed(() => renderFirewall(big));
      renderTimes.push(r.ms);
      rendered = r.value;
      textTimes.push((await timed(() => rendered.text)).ms);
    }
    out(`(a) render (pure), every tick: ${stats(renderTimes)}; + full text for a replace: ${stats(textTimes)}; ${(rendered.text.length / 1024).toFixed(0)} KiB, ${rendered.text.split('\n').length} lines`);
    // The agent's renderer keeps the last render's tenants: a change to one tenant renders that one again.
    const agentRender = nodeFirewall().render;
    agentRender(fresh(big));
    const cachedTimes: number[] = [];
    for (let i = 0; i < 10; i++) {
      const doc = fresh(i % 2 ? big : changed);
      (globalThis as { gc?: () => void }).gc?.();
      cachedTimes.push((await timed(() => agentRender(doc))).ms);
    }
    out(`    the agent's render (tenant cache; one tenant changed, document parsed anew): ${stats(cachedTimes)}`);

    // ---- the node: network + mount namespace (wireguard-go sockets stay private), the agent's Reconciler
    const host = await lab.host('n1');
    const ns = host.ns;
    const runner = new TimingRunner(host.runner);
    let clockOffset = 0;
    const logLines: string[] = [];
    const memoryFile = join(host.stateDir, 'firewall.json');
    const reconciler = new Reconciler({
      firewall: nodeFirewall(),
      runner,
      spawner: host.spawner,
      log: (l) => logLines.push(l),
      keyFileFor: (tenant) => ensureTenantKey(host.stateDir, tenant).privateKeyFile,
      firewallMemoryFile: memoryFile,
      now: () => Date.now() + clockOffset,
    });
    reconcilers.push(reconciler);
    const c1 = await lab.container(ns, 'tenant0', IPERF_CLIENT.name, IPERF_CLIENT.address);
    const c2 = await lab.container(ns, 'tenant0', IPERF_SERVER.name, IPERF_SERVER.address);
    lab.background(['ip', 'netns', 'exec', c2.ns, 'iperf3', '-s', '-p', String(IPERF_PORT)]);
    await lab.listening(c2.ns, 'tcp', IPERF_PORT);

    const floor: number[] = [];
    for (let i = 0; i < 7; i++) floor.push((await timed(() => host.runner.run(['nft', 'list', 'tables']))).ms);
    out(`    process floor (nsenter + nft list tables, empty): ${stats(floor)}`);

    interface Tick {
      total: number;
      /** The firewall's share (render, listing, plan, apply, memory file), as reconcile() reports it. */
      fw: number;
      nft: number;
      other: number;
      js: number;
      kinds: string;
      nftCalls: string;
    }
    /** One agent tick: Reconciler.reconcile(doc), split into nft, other commands and JS (render, plan, memory file). */
    const tick = async (doc: DesiredState): Promise<Tick> => {
      runner.reset();
      const r = await timed(() => reconciler.reconcile(doc));
      const res: ReconcileResult = r.value;
      if (res.errors.length > 0) throw new Error(`reconcile: ${res.errors.join('; ')}`);
      const kinds = res.changes.map((c) => (c.kind.startsWith('firewall') ? `${c.kind}:${(c as { reason: string }).reason}` : c.kind));
      return { total: r.ms, fw: res.firewallMs, nft: runner.nftMs, other: runner.otherMs, js: r.ms - runner.nftMs - runner.otherMs, kinds: kinds.join(',') || 'nothing', nftCalls: runner.nftCalls.join(' + ') };
    };
    const split = (ts: Tick[]): string =>
      `firewall ${ms(median(ts.map((x) => x.fw)))} (min ${ms(Math.min(...ts.map((x) => x.fw)))}); by kind: nft ${ms(median(ts.map((x) => x.nft)))}, other commands ${ms(median(ts.map((x) => x.other)))}, JS ${ms(median(ts.map((x) => x.js)))}`;

    const setup = await tick(small);
    const smallStats = await tableStats(host.runner);
    const first = await tick(big);
    const bigStats = await tableStats(host.runner);
    out(`    setup: first reconcile (small document, 1 tenant: wireguard-go, peers, routes, table) ${ms(setup.total)}; small → large document (9 more interfaces, ~180 routes, the large table) ${ms(first.total)}, of which nft ${ms(first.nft)}`);

    // (a) full replace: the structure changes (one policy's port), alternately.
    const replaces: Tick[] = [];
    for (let i = 0; i < 6; i++) {
      const t = await tick(i % 2 ? big : structuralDoc(world, 3));
      if (t.kinds !== 'firewall-replace:changed') throw new Error(`full replace: planned ${t.kinds}`);
      replaces.push(t);
    }
    out(`(a) full atomic replace of the large table, its firewall part in one agent tick: ${stats(replaces.map((x) => x.fw))}   (target <= 1000 ms)`);
    out(`    the whole tick (reconcile()): ${stats(replaces.map((x) => x.total))}`);
    out(`    of which ${split(replaces)}; nft calls: ${replaces[0]!.nftCalls}`);
    const idle: Tick[] = [];
    for (let i = 0; i < 5; i++) idle.push(await tick(big));
    if (idle.some((x) => x.kinds !== 'nothing')) throw new Error(`idle: planned ${idle.map((x) => x.kinds).join(' ')}`);
    out(`(a) idle tick, nothing changed (reconcile(): the drift check lists the table): ${stats(idle.map((x) => x.total))}; of which ${split(idle)}`);
    out(`    nft objects, large table: ${bigStats.rules} rules in ${bigStats.chains} chains, ${bigStats.sets} sets/maps with ${bigStats.elements} elements; small table: ${smallStats.rules} rules, ${smallStats.chains} chains, ${smallStats.elements} elements`);
    out(`    rules = ${bigStats.rules - smallStats.rules} more for ${enforced - 1} more allow rules: O(policies) (each allow rule once, in its tenant's mesh chain; a port range is a rule of its own), no rule per workload`);

    // ---- (b) one workload added/removed on this node
    const fast: Tick[] = [];
    const vethElem = `"${containerInterfaceName('tenant3', NEW_WORKLOAD.name)}" . ${NEW_WORKLOAD.address}`;
    for (let i = 0; i < 10; i++) {
      const t = await tick(fresh(i % 2 ? big : changed));
      if (t.kinds !== 'firewall-elements:changed' || t.nftCalls !== '-f -') throw new Error(`one workload: planned ${t.kinds}, nft ${t.nftCalls}`);
      fast.push(t);
      const present = (await host.runner.run(['nft', 'get', 'element', 'inet', 'netwall', 'veth_addr', `{ ${vethElem} }`], { allowFailure: true })).exitCode === 0;
      if (present !== (i % 2 === 0)) throw new Error(`one workload ${i}: veth_addr element ${present ? 'still there' : 'missing'}`);
    }
    const deltaLog = logLines.filter((l) => l.includes(' element ')).slice(-3);
    out(`(b) one workload added/removed, element fast path, its firewall part in one agent tick: ${stats(fast.map((x) => x.fw))}   (target <= 50 ms)`);
    out(`    the whole tick (reconcile()): ${stats(fast.map((x) => x.total))}; ${split(fast)}; memory file ${(statSync(memoryFile).size / 1024).toFixed(0)} KiB`);
    out(`    logged: ${deltaLog.join(' | ')}`);
    const due: Tick[] = [];
    for (let i = 0; i < 4; i++) {
      clockOffset += FAST_PATH_MAX_UNVERIFIED_MS + 1000;
      const t = await tick(fresh(i % 2 ? big : changed));
      if (t.kinds !== 'firewall-elements:changed') throw new Error(`one workload, check due: planned ${t.kinds}`);
      due.push(t);
    }
    out(`(b) the same change on a tick whose drift check is due (list, then the delta): ${stats(due.map((x) => x.total))}; of which ${split(due)}`);
    const nonFirewall = median(idle.map((x) => x.other));
    out(`    (every reconcile tick also observes sysctl, links, addresses, 10 x wg show, routes and rules: ${ms(nonFirewall)} of "other commands" here, and derives the 10 tenants' public keys in JS: not firewall work)`);

    // ---- (c) throughput through the forward chain: large table, small table, no table, interleaved
    // Rounds rotate and reverse the order so load that drifts during the run hits every arm alike.
    type Arm = 'large' | 'small' | 'none';
    const ARMS: Arm[] = ['large', 'small', 'none'];
    const texts = { large: renderFirewall(big).text, small: renderFirewall(small).text };
    const nftRunner = host.runner;
    const runsOf: Record<Arm, number[]> = { large: [], small: [], none: [] };
    const rttsOf: Record<Arm, number[]> = { large: [], small: [], none: [] };
    const switchMs: Record<Arm, number[]> = { large: [], small: [], none: [] };
    const pairs: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const rotated = [...ARMS.slice(round % 3), ...ARMS.slice(0, round % 3)];
      const order = round % 2 ? rotated.reverse() : rotated;
      const got: Partial<Record<Arm, number>> = {};
      for (const which of order) {
        const load = which === 'none' ? `table ${NODE_TABLE.family} ${NODE_TABLE.name} {}\ndelete table ${NODE_TABLE.family} ${NODE_TABLE.name}\n` : replaceTransaction(texts[which], NODE_TABLE);
        switchMs[which].push((await timed(() => nftRunner.run(['nft', '-f', '-'], { input: load }))).ms);
        if (round === 0) await lab.exec(c1.ns, ['ping', '-c', '3', '-i', '0.2', '-W', '1', c2.address], { allowFailure: true });
        const r = await iperf(lab, c1.ns, c2.address, SECONDS);
        runsOf[which].push(r.gbps);
        got[which] = r.gbps;
        rttsOf[which].push(...(await pingStats(lab, c1.ns, c2.address, 100)).rtts);
      }
      pairs.push(got.large! / got.small!);
    }
    await nftRunner.run(['nft', '-f', '-'], { input: replaceTransaction(texts.large, NODE_TABLE) });
    const blocked = await lab.reach(c1.ns, 'tcp', c2.address, 22, { seconds: 1 });
    if (blocked) throw new Error('sanity: client → server tcp 22 is open with the large table loaded');
    const rtt = (xs: number[]): string => `p50 ${percentile(xs, 50).toFixed(3)} / avg ${(xs.reduce((a, b) => a + b, 0) / xs.length).toFixed(3)} / p99 ${percentile(xs, 99).toFixed(3)} ms (n=${xs.length})`;
    const gb = (xs: number[]): string => `${median(xs).toFixed(2)} Gbit/s median (min ${Math.min(...xs).toFixed(2)}, max ${Math.max(...xs).toFixed(2)}, n=${xs.length})`;
    out(`(c) iperf3 TCP container→container on this node, ${ROUNDS} rounds x (large, small, no table) x ${SECONDS} s (+1 s omitted), order rotating; the allowing rule is the last of its tenant's 100`);
    out(`    large table: ${gb(runsOf.large)}; rtt ${rtt(rttsOf.large)}; switch to it (nft -f) ${ms(median(switchMs.large))}`);
    out(`    small table: ${gb(runsOf.small)}; rtt ${rtt(rttsOf.small)}; switch to it (nft -f) ${ms(median(switchMs.small))}`);
    out(`    no table (no netfilter at all on this path): ${gb(runsOf.none)}; rtt ${rtt(rttsOf.none)}`);
    out(`    throughput ratio large/small: ${(median(runsOf.large) / median(runsOf.small)).toFixed(3)} (medians)   (target >= 0.95); per-round ratios ${pairs.map((x) => x.toFixed(2)).join(', ')} (median ${median(pairs).toFixed(3)})`);
    out(`    the whole wall on a path with GSO-sized packets (veth, no WireGuard): large/none ${(median(runsOf.large) / median(runsOf.none)).toFixed(3)}, small/none ${(median(runsOf.small) / median(runsOf.none)).toFixed(3)} (medians)`);
    out(`    rtt p50 large - small: ${((percentile(rttsOf.large, 50) - percentile(rttsOf.small, 50)) * 1000).toFixed(0)} µs`);
    out(`bench wall time: ${((performance.now() - started) / 1000).toFixed(0)} s`);
  } finally {
    await cleanup();
  }
  recordBenchmark('rules', lines);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err: Error) => {
    console.error(`bench rules: ${err.stack ?? err.message}`);
    process.exit(1);
  });
}
