/**
 * Network probes from the current network namespace, each bounded in time:
 * a TCP connect, a UDP datagram, an ICMP echo (through `ping`: Node has no
 * raw sockets). Used by the node agent's prober (run inside a workload's
 * network namespace, src/node-agent/audit-probe-main.ts) and by
 * `netwall audit scan` (run where the CLI runs). What each outcome means:
 * src/shared/audit.ts (ProbeGot).
 */
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import net from 'node:net';
import type { ProbeGot } from './audit.js';
import type { Protocol } from './desired.js';
import { SYSTEM_PATH } from './runner.js';

export interface ProbeTarget {
  protocol: Protocol;
  address: string;
  /** tcp/udp; ignored for icmp. */
  port: number | null;
}

export interface ProbeResult {
  got: ProbeGot;
  detail: string;
  ms: number;
}

/** The datagram a UDP probe sends (a line, so line-based responders answer it). */
export const UDP_PROBE_PAYLOAD = 'netwall-audit\n';

const UNREACHABLE = new Set(['EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN', 'ENETDOWN']);
const REFUSED = new Set(['ECONNREFUSED', 'ECONNRESET']);

function classifyError(err: NodeJS.ErrnoException): { got: ProbeGot; detail: string } {
  const code = err.code ?? err.message;
  if (REFUSED.has(code)) return { got: 'refused', detail: code };
  if (UNREACHABLE.has(code)) return { got: 'unreachable', detail: code };
  if (code === 'ETIMEDOUT') return { got: 'silent', detail: code };
  return { got: 'error', detail: code };
}

/** TCP: connected → answered; RST → refused; nothing → silent. */
export function probeTcp(address: string, port: number, timeoutMs: number): Promise<ProbeResult> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    let done = false;
    const socket = net.connect({ host: address, port });
    const finish = (got: ProbeGot, detail: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ got, detail, ms: Math.round(performance.now() - t0) });
    };
    const timer = setTimeout(() => finish('silent', `no answer within ${timeoutMs} ms`), timeoutMs);
    socket.once('connect', () => finish('answered', 'connected'));
    socket.once('error', (err: NodeJS.ErrnoException) => {
      const c = classifyError(err);
      finish(c.got, c.detail);
    });
  });
}

/**
 * UDP: one datagram on a connected socket. A reply → answered; an ICMP port
 * unreachable (the kernel reports ECONNREFUSED on a connected socket) →
 * refused; nothing → silent.
 */
export function probeUdp(address: string, port: number, timeoutMs: number): Promise<ProbeResult> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    let done = false;
    const socket = dgram.createSocket('udp4');
    const finish = (got: ProbeGot, detail: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      try {
        socket.close();
      } catch {
        /* already closed */
      }
      resolve({ got, detail, ms: Math.round(performance.now() - t0) });
    };
    const timer = setTimeout(() => finish('silent', `no answer within ${timeoutMs} ms`), timeoutMs);
    socket.once('message', () => finish('answered', 'reply'));
    socket.on('error', (err: NodeJS.ErrnoException) => {
      const c = classifyError(err);
      finish(c.got, c.detail);
    });
    // The callback also gets connect's own failure (no route: ENETUNREACH at once).
    socket.connect(port, address, (connectErr?: Error) => {
      if (connectErr) {
        const c = classifyError(connectErr as NodeJS.ErrnoException);
        return finish(c.got, c.detail);
      }
      socket.send(UDP_PROBE_PAYLOAD, (err) => {
        if (err) {
          const c = classifyError(err as NodeJS.ErrnoException);
          finish(c.got, c.detail);
        }
      });
    });
  });
}

/** ICMP echo through `ping` (iputils): a reply → answered; "Unreachable" → unreachable; nothing → silent. */
export function probeIcmp(address: string, timeoutMs: number, ping = 'ping'): Promise<ProbeResult> {
  const t0 = performance.now();
  const seconds = Math.max(1, Math.ceil(timeoutMs / 1000));
  return new Promise((resolve) => {
    let out = '';
    let done = false;
    const finish = (got: ProbeGot, detail: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve({ got, detail, ms: Math.round(performance.now() - t0) });
    };
    const child = spawn(ping, ['-n', '-c', '1', '-W', String(seconds), '-w', String(seconds), address], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH ? `${SYSTEM_PATH}:${process.env.PATH}` : SYSTEM_PATH, LC_ALL: 'C' },
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      finish('silent', `no answer within ${seconds} s`);
    }, seconds * 1000 + 2000);
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (out += c.toString()));
    child.once('error', (err: NodeJS.ErrnoException) => finish('error', `${ping}: ${err.code ?? err.message}`));
    child.once('close', (code) => {
      if (code === 0) return finish('answered', 'echo reply');
      if (/unreachable/i.test(out)) return finish('unreachable', (/[^\n]*unreachable[^\n]*/i.exec(out)?.[0] ?? 'unreachable').trim().slice(0, 120));
      if (code === 1) return finish('silent', `no echo reply within ${seconds} s`);
      finish('error', (out.trim().split('\n').pop() ?? `ping exit ${code}`).slice(0, 120) || `ping exit ${code}`);
    });
  });
}

export function probeOnce(t: ProbeTarget, timeoutMs: number): Promise<ProbeResult> {
  if (t.protocol === 'icmp') return probeIcmp(t.address, timeoutMs);
  if (t.port === null || !Number.isInteger(t.port) || t.port < 1 || t.port > 65535) {
    return Promise.resolve({ got: 'error', detail: `${t.protocol} needs a port 1-65535`, ms: 0 });
  }
  return t.protocol === 'tcp' ? probeTcp(t.address, t.port, timeoutMs) : probeUdp(t.address, t.port, timeoutMs);
}

/** Up to `attempts` tries while the target does not answer (silent or unreachable), `gapMs` apart. */
export async function probeWithRetries(t: ProbeTarget, o: { timeoutMs: number; attempts: number; gapMs?: number }): Promise<ProbeResult & { attempts: number }> {
  let last: ProbeResult = { got: 'error', detail: 'not run', ms: 0 };
  let n = 0;
  while (n < Math.max(1, o.attempts)) {
    if (n > 0 && o.gapMs) await new Promise((r) => setTimeout(r, o.gapMs));
    n++;
    last = await probeOnce(t, o.timeoutMs);
    if (last.got !== 'silent' && last.got !== 'unreachable') break;
  }
  return { ...last, attempts: n };
}

/** Runs `f` over `items` with at most `limit` at a time; results in order. */
export async function pool<T, R>(items: readonly T[], limit: number, f: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < items.length; i = next++) out[i] = await f(items[i] as T, i);
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return out;
}
