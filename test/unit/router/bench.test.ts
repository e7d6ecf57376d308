/**
 * Measurements for docs/benchmarks.md (logged, not asserted; bounded to a few
 * seconds): memory per idle router session and per idle tunneled connection on
 * each side, and requests/s through one tunnel. Each side runs in its own
 * process: this one is the gateway, children are the router clients and the app.
 * Targets (issue 4): <= 64 KB per idle tunneled connection; 5,000 req/s through
 * one tunnel with 0 errors.
 */
import test, { type ExecutionContext } from 'ava';
import { fork, spawn, type ChildProcess } from 'node:child_process';
import net, { type AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { memory } from './bench-child.js';
import { CLIENT, entry, exposureOf, startGateway, waitFor } from './helpers.js';

const CHILD = fileURLToPath(new URL('./bench-child.ts', import.meta.url));
const kb = (bytes: number) => `${(bytes / 1024).toFixed(1)} KB`;

function child(t: ExecutionContext, mode: 'app' | 'clients' | 'load', ...args: string[]): { proc: ChildProcess; next: () => Promise<Record<string, unknown>> } {
  const proc = fork(CHILD, [mode, ...args], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const queue: Record<string, unknown>[] = [];
  const waiters: ((m: Record<string, unknown>) => void)[] = [];
  proc.on('message', (m: Record<string, unknown>) => (waiters.length ? waiters.shift()!(m) : queue.push(m)));
  t.teardown(() => {
    if (proc.connected) proc.send({ cmd: 'exit' });
    setTimeout(() => proc.kill('SIGKILL'), 2000).unref();
  });
  return { proc, next: () => new Promise((r) => (queue.length ? r(queue.shift()!) : waiters.push(r))) };
}

test.serial('memory per idle router session and per idle tunneled connection', async (t) => {
  const N = 200;
  const entries = Array.from({ length: N }, (_, i) => entry('acme', 'web', `web-${i}`));
  const exp = exposureOf('acme', 'web', entries);
  const app = child(t, 'app');
  const { port: appPort } = (await app.next()) as { port: number };
  const gw = await startGateway(t, 'gw1', [exp], { maxSessionsPerKey: 1 });
  const clients = child(t, 'clients');
  await clients.next(); // ready

  const g0 = memory();
  clients.proc.send({
    cmd: 'start',
    gateway: gw.target,
    target: { host: '127.0.0.1', port: appPort },
    clients: entries.map((e) => ({ credential: e.credential, secretKey: e.keys.secretKey })),
  });
  await clients.next(); // started
  await waitFor(() => gw.server.liveCount('acme', 'web') === N, 20_000, 'sessions');
  const g1 = memory();
  clients.proc.send({ cmd: 'measure' });
  const c1 = (await clients.next()) as { rss: number; js: number };
  t.log(`idle sessions (${N}): gateway ${kb((g1.rss - g0.rss) / N)} RSS, ${kb((g1.js - g0.js) / N)} JS+external per session;`);
  t.log(`                    router client ${kb(c1.rss / N)} RSS, ${kb(c1.js / N)} JS+external per session (process incl. RouterClient objects)`);

  // Idle tunneled connections: M open CONNECT streams, each joined to an app socket, no traffic.
  const M = 1000;
  const streams: Duplex[] = [];
  for (let i = 0; i < M; i += 100) {
    streams.push(...(await Promise.all(Array.from({ length: 100 }, () => gw.server.open(exp, CLIENT)))));
  }
  for (const s of streams) s.on('error', () => {});
  const g2 = memory();
  clients.proc.send({ cmd: 'measure' });
  const c2 = (await clients.next()) as { rss: number; js: number; streams: number };
  t.is(c2.streams, M);
  const gwPer = (g2.rss - g1.rss) / M;
  const clPer = c2.rss / M;
  t.log(`idle tunneled connections (${M} streams over ${N} sessions):`);
  t.log(`  gateway ${kb(gwPer)} RSS, ${kb((g2.js - g1.js) / M)} JS+external; router client ${kb(clPer)} RSS, ${kb(c2.js / M)} JS+external`);
  t.log(`  both tunnel ends together: ${kb(gwPer + clPer)} RSS per idle tunneled connection (target <= 64 KB)`);
  for (const s of streams) s.destroy();
});

test.serial('requests/s through one tunnel (autocannon → mini public front → tunnel → app)', async (t) => {
  const e = entry('acme', 'web', 'web-1');
  const exp = exposureOf('acme', 'web', [e]);
  const app = child(t, 'app');
  const { port: appPort } = (await app.next()) as { port: number };
  const gw = await startGateway(t, 'gw1', [exp]);
  const clients = child(t, 'clients');
  await clients.next();
  clients.proc.send({ cmd: 'start', gateway: gw.target, target: { host: '127.0.0.1', port: appPort }, clients: [{ credential: e.credential, secretKey: e.keys.secretKey }] });
  await clients.next();
  await waitFor(() => gw.server.liveCount('acme', 'web') === 1);

  // Stand-in for the gateway's public side: each accepted connection becomes one stream.
  let openErrors = 0;
  const front = net.createServer({ noDelay: true }, (sock) => {
    sock.on('error', () => {});
    gw.server.open(exp, { address: sock.remoteAddress ?? '', port: sock.remotePort ?? 0 }).then(
      (up) => {
        up.on('error', () => sock.destroy());
        sock.on('close', () => up.destroy());
        sock.pipe(up).pipe(sock);
      },
      (err: Error) => {
        if (openErrors++ < 3) t.log(`open() failed: ${err.message}`);
        sock.destroy();
      },
    );
  });
  await new Promise<void>((r) => front.listen(0, '127.0.0.1', r));
  t.teardown(() => front.close());
  const url = `http://127.0.0.1:${(front.address() as AddressInfo).port}/`;

  const run = (args: string[]): Promise<{ requests: { average: number }; latency: { p50: number; p99: number }; errors: number; non2xx: number; timeouts: number }> =>
    new Promise((resolve, reject) => {
      const bin = fileURLToPath(new URL('../../../node_modules/.bin/autocannon', import.meta.url));
      const p = spawn(bin, ['--json', ...args, url], { stdio: ['ignore', 'pipe', 'ignore'] });
      let out = '';
      p.stdout.on('data', (d: Buffer) => (out += d));
      p.on('close', () => {
        try {
          resolve(JSON.parse(out));
        } catch (err) {
          reject(err as Error);
        }
      });
    });
  const keepAlive = await run(['-c', '32', '-d', '4']);
  t.log(`keep-alive, 32 connections (32 streams), 4 s: ${Math.round(keepAlive.requests.average)} req/s, p50 ${keepAlive.latency.p50} ms, p99 ${keepAlive.latency.p99} ms, errors ${keepAlive.errors + keepAlive.timeouts}, non-2xx ${keepAlive.non2xx}`);
  const fresh = (await child(t, 'load', url, '32', '3').next()) as { rps: number; errors: number; p50: number; p99: number };
  t.log(`new connection (stream) per request, 32 concurrent, 3 s: ${Math.round(fresh.rps)} req/s, p50 ${fresh.p50} ms, p99 ${fresh.p99} ms, errors ${fresh.errors}`);
  const freshDirect = (await child(t, 'load', `http://127.0.0.1:${appPort}/`, '32', '3').next()) as { rps: number };
  t.log(`  same, direct to the app: ${Math.round(freshDirect.rps)} req/s`);
  const direct = await new Promise<number>((resolve, reject) => {
    const bin = fileURLToPath(new URL('../../../node_modules/.bin/autocannon', import.meta.url));
    const p = spawn(bin, ['--json', '-c', '32', '-d', '3', `http://127.0.0.1:${appPort}/`], { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d));
    p.on('close', () => {
      try {
        resolve((JSON.parse(out) as { requests: { average: number } }).requests.average);
      } catch (err) {
        reject(err as Error);
      }
    });
  });
  t.log(`direct to the app (same machine, for scale): ${Math.round(direct)} req/s; open() errors ${openErrors}; gateway ${JSON.stringify({ ...gw.server.stats(), authFailures: undefined })}`);
  t.is(gw.server.liveCount('acme', 'web'), 1);
  t.is(gw.server.stats().sessionsTotal, 1, 'one session throughout');
});
