/**
 * Counters of the public side, as a plain object for the gateway's /metrics
 * (see `renderPrometheus`). Counters only grow; `active*` are gauges.
 */

/** Why the public side refused or cut a connection or request. */
export type RejectReason =
  | 'unknown_host' // HTTP Host matches no exposure → 404
  | 'misdirected' // terminated TLS: Host is not a name of the SNI's exposure → 421
  | 'unknown_sni' // TLS SNI matches no exposure → alert unrecognized_name
  | 'no_sni' // TLS without SNI → alert unrecognized_name
  | 'bad_client_hello' // not TLS, malformed or oversized ClientHello → close
  | 'no_certificate' // terminate exposure without a configured certificate → alert
  | 'tls_error' // terminated handshake failed
  | 'bad_request' // HTTP parse error or a request form the gateway refuses → 400
  | 'header_too_large' // → 431
  | 'body_too_large' // → 413
  | 'header_timeout' // slowloris: request head (or ClientHello/handshake) too slow → 408 / close
  | 'idle_timeout' // a proxied request or spliced connection idle too long → 504 / close
  | 'rate_limited' // per-client new-connection rate → 429 / close
  | 'client_connections' // per-client concurrent connection cap → 429 / close
  | 'gateway_full' // global connection cap → close
  | 'exposure_busy' // per-exposure stream cap → 503 / close
  | 'upstream_unavailable' // Upstream.open rejected (no live entry point) → 503 / close
  | 'upstream_timeout' // Upstream.open too slow → 504 / close
  | 'upstream_error'; // the upstream stream failed mid-request → 502 / close

export interface ExposureCounters {
  /** HTTP requests forwarded (each opened one upstream stream). */
  requests: number;
  /** Spliced connections forwarded (TCP, TLS passthrough, WebSocket). */
  connections: number;
  activeStreams: number;
  bytesFromClients: number;
  bytesToClients: number;
  rejections: Partial<Record<RejectReason, number>>;
}

export interface PublicMetricsSnapshot {
  /** Client connections accepted, per listener kind. */
  accepted: { http: number; https: number; tcp: number };
  activeConnections: number;
  requests: number;
  /** Upstream streams opened (requests + spliced connections). */
  streams: number;
  activeStreams: number;
  bytesFromClients: number;
  bytesToClients: number;
  rejections: Partial<Record<RejectReason, number>>;
  /** Per exposure, keyed `tenant/name`. */
  exposures: Record<string, ExposureCounters>;
}

export class PublicMetrics {
  readonly accepted = { http: 0, https: 0, tcp: 0 };
  activeConnections = 0;
  requests = 0;
  streams = 0;
  activeStreams = 0;
  bytesFromClients = 0;
  bytesToClients = 0;
  readonly rejections: Partial<Record<RejectReason, number>> = {};
  private readonly perExposure = new Map<string, ExposureCounters>();

  exposure(key: string): ExposureCounters {
    let c = this.perExposure.get(key);
    if (!c) {
      c = { requests: 0, connections: 0, activeStreams: 0, bytesFromClients: 0, bytesToClients: 0, rejections: {} };
      this.perExposure.set(key, c);
    }
    return c;
  }

  reject(reason: RejectReason, exposure?: string): void {
    this.rejections[reason] = (this.rejections[reason] ?? 0) + 1;
    if (exposure) {
      const c = this.exposure(exposure);
      c.rejections[reason] = (c.rejections[reason] ?? 0) + 1;
    }
  }

  bytes(exposure: string, fromClient: number, toClient: number): void {
    this.bytesFromClients += fromClient;
    this.bytesToClients += toClient;
    const c = this.exposure(exposure);
    c.bytesFromClients += fromClient;
    c.bytesToClients += toClient;
  }

  /** Forget exposures that are gone and idle (keeps the table bounded across updates). */
  prune(live: Set<string>): void {
    for (const [k, c] of this.perExposure) if (!live.has(k) && c.activeStreams === 0) this.perExposure.delete(k);
  }

  snapshot(): PublicMetricsSnapshot {
    const exposures: Record<string, ExposureCounters> = {};
    for (const [k, c] of [...this.perExposure].sort(([a], [b]) => (a < b ? -1 : 1))) {
      exposures[k] = { ...c, rejections: { ...c.rejections } };
    }
    return {
      accepted: { ...this.accepted },
      activeConnections: this.activeConnections,
      requests: this.requests,
      streams: this.streams,
      activeStreams: this.activeStreams,
      bytesFromClients: this.bytesFromClients,
      bytesToClients: this.bytesToClients,
      rejections: { ...this.rejections },
      exposures,
    };
  }
}

/** The snapshot in the Prometheus text format, names prefixed `netwall_gateway_public_`. */
export function renderPrometheus(s: PublicMetricsSnapshot, prefix = 'netwall_gateway_public'): string {
  const lines: string[] = [];
  const metric = (name: string, type: 'counter' | 'gauge', rows: [Record<string, string>, number][]): void => {
    lines.push(`# TYPE ${prefix}_${name} ${type}`);
    for (const [labels, v] of rows) {
      const l = Object.entries(labels).map(([k, val]) => `${k}="${val.replace(/["\\\n]/g, '_')}"`);
      lines.push(`${prefix}_${name}${l.length ? `{${l.join(',')}}` : ''} ${v}`);
    }
  };
  const ex = Object.entries(s.exposures);
  metric('accepted_connections_total', 'counter', Object.entries(s.accepted).map(([k, v]) => [{ listener: k }, v]));
  metric('active_connections', 'gauge', [[{}, s.activeConnections]]);
  metric('requests_total', 'counter', ex.map(([k, c]) => [{ exposure: k }, c.requests]));
  metric('spliced_connections_total', 'counter', ex.map(([k, c]) => [{ exposure: k }, c.connections]));
  metric('active_streams', 'gauge', ex.map(([k, c]) => [{ exposure: k }, c.activeStreams]));
  metric('bytes_from_clients_total', 'counter', ex.map(([k, c]) => [{ exposure: k }, c.bytesFromClients]));
  metric('bytes_to_clients_total', 'counter', ex.map(([k, c]) => [{ exposure: k }, c.bytesToClients]));
  metric('rejections_total', 'counter', Object.entries(s.rejections).map(([k, v]) => [{ reason: k }, v ?? 0]));
  return `${lines.join('\n')}\n`;
}
