/**
 * Abuse limits of the public side: sizes, timeouts, concurrency caps and a
 * per-client-address rate limit. Every value is configurable; the defaults
 * are safe for a public gateway (docs/gateway.md lists them).
 */
import { isIPv6 } from 'node:net';
import { unmapIPv4 } from './proxy-protocol.js';

export interface PublicLimits {
  /** Request line + headers, bytes (Node's maxHeaderSize). Over → 431. */
  maxHeaderBytes: number;
  /** Request body of proxied HTTP (plain and terminated), bytes. Over → 413. */
  maxBodyBytes: number;
  /**
   * From connection start (or the end of the previous response on a
   * keep-alive connection) to a complete request head; also the budget for a
   * TLS client to send its ClientHello and finish a terminated handshake.
   * Over → 408 (HTTP) or close (TLS). The slowloris guard.
   */
  headerTimeoutMs: number;
  /** Idle keep-alive connection between requests, closed after this. */
  keepAliveTimeoutMs: number;
  /** A proxied HTTP request/response moving no bytes either way for this long → 504 or close. */
  requestIdleTimeoutMs: number;
  /** A spliced connection (TCP, TLS passthrough, WebSocket) moving no bytes either way → closed. */
  idleTimeoutMs: number;
  /** A spliced connection with one direction already ended (half-closed), idle this long → closed. */
  halfOpenTimeoutMs: number;
  /**
   * An upstream stream is kept for the next request of the same client
   * connection to the same exposure, if it has been idle less than this
   * (below common app keep-alive timeouts, e.g. gunicorn's 2 s). 0 = a new
   * stream for every request.
   */
  upstreamKeepAliveMs: number;
  /** How long Upstream.open may take before the client gets 504 / a close. */
  upstreamOpenTimeoutMs: number;
  /** Open upstream streams per exposure (requests in flight, streams kept for a connection's next request, spliced connections). Over → 503 / close. */
  maxStreamsPerExposure: number;
  /** Concurrent client connections across all listeners. Over → close. */
  maxConnections: number;
  /** Concurrent client connections per client address (IPv6: per /64). Over → 429 / close. */
  maxConnectionsPerClient: number;
  /** New connections per second per client address (IPv6: per /64), token bucket rate… */
  ratePerSecond: number;
  /** …and burst. Over → 429 (HTTP) / close (TLS, TCP). 0 disables the rate limit. */
  rateBurst: number;
  /** Bytes the HTTPS listener buffers to read a ClientHello. */
  maxClientHelloBytes: number;
  /** Client addresses the rate limiter remembers at most (oldest forgotten first). */
  rateTableSize: number;
}

export const DEFAULT_LIMITS: Readonly<PublicLimits> = Object.freeze({
  maxHeaderBytes: 16 * 1024,
  maxBodyBytes: 10 * 1024 * 1024,
  headerTimeoutMs: 10_000,
  keepAliveTimeoutMs: 5_000,
  requestIdleTimeoutMs: 60_000,
  idleTimeoutMs: 300_000,
  halfOpenTimeoutMs: 30_000,
  upstreamKeepAliveMs: 1_500,
  upstreamOpenTimeoutMs: 10_000,
  maxStreamsPerExposure: 1_000,
  maxConnections: 20_000,
  maxConnectionsPerClient: 256,
  ratePerSecond: 50,
  rateBurst: 100,
  maxClientHelloBytes: 16 * 1024,
  rateTableSize: 100_000,
});

export function resolveLimits(partial: Partial<PublicLimits> = {}): PublicLimits {
  const out = { ...DEFAULT_LIMITS, ...partial };
  for (const [k, v] of Object.entries(out)) {
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new RangeError(`limit ${k} must be a non-negative number, got ${String(v)}`);
  }
  return out;
}

/**
 * The key a client is limited by: its IPv4 address, or its IPv6 /64 (one
 * subscriber usually holds a whole /64, so per-address limits would be moot).
 */
export function clientKey(address: string): string {
  const a = unmapIPv4(address);
  if (!isIPv6(a)) return a;
  const [head, tail] = a.includes('::') ? (a.split('::') as [string, string]) : [a, null];
  const h = head ? head.split(':') : [];
  const t = tail === null ? [] : tail ? tail.split(':') : [];
  const groups = tail === null ? h : [...h, ...Array<string>(Math.max(0, 8 - h.length - t.length)).fill('0'), ...t];
  return `${groups
    .slice(0, 4)
    .map((g) => parseInt(g || '0', 16).toString(16))
    .join(':')}::/64`;
}

interface Bucket {
  tokens: number;
  at: number;
}

/**
 * Token buckets per client key, bounded: at most `tableSize` keys (a Map
 * keeps insertion order; the least recently refreshed key is forgotten first,
 * which only ever makes the limiter more lenient, never wrong).
 */
export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();
  constructor(
    private readonly rate: number,
    private readonly burst: number,
    private readonly tableSize: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Take one token for `key`; false when the bucket is empty. */
  take(key: string): boolean {
    if (this.burst <= 0) return true;
    const t = this.now();
    let b = this.buckets.get(key);
    if (b) {
      this.buckets.delete(key); // re-insert below: most recent last
      b.tokens = Math.min(this.burst, b.tokens + ((t - b.at) / 1000) * this.rate);
      b.at = t;
    } else {
      b = { tokens: this.burst, at: t };
      while (this.buckets.size >= this.tableSize && this.tableSize > 0) {
        const oldest = this.buckets.keys().next().value as string;
        this.buckets.delete(oldest);
      }
    }
    this.buckets.set(key, b);
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  /** Seconds until `key` has a token again (for Retry-After). */
  retryAfter(key: string): number {
    const b = this.buckets.get(key);
    if (!b || b.tokens >= 1 || this.rate <= 0) return 1;
    return Math.max(1, Math.ceil((1 - b.tokens) / this.rate));
  }

  get size(): number {
    return this.buckets.size;
  }
}

/** Counts held per key, with a cap; a slot is released exactly once. */
export class Slots {
  private readonly held = new Map<string, number>();
  constructor(private readonly cap: () => number) {}

  /** A release function, or null when `key` is at its cap. */
  acquire(key: string): (() => void) | null {
    const n = this.held.get(key) ?? 0;
    if (n >= this.cap()) return null;
    this.held.set(key, n + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const m = (this.held.get(key) ?? 1) - 1;
      if (m <= 0) this.held.delete(key);
      else this.held.set(key, m);
    };
  }

  count(key: string): number {
    return this.held.get(key) ?? 0;
  }

  entries(): [string, number][] {
    return [...this.held];
  }
}
