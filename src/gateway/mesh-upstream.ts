/**
 * MeshUpstream: the Upstream for mesh-mode exposures. The gateway opens a
 * plain TCP connection over the tenant's WireGuard interface to one entry
 * point (`exposure.targets`: mesh address:port), bound to the gateway's own
 * mesh address in that tenant so the entry point's node admits it as the
 * gateway.
 *
 *   const mesh = new MeshUpstream({ sourceAddress: (tenant) => meshAddressOf(tenant) });
 *   const stream = await mesh.open(exposure, client);  // a connected net.Socket
 *
 * Spreading and failover:
 *  - round-robin over the exposure's targets that are not marked down;
 *  - a connect that fails (refused, unreachable, timed out) marks its target
 *    down for `downForMs` and the same open() tries the next target; each
 *    target is tried at most once per open();
 *  - targets marked down come last in that order, longest-down first: when
 *    every target is down they are still tried (never wedged), and a target
 *    that answers again is up at once;
 *  - a local-address failure (the gateway's source address is not on this
 *    host) is the gateway's fault, not the target's: open() rejects at once
 *    and no target is marked down.
 * open() rejects with MeshUnavailableError (503, `unavailable`) when no target
 * connects; the public side answers 503 / closes for any rejection.
 */
import net, { type NetConnectOpts, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { GatewayExposure } from '../shared/desired.js';
import { NetwallError } from '../shared/errors.js';
import type { ClientAddress, Upstream } from './public/types.js';

export interface MeshUpstreamOptions {
  /** The gateway's mesh address in the tenant (the socket is bound to it, so the entry point's node admits it as the gateway); undefined → the kernel chooses. */
  sourceAddress?: (tenant: string) => string | undefined;
  /** Per connect attempt. Default 3000 ms. */
  connectTimeoutMs?: number;
  /** A target whose connect failed is skipped for this long while another target is usable. Default 5000 ms. */
  downForMs?: number;
  log?: (line: string) => void;
  now?: () => number;
  /** For tests: how a socket is dialled (default net.connect). */
  connect?: (options: NetConnectOpts) => Socket;
}

export interface MeshUpstreamStats {
  /** open() calls that returned a connected socket. */
  opens: number;
  /** Sockets handed out and not closed yet. */
  active: number;
  /** Connect attempts that failed (each target tried counts once). */
  connectFailures: number;
  /** … of which timed out. */
  connectTimeouts: number;
  /** open() calls that rejected (no target connected, bad exposure, local address). */
  openRejected: number;
  /** Targets marked down now. */
  targetsDown: number;
}

/** No entry point of a mesh exposure could be reached (the public side answers 503). */
export class MeshUnavailableError extends NetwallError {
  override readonly code = 'unavailable';
  override readonly status = 503;
}

/** One failed connect attempt (`code`: the errno code, or `ETIMEDOUT` for our own timer). */
class ConnectFailure extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Errors that are about this host's socket, not the target: every target would fail the same. */
const LOCAL_ERRORS = new Set(['EADDRNOTAVAIL', 'EADDRINUSE', 'EINVAL', 'EACCES', 'EPERM', 'EMFILE', 'ENFILE', 'ENOBUFS']);

type Target = GatewayExposure['targets'][number];

export class MeshUpstream implements Upstream {
  private readonly connectTimeoutMs: number;
  private readonly downForMs: number;
  private readonly log: (line: string) => void;
  private readonly now: () => number;
  private readonly dialer: (options: NetConnectOpts) => Socket;
  /** `tenant address:port` → down until (now() ms). */
  private readonly down = new Map<string, number>();
  /** exposure → round-robin counter. */
  private readonly rr = new Map<string, number>();
  private readonly counters = { opens: 0, active: 0, connectFailures: 0, connectTimeouts: 0, openRejected: 0 };

  constructor(private readonly options: MeshUpstreamOptions = {}) {
    this.connectTimeoutMs = options.connectTimeoutMs ?? 3000;
    this.downForMs = options.downForMs ?? 5000;
    this.log = options.log ?? (() => {});
    this.now = options.now ?? Date.now;
    this.dialer = options.connect ?? ((o) => net.connect(o));
  }

  async open(exposure: GatewayExposure, _client: ClientAddress): Promise<Duplex> {
    const name = `${exposure.tenant}/${exposure.name}`;
    if (exposure.mode !== 'mesh') return this.reject(new NetwallError(`exposure ${name} is not in mesh mode`));
    const order = this.order(exposure);
    if (order.length === 0) return this.reject(new MeshUnavailableError(`exposure ${name} has no mesh target`));
    const localAddress = this.options.sourceAddress?.(exposure.tenant);
    const failures: string[] = [];
    for (const target of order) {
      const key = targetKey(exposure.tenant, target);
      try {
        const socket = await this.dial(target, localAddress);
        this.markUp(key, name);
        this.counters.opens++;
        this.counters.active++;
        socket.once('close', () => this.counters.active--);
        return socket;
      } catch (e) {
        const err = e as ConnectFailure;
        this.counters.connectFailures++;
        if (err.code === 'ETIMEDOUT') this.counters.connectTimeouts++;
        if (LOCAL_ERRORS.has(err.code)) {
          return this.reject(new MeshUnavailableError(`exposure ${name}: cannot open a socket${localAddress ? ` from ${localAddress}` : ''}: ${err.message}`));
        }
        this.markDown(key, name, err.message);
        failures.push(`${target.address}:${target.port} ${err.message}`);
      }
    }
    return this.reject(new MeshUnavailableError(`no mesh target of ${name} connected (${failures.join('; ')})`));
  }

  stats(): MeshUpstreamStats {
    this.prune();
    return { ...this.counters, targetsDown: this.down.size };
  }

  /** Is this target skipped now? (`address:port` of the tenant) */
  isDown(tenant: string, address: string, port: number): boolean {
    const until = this.down.get(targetKey(tenant, { address, port }));
    return until !== undefined && until > this.now();
  }

  private reject(err: Error): never {
    this.counters.openRejected++;
    throw err;
  }

  /** The targets to try, in order: live ones rotated round-robin, then the down ones, longest-down first. */
  private order(exposure: GatewayExposure): Target[] {
    const seen = new Set<string>();
    const live: Target[] = [];
    const downed: { target: Target; until: number }[] = [];
    const now = this.now();
    for (const t of exposure.targets) {
      const key = targetKey(exposure.tenant, t);
      if (seen.has(key)) continue;
      seen.add(key);
      const until = this.down.get(key);
      if (until !== undefined && until > now) downed.push({ target: t, until });
      else live.push(t);
    }
    const rrKey = `${exposure.tenant}/${exposure.name}`;
    const n = this.rr.get(rrKey) ?? 0;
    this.rr.set(rrKey, (n + 1) % 1_000_000_007);
    const start = live.length > 0 ? n % live.length : 0;
    downed.sort((a, b) => a.until - b.until);
    return [...live.slice(start), ...live.slice(0, start), ...downed.map((d) => d.target)];
  }

  private dial(target: Target, localAddress: string | undefined): Promise<Socket> {
    return new Promise((resolve, reject) => {
      let socket: Socket;
      try {
        socket = this.dialer({
          host: target.address,
          port: target.port,
          ...(localAddress !== undefined ? { localAddress } : {}),
          noDelay: true,
          keepAlive: true,
          keepAliveInitialDelay: 15_000,
          allowHalfOpen: true,
        });
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        reject(new ConnectFailure(err.code ?? 'EINVAL', err.message));
        return;
      }
      const timer = setTimeout(() => {
        socket.off('error', onError);
        socket.on('error', () => {});
        socket.destroy();
        reject(new ConnectFailure('ETIMEDOUT', `connect timed out after ${this.connectTimeoutMs} ms`));
      }, this.connectTimeoutMs);
      const onError = (e: NodeJS.ErrnoException): void => {
        clearTimeout(timer);
        socket.destroy();
        reject(new ConnectFailure(e.code ?? 'ECONNABORTED', e.message));
      };
      socket.once('error', onError);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.off('error', onError);
        // Belt and braces: the options above already ask for both.
        socket.setNoDelay(true);
        socket.setKeepAlive(true, 15_000);
        resolve(socket);
      });
    });
  }

  private markDown(key: string, exposure: string, why: string): void {
    const until = this.down.get(key);
    const wasDown = until !== undefined && until > this.now();
    this.down.set(key, this.now() + this.downForMs);
    if (!wasDown) this.log(`mesh target ${key} of ${exposure} down for ${this.downForMs} ms: ${why}`);
    this.prune();
  }

  private markUp(key: string, exposure: string): void {
    if (this.down.delete(key)) this.log(`mesh target ${key} of ${exposure} up again`);
  }

  /** Forget marks that expired (keeps the map bounded by the targets failing now). */
  private prune(): void {
    const now = this.now();
    for (const [key, until] of this.down) if (until <= now) this.down.delete(key);
  }
}

function targetKey(tenant: string, t: { address: string; port: number }): string {
  return `${tenant} ${t.address.includes(':') ? `[${t.address}]` : t.address}:${t.port}`;
}
