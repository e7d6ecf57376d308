/**
 * The gateway's admin endpoint: `GET /healthz` (status as JSON) and
 * `GET /metrics` (Prometheus text). It binds loopback by default — never a
 * public address unless the operator names one — and serves nothing else.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { RouterServer } from './router-server.js';

export interface AdminServer {
  url: string;
  close(): Promise<void>;
}

export function startAdminServer(o: { host: string; port: number; status: () => Record<string, unknown>; metrics: () => string }): Promise<AdminServer> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET') {
      res.writeHead(405, { allow: 'GET' }).end();
      return;
    }
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(`${JSON.stringify({ ok: true, ...o.status() })}\n`);
    } else if (path === '/metrics') {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(o.metrics());
    } else {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not found"}\n');
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: o.host, port: o.port }, () => {
      server.off('error', reject);
      const a = server.address() as AddressInfo;
      const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
      resolve({
        url: `http://${host}:${a.port}`,
        close: () => new Promise<void>((done) => server.close(() => done())),
      });
    });
  });
}

/** The router server's counters in the Prometheus text format (`netwall_gateway_router_*`). */
export function renderRouterPrometheus(router: RouterServer): string {
  const s = router.stats();
  const lines: string[] = [];
  const metric = (name: string, type: 'counter' | 'gauge', help: string, samples: [string, number][]) => {
    lines.push(`# HELP netwall_gateway_router_${name} ${help}`, `# TYPE netwall_gateway_router_${name} ${type}`);
    for (const [labels, v] of samples) lines.push(`netwall_gateway_router_${name}${labels} ${v}`);
  };
  const live = new Map<string, number>();
  for (const x of router.sessions()) live.set(`${x.tenant}/${x.exposure}`, (live.get(`${x.tenant}/${x.exposure}`) ?? 0) + 1);
  metric('sessions', 'gauge', 'Live router-client sessions per exposure.', [...live].map(([k, v]) => [`{exposure="${k}"}`, v]));
  metric('sessions_total', 'counter', 'Router-client sessions authenticated.', [['', s.sessionsTotal]]);
  metric('auth_failures_total', 'counter', 'Refused router-client handshakes by reason.', Object.entries(s.authFailures).map(([r, v]) => [`{reason="${r}"}`, v]));
  metric('streams_active', 'gauge', 'Streams open on router sessions.', [['', s.streamsActive]]);
  metric('streams_total', 'counter', 'Streams opened on router sessions.', [['', s.streamsTotal]]);
  metric('streams_failed_total', 'counter', 'Streams refused, reset or timed out by the router client.', [['', s.streamsFailed]]);
  metric('open_rejected_total', 'counter', 'Public connections with no live router session to take them.', [['', s.openRejected]]);
  return `${lines.join('\n')}\n`;
}
