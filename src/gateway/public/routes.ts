/**
 * PublicRouter: pure lookup tables built from a gateway's exposures.
 *  - http Host → exposure      (protocol 'http', served on the HTTP port)
 *  - TLS SNI → exposure        (protocol 'tls', passthrough or terminate, HTTPS port)
 *  - TCP public port → exposure (protocol 'tcp', one listener per port)
 * Host names match exactly, case-insensitively, without a trailing dot and
 * with any port stripped from Host. No wildcards (yet): `*.example.com` is an
 * ordinary, unmatched name. A name or port claimed twice goes to the first
 * exposure in (tenant, name) order; the others are listed in `conflicts`.
 */
import type { GatewayExposure } from '../../shared/desired.js';

export type TlsMode = 'passthrough' | 'terminate';

export interface RouteConflict {
  kind: 'http' | 'tls' | 'tcp';
  key: string;
  winner: string;
  loser: string;
}

/** `tenant/name`: how the public side names an exposure (metrics, limits). */
export function exposureKey(e: Pick<GatewayExposure, 'tenant' | 'name'>): string {
  // The same string for the same exposure object: every request names its exposure in
  // the metrics' map, and a string made once keeps its hash.
  let key = exposureKeys.get(e);
  if (key === undefined) {
    key = `${e.tenant}/${e.name}`;
    exposureKeys.set(e, key);
  }
  return key;
}

const exposureKeys = new WeakMap<object, string>();

/** Lower-case, without a trailing dot; '' for nothing usable. */
export function normalizeHostname(name: string): string {
  return name.trim().toLowerCase().replace(/\.$/, '');
}

/**
 * The host part of a Host header, lower-cased: `Example.COM:8080` →
 * `example.com`, `[2001:db8::1]:80` → `[2001:db8::1]`. Returns '' when the
 * header is missing or malformed.
 */
export function hostFromHeader(host: string | undefined): string {
  if (!host) return '';
  const h = host.trim();
  if (h.startsWith('[')) {
    const end = h.indexOf(']');
    if (end < 0) return '';
    const rest = h.slice(end + 1);
    if (rest !== '' && !/^:\d{0,5}$/.test(rest)) return '';
    return h.slice(0, end + 1).toLowerCase();
  }
  const colon = h.indexOf(':');
  if (colon >= 0) {
    if (!/^\d{0,5}$/.test(h.slice(colon + 1))) return '';
    return normalizeHostname(h.slice(0, colon));
  }
  return normalizeHostname(h);
}

/** Distinct Host values remembered by a router (cleared when full: random Hosts only cost a lookup each). */
const HOST_CACHE_SIZE = 1024;

export class PublicRouter {
  readonly http = new Map<string, GatewayExposure>();
  readonly tls = new Map<string, GatewayExposure>();
  readonly tcp = new Map<number, GatewayExposure>();
  readonly conflicts: RouteConflict[] = [];
  /** Host header as sent → its route (null: none). The router is rebuilt on every update, and the cache with it. */
  private readonly hostCache = new Map<string, GatewayExposure | null>();

  /**
   * @param reservedPorts ports the gateway's own listeners use (HTTP, HTTPS):
   *   a tcp exposure asking for one of them is a conflict, not a route.
   */
  constructor(exposures: readonly GatewayExposure[], reservedPorts: readonly number[] = []) {
    const sorted = [...exposures].sort((a, b) => (a.tenant === b.tenant ? cmp(a.name, b.name) : cmp(a.tenant, b.tenant)));
    for (const e of sorted) {
      if (e.protocol === 'http') for (const h of e.hostnames) this.claim('http', this.http, normalizeHostname(h), e);
      else if (e.protocol === 'tls') for (const h of e.hostnames) this.claim('tls', this.tls, normalizeHostname(h), e);
      else if (e.protocol === 'tcp' && e.publicPort !== null) {
        if (reservedPorts.includes(e.publicPort)) {
          this.conflicts.push({ kind: 'tcp', key: String(e.publicPort), winner: '(gateway listener)', loser: exposureKey(e) });
        } else this.claim('tcp', this.tcp, e.publicPort, e);
      }
    }
  }

  private claim<K extends string | number>(kind: 'http' | 'tls' | 'tcp', map: Map<K, GatewayExposure>, key: K, e: GatewayExposure): void {
    if (key === '') return;
    const prev = map.get(key);
    if (prev && exposureKey(prev) !== exposureKey(e)) {
      this.conflicts.push({ kind, key: String(key), winner: exposureKey(prev), loser: exposureKey(e) });
      return;
    }
    map.set(key, e);
  }

  /** Route an HTTP request by its Host header. */
  byHost(hostHeader: string | undefined): GatewayExposure | undefined {
    if (hostHeader === undefined) return this.http.get('');
    // Normalising the header is most of a lookup, and clients repeat the same few values.
    let e = this.hostCache.get(hostHeader);
    if (e === undefined) {
      e = this.http.get(hostFromHeader(hostHeader)) ?? null;
      if (this.hostCache.size >= HOST_CACHE_SIZE) this.hostCache.clear();
      this.hostCache.set(hostHeader, e);
    }
    return e ?? undefined;
  }

  /** Route a TLS connection by the SNI it sent (already lower-cased by the parser). */
  bySni(serverName: string | null): GatewayExposure | undefined {
    return serverName ? this.tls.get(normalizeHostname(serverName)) : undefined;
  }

  byPort(port: number): GatewayExposure | undefined {
    return this.tcp.get(port);
  }

  /** The TLS handling of an exposure: `tls: null` on a tls exposure means passthrough. */
  static tlsMode(e: GatewayExposure): TlsMode {
    return e.tls === 'terminate' ? 'terminate' : 'passthrough';
  }

  tcpPorts(): number[] {
    return [...this.tcp.keys()].sort((a, b) => a - b);
  }
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
