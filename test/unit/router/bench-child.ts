/**
 * Child process for bench.test.ts (not a test itself): `app` runs an HTTP app;
 * `clients` runs router clients and reports its own memory, so each side of
 * the tunnel is measured in its own process.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { RouterClient, type GatewayTarget } from '../../../src/node-agent/router-client.js';
import type { RouterCredential } from '../../../src/shared/desired.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

export function memory(): { rss: number; js: number } {
  gc();
  gc();
  const m = process.memoryUsage();
  return { rss: m.rss, js: m.heapUsed + m.external + m.arrayBuffers };
}

type Msg =
  | { cmd: 'start'; gateway: GatewayTarget; target: { host: string; port: number }; clients: { credential: RouterCredential; secretKey: string }[] }
  | { cmd: 'measure' }
  | { cmd: 'stats' }
  | { cmd: 'exit' };

const send = (m: unknown) => process.send!(m);

if (process.argv[2] === 'load') {
  // A new TCP connection per request (autocannon's Connection: close mode stalls on its own reconnects).
  const [, , , url, concurrency, seconds] = process.argv;
  const end = Date.now() + Number(seconds) * 1000;
  let ok = 0;
  let errors = 0;
  const lat: number[] = [];
  const one = () =>
    new Promise<void>((resolve) => {
      const t0 = performance.now();
      http
        .get(url!, { agent: false }, (res) => {
          res.resume();
          res.on('end', () => {
            if (res.statusCode === 200) ok++;
            else errors++;
            lat.push(performance.now() - t0);
            resolve();
          });
        })
        .on('error', () => {
          errors++;
          resolve();
        });
    });
  const worker = async () => {
    while (Date.now() < end) await one();
  };
  void Promise.all(Array.from({ length: Number(concurrency) }, worker)).then(() => {
    lat.sort((a, b) => a - b);
    const q = (p: number) => Number((lat[Math.floor(p * (lat.length - 1))] ?? 0).toFixed(2));
    send({ rps: ok / Number(seconds), ok, errors, p50: q(0.5), p99: q(0.99) });
    process.exit(0);
  });
} else if (process.argv[2] === 'app') {
  const body = 'hello from the app\n';
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
    res.end(body);
  });
  server.keepAliveTimeout = 120_000;
  server.listen(0, '127.0.0.1', () => send({ port: (server.address() as AddressInfo).port }));
  process.on('message', (m: Msg) => m.cmd === 'exit' && process.exit(0));
} else {
  const clients: RouterClient[] = [];
  let base = memory();
  process.on('message', (m: Msg) => {
    if (m.cmd === 'start') {
      base = memory();
      for (const c of m.clients) {
        const rc = new RouterClient({ gateways: [m.gateway], credential: c.credential, secretKey: c.secretKey, target: m.target, backoffInitialMs: 50, backoffMaxMs: 1000 });
        rc.on('error-gateway', () => {});
        rc.start();
        clients.push(rc);
      }
      const check = setInterval(() => {
        if (clients.every((c) => c.status()[0]!.connected)) {
          clearInterval(check);
          send({ started: clients.length });
        }
      }, 20);
    } else if (m.cmd === 'measure') {
      const now = memory();
      send({ rss: now.rss - base.rss, js: now.js - base.js, streams: clients.reduce((n, c) => n + c.stats().streamsActive, 0) });
      base = now;
    } else if (m.cmd === 'stats') {
      send(clients.map((c) => c.stats()));
    } else if (m.cmd === 'exit') {
      void Promise.all(clients.map((c) => c.stop())).then(() => process.exit(0));
    }
  });
  send({ ready: true });
}
