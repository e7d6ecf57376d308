/**
 * Child processes of scripts/bench-gateway.ts (not run by hand): each runs in
 * one of the bench's network namespaces (started through `ip netns exec`) and
 * talks to the bench over the IPC channel, one reply per command.
 *
 *   gateway        PublicGateway (HTTP on the public side) with MeshUpstream
 *                  for mesh exposures and RouterServer for tunnel exposures
 *   router-client  one RouterClient dialling the gateway's router server
 *   silent         a TCP app that accepts and never says anything
 *   relay          a blind byte relay (the floor of a Node.js proxy)
 *   idle-clients   holds N idle TCP connections to an address, or runs the
 *                  fixed-rate load (`rate`: see fixedRate below)
 *
 * Every role answers `memory` (after two full GCs: RSS and JS heap + external)
 * and `exit`.
 */
import net, { type Socket } from 'node:net';
import { MeshUpstream } from '../src/gateway/mesh-upstream.js';
import { PublicGateway } from '../src/gateway/public/gateway.js';
import type { Upstream } from '../src/gateway/public/types.js';
import { RouterServer } from '../src/gateway/router-server.js';
import { RouterClient, type GatewayTarget } from '../src/node-agent/router-client.js';
import type { GatewayExposure, RouterCredential } from '../src/shared/desired.js';

export interface Memory {
  rss: number;
  /** heapUsed + external (external already includes ArrayBuffers). */
  js: number;
}

export type ChildCommand =
  | {
      cmd: 'start-gateway';
      name: string;
      coordinatorKey: string;
      exposures: GatewayExposure[];
      publicAddress: string;
      httpPort: number;
      routerAddress: string;
      routerPort: number;
      tenant: string;
      meshSource: string;
    }
  | {
      cmd: 'start-router-client';
      gateway: GatewayTarget;
      credential: RouterCredential;
      secretKey: string;
      target: { host: string; port: number };
      maxConcurrentStreams: number;
    }
  | { cmd: 'start-silent'; port: number }
  | { cmd: 'start-relay'; listen: { host: string; port: number }; source: string; target: { host: string; port: number } }
  | { cmd: 'open'; host: string; port: number; count: number }
  | { cmd: 'rate'; host: string; port: number; hostHeader: string; rate: number; seconds: number; connections: number }
  | { cmd: 'stats' }
  | { cmd: 'memory' }
  | { cmd: 'exit' };

function memory(): Memory {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run with --expose-gc');
  gc();
  gc();
  const m = process.memoryUsage();
  return { rss: m.rss, js: m.heapUsed + m.external };
}

// The bench may be gone (Ctrl-C): a reply that cannot be sent is dropped, not an uncaught EPIPE.
const send = (m: unknown): void => void process.send?.(m, undefined, undefined, () => {});
const log = (line: string): void => void process.stderr.write(`[${process.argv[2]}] ${line}\n`);

let stats: () => unknown = () => ({});
let stop: () => Promise<void> = async () => {};

async function handle(m: ChildCommand): Promise<unknown> {
  switch (m.cmd) {
    case 'start-gateway': {
      const router = new RouterServer({ name: m.name, coordinatorKey: m.coordinatorKey, exposures: m.exposures, log });
      await router.listen({ host: m.routerAddress, port: m.routerPort, tenant: m.tenant });
      const mesh = new MeshUpstream({ sourceAddress: () => m.meshSource, log });
      const upstream: Upstream = { open: (e, c) => (e.mode === 'mesh' ? mesh.open(e, c) : router.open(e, c)) };
      const pub = new PublicGateway({
        upstream,
        // The abuse limits are per client address and every load generator here is one address:
        // lift the per-client caps and the connection rate limit (the global ones stay).
        limits: { maxConnectionsPerClient: 100_000, rateBurst: 0, maxStreamsPerExposure: 100_000 },
        log: (event, fields) => {
          if (event !== 'tcp_listener_opened') log(`${event} ${JSON.stringify(fields)}`);
        },
      });
      await pub.update(m.exposures);
      const res = await pub.start(m.publicAddress, { http: m.httpPort, https: null });
      stats = () => {
        const p = pub.metrics();
        return {
          router: router.stats(),
          mesh: mesh.stats(),
          public: { activeConnections: p.activeConnections, activeStreams: p.activeStreams, rejections: p.rejections, exposures: p.exposures },
        };
      };
      stop = async () => {
        await pub.stop();
        await router.close();
      };
      return { started: true, tcp: res.tcpListening };
    }
    case 'start-router-client': {
      const client = new RouterClient({
        gateways: [m.gateway],
        credential: m.credential,
        secretKey: m.secretKey,
        target: m.target,
        maxConcurrentStreams: m.maxConcurrentStreams,
        log,
      });
      client.on('error-gateway', () => {});
      client.start();
      const t0 = Date.now();
      while (!client.status()[0]?.connected) {
        if (Date.now() - t0 > 10_000) throw new Error(`router client did not connect: ${client.status()[0]?.lastError ?? '?'}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      stats = () => ({ ...client.stats(), gateway: client.status()[0] });
      stop = () => client.stop();
      return { started: true };
    }
    case 'start-silent': {
      const sockets = new Set<Socket>();
      const server = net.createServer((s) => {
        sockets.add(s);
        s.on('error', () => {});
        s.once('close', () => sockets.delete(s));
      });
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ port: m.port, host: '0.0.0.0', backlog: 4096 }, () => resolve());
      });
      stats = () => ({ connections: sockets.size });
      stop = async () => {
        for (const s of sockets) s.destroy();
        await new Promise<void>((r) => server.close(() => r()));
      };
      return { started: true };
    }
    case 'start-relay': {
      // The floor of any Node.js proxy on this path: each client connection piped to its own
      // upstream connection, bytes passed as they come. No parsing, routing, limits or headers.
      const pairs = new Set<Socket>();
      let connections = 0;
      const server = net.createServer({ noDelay: true }, (client) => {
        connections++;
        const up = net.connect({ host: m.target.host, port: m.target.port, localAddress: m.source, noDelay: true });
        pairs.add(client);
        client.on('data', (d: Buffer) => void up.write(d));
        up.on('data', (d: Buffer) => void client.write(d));
        client.on('error', () => up.destroy());
        up.on('error', () => client.destroy());
        client.once('close', () => {
          pairs.delete(client);
          up.destroy();
        });
        up.once('close', () => client.destroy());
      });
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ port: m.listen.port, host: m.listen.host, backlog: 4096 }, () => resolve());
      });
      stats = () => ({ connections, open: pairs.size });
      stop = async () => {
        for (const s of pairs) s.destroy();
        await new Promise<void>((r) => server.close(() => r()));
      };
      return { started: true };
    }
    case 'open': {
      const sockets: Socket[] = [];
      let errors = 0;
      let firstError = '';
      // In batches, so the gateway's accept queue and the tunnel see a burst of at most 100.
      for (let i = 0; i < m.count; i += 100) {
        const batch = Array.from(
          { length: Math.min(100, m.count - i) },
          () =>
            new Promise<void>((resolve) => {
              const s = net.connect({ host: m.host, port: m.port });
              s.once('connect', () => {
                sockets.push(s);
                resolve();
              });
              s.on('error', (e) => {
                errors++;
                firstError ||= e.message;
                resolve();
              });
            }),
        );
        await Promise.all(batch);
      }
      let closedEarly = 0;
      for (const s of sockets) s.once('close', () => closedEarly++);
      stats = () => ({ open: sockets.length - closedEarly, closedEarly });
      stop = async () => {
        for (const s of sockets) s.destroy();
      };
      return { opened: sockets.length, errors, firstError };
    }
    case 'rate':
      return fixedRate(m);
    case 'stats':
      return stats();
    case 'memory':
      return memory();
    case 'exit':
      await stop().catch(() => {});
      setImmediate(() => process.exit(0));
      return { exiting: true };
  }
}

export interface FixedRateResult {
  /** Requests answered 200 per second, from the first scheduled request to the last answer (never less than the schedule's length). */
  achieved: number;
  /** That span, s. */
  elapsed: number;
  scheduled: number;
  ok: number;
  non200: number;
  /** Connection errors/closes while a request was in flight, and requests still unanswered 5 s after the schedule ended. */
  errors: number;
  /** Latency from the request's scheduled time (includes waiting for a free connection: no coordinated omission), ms. */
  p50: number;
  p99: number;
  max: number;
  /** Latency from the moment the request was written, ms. */
  p50Sent: number;
  p99Sent: number;
}

/**
 * Open-loop load at a fixed rate: request i is due at start + i/rate; due
 * requests go out on whichever keep-alive connection is free (they queue when
 * none is, and that wait counts in the latency). Raw sockets and a minimal
 * response parser (Content-Length or a one-chunk chunked body), so the
 * generator costs a few µs per request on a machine it shares with the proxy.
 */
async function fixedRate(m: Extract<ChildCommand, { cmd: 'rate' }>): Promise<FixedRateResult> {
  const request = Buffer.from(`GET / HTTP/1.1\r\nHost: ${m.hostHeader}\r\nUser-Agent: netwall-bench\r\n\r\n`);
  interface Conn {
    sock: Socket;
    buf: Buffer;
    due: number;
    sent: number;
    busy: boolean;
  }
  const idle: Conn[] = [];
  const queue: number[] = [];
  let queueHead = 0;
  const fromDue: number[] = [];
  const fromSent: number[] = [];
  let ok = 0;
  let non200 = 0;
  let errors = 0;
  let inFlight = 0;
  let lastAnswer = 0;
  const send = (c: Conn, due: number): void => {
    c.busy = true;
    c.due = due;
    c.sent = performance.now();
    inFlight++;
    c.sock.write(request);
  };
  const next = (c: Conn): void => {
    if (queueHead < queue.length) send(c, queue[queueHead++]!);
    else idle.push(c);
  };
  const complete = (c: Conn, status: number): void => {
    const now = performance.now();
    lastAnswer = now;
    c.busy = false;
    inFlight--;
    fromDue.push(now - c.due);
    fromSent.push(now - c.sent);
    if (status === 200) ok++;
    else non200++;
    next(c);
  };
  const conns = await Promise.all(
    Array.from(
      { length: m.connections },
      () =>
        new Promise<Conn>((resolve, reject) => {
          const sock = net.connect({ host: m.host, port: m.port, noDelay: true });
          const c: Conn = { sock, buf: Buffer.alloc(0), due: 0, sent: 0, busy: false };
          sock.once('connect', () => resolve(c));
          sock.once('error', reject);
          sock.on('data', (chunk: Buffer) => {
            c.buf = c.buf.length ? Buffer.concat([c.buf, chunk]) : chunk;
            for (;;) {
              const headEnd = c.buf.indexOf('\r\n\r\n');
              if (headEnd < 0) return;
              const head = c.buf.toString('latin1', 0, headEnd);
              const length = /\r\ncontent-length:\s*(\d+)/i.exec(head);
              let end: number;
              if (length) {
                end = headEnd + 4 + Number(length[1]);
                if (c.buf.length < end) return;
              } else if (/\r\ntransfer-encoding:\s*chunked/i.test(head)) {
                const last = c.buf.indexOf('\r\n0\r\n\r\n', headEnd + 2);
                if (last < 0) return;
                end = last + 7;
              } else end = headEnd + 4;
              c.buf = c.buf.subarray(end);
              complete(c, Number(head.slice(9, 12)));
            }
          });
          sock.on('close', () => {
            if (c.busy) {
              c.busy = false;
              inFlight--;
              errors++;
            }
            const i = idle.indexOf(c);
            if (i >= 0) idle.splice(i, 1);
          });
        }),
    ),
  );
  for (const c of conns) {
    c.sock.on('error', () => {});
    idle.push(c);
  }
  const total = Math.round(m.rate * m.seconds);
  const interval = 1000 / m.rate;
  const start = performance.now();
  let issued = 0;
  await new Promise<void>((resolve) => {
    const tick = setInterval(() => {
      const now = performance.now();
      while (issued < total && start + issued * interval <= now) queue.push(start + issued++ * interval);
      while (queueHead < queue.length && idle.length > 0) send(idle.pop()!, queue[queueHead++]!);
      const done = issued === total && queueHead === queue.length && inFlight === 0;
      if (done || now > start + m.seconds * 1000 + 5000) {
        clearInterval(tick);
        resolve();
      }
    }, 1);
  });
  errors += inFlight + (queue.length - queueHead);
  for (const c of conns) c.sock.destroy();
  const q = (xs: number[], p: number): number => {
    const s = [...xs].sort((a, b) => a - b);
    return Number((s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))] ?? NaN).toFixed(2));
  };
  const elapsed = Math.max(m.seconds * 1000, lastAnswer - start) / 1000;
  return {
    achieved: ok / elapsed,
    elapsed,
    scheduled: total,
    ok,
    non200,
    errors,
    p50: q(fromDue, 0.5),
    p99: q(fromDue, 0.99),
    max: q(fromDue, 1),
    p50Sent: q(fromSent, 0.5),
    p99Sent: q(fromSent, 0.99),
  };
}

process.on('message', (m: ChildCommand) => {
  handle(m).then(
    (reply) => send({ ok: true, reply }),
    (err: Error) => send({ ok: false, error: err.stack ?? err.message }),
  );
});
process.on('disconnect', () => process.exit(0));
send({ ok: true, reply: { ready: process.argv[2] } });
