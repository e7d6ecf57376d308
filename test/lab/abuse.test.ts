/**
 * Lab (issue: a gateway under slowloris and connection floods keeps serving a
 * second exposure): from the internet host, slowloris connections (request
 * heads trickled, never finished) and a connection flood (complete requests,
 * one per connection, as fast as the workers go) against exposure A, while an
 * honest client requests exposure B every 50 ms; then A must recover.
 *
 *   npm run build && npx ava --config ava.lab.config.js test/lab/abuse.test.ts
 *
 * Asserted: B keeps ≥ 99 % success during the attack (p50/p99/max latency
 * reported beside the baseline), the gateway closes the slowloris heads
 * (its header timeout, 10 s by default), the flood met the gateway's limits
 * (counted in its metrics by reason), and afterwards A answers again from the
 * honest address and from an attacker's address, and B still does.
 *
 * Two runs of the same attack:
 *  1. default limits (no --limit flag): per client address 256 connections
 *     and 50 new connections/s (burst 100), 10 s to send a request head, 1000
 *     streams per exposure. Most of the flood is refused with 429;
 *  2. `--limit rateBurst=0` (rate limit off — what an attacker with many
 *     addresses, each under the limit, amounts to): the whole flood reaches
 *     exposure A's entry point, and B still must be served.
 * The attacker uses four source addresses, the honest client a fifth (a
 * per-address limit protects an honest client only from attackers at other
 * addresses; one address shared with an attacker is limited with it).
 *
 * Exposures: A = a.acme.test (tenant acme, tunnel mode: the entry point's
 * router client dials the gateway), B = b.globex.test (tenant globex, mesh
 * mode). Both entry points are busybox httpd in namespaces attached to node1
 * with `netwall-agent attach`.
 *
 * Topology: scripts/lab-world.ts under the prefix nwt<pid>a and a temporary
 * directory (coordinator, node1, gateway1, internet; the other lab hosts'
 * namespaces exist but run nothing). Bounded: 300 slowloris connections and
 * 200 flood workers (at most 20 000 connections) for 12 s, from inside the lab
 * namespaces, to the lab gateway only. Root only; skipped otherwise.
 * Everything is removed at the end.
 */
import test, { type ExecutionContext } from 'ava';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HOSTS, LabWorld, run, tail, waitUntil } from '../../scripts/lab-world.js';
import { labUnavailable } from './helpers/netns.js';
import { gatewayMetrics, publicRequest, routerSessions } from './helpers/gateway.js';
import { tearDownWorld } from './helpers/teardown.js';
import type { AbuseConfig, AbuseResult, Probe } from './helpers/abuse-client.js';

const P = process.pid;
const PREFIX = `nwt${P}a`;
const INTERVAL = 2;
const skip = labUnavailable(['ip', 'nft', 'wg', 'wireguard-go', 'nsenter', 'unshare', 'curl']);
const labTest = skip ? test.skip : test.serial;
if (skip) console.log(`SKIP test/lab/abuse.test.ts: ${skip}`);

const dir = skip ? '' : mkdtempSync(join(tmpdir(), `${PREFIX}-`));
const world = new LabWorld({ prefix: PREFIX, dir, agentInterval: INTERVAL });
const GATEWAY = HOSTS.gateway1.public as string;
const ATTACKERS = ['192.0.2.101', '192.0.2.102', '192.0.2.103', '192.0.2.104'];
const HONEST = '192.0.2.150';
const CLIENT = join(dirname(fileURLToPath(import.meta.url)), 'helpers', 'abuse-client.ts');

const internet = () => world.nsPath('internet');

async function attach(tenant: string, name: string): Promise<{ netns: string; ip: string }> {
  const ns = `${PREFIX}-c-${name}`;
  await run(['ip', 'netns', 'add', ns]);
  const out = await run(
    world.agentArgv('node1', 'attach', ['--tenant', tenant, '--name', name, '--label', 'app=web', '--netns', `/run/netns/${ns}`, '--socket', world.socketOf('node1'), '--json']),
  );
  const res = JSON.parse(out.stdout) as { workload: { address: string } };
  // Its web server: a page naming it.
  const www = join(dir, 'www', name);
  mkdirSync(www, { recursive: true });
  writeFileSync(join(www, 'index.html'), `hello from ${name}\n`);
  world.startProcess(`httpd-${name}`, ['nsenter', `--net=/run/netns/${ns}`, '/bin/busybox', 'httpd', '-f', '-p', '8080', '-h', www]);
  return { netns: `/run/netns/${ns}`, ip: res.workload.address };
}

const get = (host: string, seconds = 2) => publicRequest(world, internet(), { address: GATEWAY, host, seconds });

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? NaN;
}

function summary(probes: Probe[]): { n: number; ok: number; rate: number; p50: number; p99: number; max: number; failures: string[] } {
  const ok = probes.filter((x) => x.ok);
  const ms = ok.map((x) => x.ms).sort((a, b) => a - b);
  const failures = probes.filter((x) => !x.ok).map((x) => `${x.status || x.error} after ${Math.round(x.ms)} ms`);
  return {
    n: probes.length,
    ok: ok.length,
    rate: probes.length ? ok.length / probes.length : 0,
    p50: Math.round(percentile(ms, 50)),
    p99: Math.round(percentile(ms, 99)),
    max: Math.round(ms[ms.length - 1] ?? NaN),
    failures,
  };
}

/** `netwall_gateway_public_rejections_total` by reason, and accepted HTTP connections. */
async function publicCounters(): Promise<{ rejections: Record<string, number>; accepted: number }> {
  const m = await gatewayMetrics(world, 'gateway1');
  const rejections: Record<string, number> = {};
  let accepted = 0;
  for (const [k, v] of m) {
    const r = /^netwall_gateway_public_rejections_total\{reason="([^"]+)"\}$/.exec(k);
    if (r) rejections[r[1] as string] = v;
    if (k === 'netwall_gateway_public_accepted_connections_total{listener="http"}') accepted = v;
  }
  return { rejections, accepted };
}

test.before(async () => {
  if (skip) return;
  for (const f of ['coordinator/main.js', 'node-agent/main.js', 'cli/main.js', 'gateway/main.js', 'node-agent/router-client-main.js']) {
    if (!existsSync(world.dist(f))) throw new Error(`dist/${f} missing: npm run build first`);
  }
  world.saveState();
  await world.createNetwork();
  for (const a of [...ATTACKERS, HONEST]) await run(['ip', '-n', world.ns('internet'), 'addr', 'add', `${a}/32`, 'dev', 'eth-public']);
  await world.startCoordinator();
  for (const t of ['acme', 'globex']) await world.cli(['tenant', 'create', t]);
  await world.enrollNode('node1');
  await world.startAgent('node1');
  await world.startGateway('gateway1');
  await attach('acme', 'a-web');
  await attach('globex', 'b-web');
  const ex = (tenant: string, name: string, args: string[]) => world.cli(['exposure', 'set', '--tenant', tenant, name, '--gateway', 'gateway1', '--protocol', 'http', '--selector', 'app=web', '--port', '8080', ...args]);
  await ex('acme', 'a', ['--hostname', 'a.acme.test', '--mode', 'tunnel']);
  await ex('globex', 'b', ['--hostname', 'b.globex.test', '--mode', 'mesh']);
  try {
    await waitUntil(async () => (await routerSessions(world, 'gateway1'))['acme/a'] === 1, 60_000, 'the router session of acme/a on gateway1', 250);
    for (const host of ['a.acme.test', 'b.globex.test']) {
      await waitUntil(async () => {
        const r = await get(host);
        return r.code === 200 && r.body.includes('hello from');
      }, 30_000, `${host} through gateway1`, 200);
    }
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${['gateway1', 'node1'].map((p) => `--- ${p}:\n${tail(world.logPath(p), 20)}`).join('\n')}`);
  }
});

test.after.always('remove everything', async (t) => {
  if (skip) return;
  for (const p of ['httpd-a-web', 'httpd-b-web']) await world.stopProcess(p);
  await tearDownWorld(t, world);
});

const CONFIG: AbuseConfig = {
  gateway: GATEWAY,
  port: 80,
  hostA: 'a.acme.test',
  expectA: 'hello from a-web',
  hostB: 'b.globex.test',
  expectB: 'hello from b-web',
  attackers: ATTACKERS,
  legit: HONEST,
  baselineMs: 3000,
  attackMs: 12_000,
  probeEveryMs: 50,
  probeTimeoutMs: 3000,
  slowloris: 300,
  floodConcurrency: 200,
  floodMax: 20_000,
  recoveryMs: 20_000,
};

/** Run the abuse client in the internet namespace; log what it saw and the gateway's counters. */
async function attack(t: ExecutionContext, label: string): Promise<{ r: AbuseResult; base: ReturnType<typeof summary>; under: ReturnType<typeof summary>; baseA: ReturnType<typeof summary>; delta: Record<string, number> }> {
  const before = await publicCounters();
  const out = await run(['nsenter', `--net=${internet()}`, process.execPath, '--import', 'tsx', CLIENT, JSON.stringify(CONFIG)], { allowFailure: true, timeoutMs: 120_000 });
  if (out.status !== 0) throw new Error(`abuse client: exit ${out.status}: ${out.stderr.slice(-2000)}`);
  const r = JSON.parse(out.stdout) as AbuseResult;
  const after = await publicCounters();
  const delta: Record<string, number> = {};
  for (const [k, v] of Object.entries(after.rejections)) if (v - (before.rejections[k] ?? 0) > 0) delta[k] = v - (before.rejections[k] ?? 0);
  const base = summary(r.baseline.b);
  const under = summary(r.attack.b);
  const baseA = summary(r.baseline.a);
  const slowClosed = r.slowloris.closedAfterMs;
  t.log(`[${label}] baseline (3 s): B ${base.ok}/${base.n} ok, p50 ${base.p50} ms, p99 ${base.p99} ms, max ${base.max} ms; A ${baseA.ok}/${baseA.n} ok`);
  t.log(
    `[${label}] attack (12 s): B ${under.ok}/${under.n} ok (${(under.rate * 100).toFixed(1)} %), p50 ${under.p50} ms, p99 ${under.p99} ms, max ${under.max} ms` +
      `${under.failures.length ? `; failures: ${under.failures.slice(0, 10).join(', ')}` : ''}`,
  );
  t.log(
    `[${label}] slowloris: ${r.slowloris.opened}/${r.slowloris.connections} opened, ${r.slowloris.closedByGatewayDuringAttack} closed by the gateway during the attack ` +
      `(after ${slowClosed[0] ?? '-'}…${slowClosed[slowClosed.length - 1] ?? '-'} ms; answers ${JSON.stringify(r.slowloris.answers)})`,
  );
  t.log(
    `[${label}] flood: ${r.flood.workers} workers, ${r.flood.connections} connections in ${r.flood.attackMs} ms` +
      `${r.flood.exhaustedAtMs !== null ? ` (cap reached at ${r.flood.exhaustedAtMs} ms)` : ''}, statuses ${JSON.stringify(r.flood.statuses)}, errors ${JSON.stringify(r.flood.errors)}`,
  );
  t.log(`[${label}] gateway rejections (by reason): ${JSON.stringify(delta)}; accepted http connections +${after.accepted - before.accepted}`);
  t.log(`[${label}] recovery of A: honest address after ${r.recovery.honest.ms ?? 'never'} ms (${r.recovery.honest.tries} tries), attacker address after ${r.recovery.attacker.ms ?? 'never'} ms`);
  return { r, base, under, baseA, delta };
}

/** What holds whatever the limits: B served during the attack, slowloris heads closed, A back after. */
function assertServedAndRecovered(t: ExecutionContext, x: Awaited<ReturnType<typeof attack>>): void {
  const { r, base, under, baseA, delta } = x;
  t.is(base.rate, 1, 'baseline: B always answers');
  t.is(baseA.rate, 1, 'baseline: A always answers');
  // ~240 are scheduled; the prober shares its process and the 2 cores with the attack, so fewer may start.
  // 100 is what "≥ 99 %" needs to mean at most one failure.
  t.true(under.n >= 100, `enough probes of B during the attack (${under.n})`);
  t.true(under.rate >= 0.99, `B during the attack: ${(under.rate * 100).toFixed(1)} % success (≥ 99 %)`);
  t.true(r.slowloris.opened >= CONFIG.slowloris * 0.9, 'the slowloris connections were accepted (they are what the header timeout must close)');
  t.true(r.slowloris.closedByGatewayDuringAttack >= r.slowloris.opened * 0.9, 'the gateway closed the slowloris heads within the attack (header timeout)');
  t.true((delta.header_timeout ?? 0) >= r.slowloris.closedByGatewayDuringAttack * 0.9, 'slowloris closes counted as header_timeout');
  t.true(r.flood.connections >= 1000, `the flood made ${r.flood.connections} connections`);
  t.not(r.recovery.honest.ms, null, 'A answers the honest address after the attack');
  t.not(r.recovery.attacker.ms, null, 'A answers an attacker address after the attack');
  t.true((r.recovery.honest.ms ?? Infinity) <= 5000, `A recovered for the honest address within 5 s (${r.recovery.honest.ms} ms)`);
  t.deepEqual(r.after.a, Array(10).fill(true), 'A answers again, 10 of 10');
  t.deepEqual(r.after.b, Array(10).fill(true), 'B still answers, 10 of 10');
  t.truthy(world.pidOf('gateway1'), 'the gateway process survived');
}

labTest('default limits: slowloris + connection flood on exposure A; exposure B keeps ≥ 99 % success; A recovers after', async (t) => {
  const x = await attack(t, 'default limits');
  assertServedAndRecovered(t, x);
  t.true((x.delta.rate_limited ?? 0) + (x.delta.client_connections ?? 0) > 0, 'the flood met the per-client limits (counted)');
});

labTest('rate limit off (a flood from many addresses, each under the limit): B still ≥ 99 %; A recovers after', async (t) => {
  // The per-address rate limit is what stopped most of the flood above; an attacker with many
  // addresses stays under it. Turn it off (--limit rateBurst=0) so every flood request reaches
  // exposure A's entry point: what protects B then is the gateway's per-exposure stream cap and
  // its event loop staying responsive.
  await world.stopProcess('gateway1');
  world.startProcess('gateway1', [...world.enter('gateway1'), process.execPath, world.dist('gateway/main.js'), 'run', '--state-dir', world.stateDirOf('gateway1'), '--limit', 'rateBurst=0']);
  try {
    await waitUntil(async () => (await routerSessions(world, 'gateway1'))['acme/a'] === 1, 60_000, 'the router session of acme/a back on the restarted gateway1', 250);
    for (const host of ['a.acme.test', 'b.globex.test']) await waitUntil(async () => (await get(host)).code === 200, 30_000, `${host} through the restarted gateway1`, 200);
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${tail(world.logPath('gateway1'), 20)}`);
  }
  const x = await attack(t, 'rate limit off');
  assertServedAndRecovered(t, x);
  t.is(x.delta.rate_limited ?? 0, 0, 'nothing was rate-limited');
  t.true((x.r.flood.statuses['200'] ?? 0) >= 1000, `most of the flood reached exposure A (${x.r.flood.statuses['200'] ?? 0} answered 200)`);
});
