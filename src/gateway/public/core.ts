/**
 * State shared by the public listeners: the current routes, limits, metrics,
 * the injected Upstream, and opening one upstream stream under the
 * per-exposure cap and the open timeout.
 */
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { GatewayExposure } from '../../shared/desired.js';
import type { PublicLimits } from './limits.js';
import { Slots } from './limits.js';
import type { PublicMetrics, RejectReason } from './metrics.js';
import { exposureKey, PublicRouter } from './routes.js';
import type { ClientAddress, PublicLog, Upstream } from './types.js';

/** A refusal with the reason it is counted under. */
export class Rejection extends Error {
  constructor(readonly reason: RejectReason) {
    super(reason);
  }
}

export interface OpenStream {
  duplex: Duplex;
  key: string;
  /** Release the exposure slot and destroy the stream; idempotent. */
  close(): void;
}

/** Per client connection: who it is and what the listener already decided. */
export interface ConnInfo {
  client: ClientAddress;
  local: ClientAddress;
  proto: 'http' | 'https';
  /** Terminated TLS: the exposure the SNI selected, and that name. */
  tlsExposure?: GatewayExposure;
  sni?: string;
}

export class PublicCore {
  router = new PublicRouter([]);
  readonly streamSlots: Slots;
  /** Every upstream stream open now, with its close (run on stop). */
  readonly streams = new Map<Duplex, () => void>();

  constructor(
    readonly limits: PublicLimits,
    readonly metrics: PublicMetrics,
    readonly upstream: Upstream,
    readonly log: PublicLog,
  ) {
    this.streamSlots = new Slots(() => this.limits.maxStreamsPerExposure);
  }

  private readonly lastLogged = new Map<string, number>();

  /** At most one line per key every 10 s: a dead entry point under load must not flood the log. */
  private logThrottled(key: string, event: string, fields: Record<string, unknown>): void {
    const now = performance.now();
    const last = this.lastLogged.get(key);
    if (last !== undefined && now - last < 10_000) return;
    if (this.lastLogged.size > 10_000) this.lastLogged.clear();
    this.lastLogged.set(key, now);
    this.log(event, fields);
  }

  /**
   * Take a slot of the exposure and open an upstream stream. Rejects with
   * `exposure_busy`, `upstream_timeout` or `upstream_unavailable`.
   */
  async openStream(exposure: GatewayExposure, client: ClientAddress): Promise<OpenStream> {
    const key = exposureKey(exposure);
    const release = this.streamSlots.acquire(key);
    if (!release) throw new Rejection('exposure_busy');
    const counters = this.metrics.exposure(key);
    counters.activeStreams++;
    this.metrics.activeStreams++;
    let finished = false;
    let duplex: Duplex | null = null;
    const close = (): void => {
      if (finished) return;
      finished = true;
      release();
      counters.activeStreams--;
      this.metrics.activeStreams--;
      if (duplex) {
        this.streams.delete(duplex);
        duplex.destroy();
      }
    };
    let timer: NodeJS.Timeout | undefined;
    try {
      const opening = this.upstream.open(exposure, { address: client.address, port: client.port });
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Rejection('upstream_timeout')), this.limits.upstreamOpenTimeoutMs);
      });
      // A stream that arrives after we gave up is closed at once.
      opening.then(
        (d) => {
          if (finished) d.destroy();
        },
        () => {},
      );
      duplex = await Promise.race([opening, timeout]);
    } catch (err) {
      close();
      if (err instanceof Rejection) throw err;
      this.logThrottled(`unavailable ${key}`, 'upstream_unavailable', { exposure: key, error: err instanceof Error ? err.message : String(err) });
      throw new Rejection('upstream_unavailable');
    } finally {
      clearTimeout(timer);
    }
    if (finished) {
      duplex.destroy();
      throw new Rejection('upstream_unavailable');
    }
    this.streams.set(duplex, close);
    // Small writes (a request head, then its body) must not wait on Nagle +
    // delayed ACK (~40 ms each): a TCP upstream gets TCP_NODELAY here.
    (duplex as Partial<Pick<Socket, 'setNoDelay'>>).setNoDelay?.(true);
    this.metrics.streams++;
    // Whoever uses the stream handles its errors; this only keeps one that
    // fires in between from crashing the process.
    duplex.on('error', () => {});
    // The stream may die on its own (entry point gone): free the slot then too.
    duplex.once('close', close);
    return { duplex, key, close };
  }
}
