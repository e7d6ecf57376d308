import test from 'ava';
import { clientKey, RateLimiter, resolveLimits, Slots } from '../../../src/gateway/public/limits.js';
import { PublicMetrics, renderPrometheus } from '../../../src/gateway/public/metrics.js';
import { hostFromHeader, PublicRouter } from '../../../src/gateway/public/routes.js';
import { exposure } from './public-helpers.js';

test('Host header: case-insensitive, port stripped, trailing dot dropped, IPv6 literal kept bracketed', (t) => {
  t.is(hostFromHeader('App.Example.COM:8080'), 'app.example.com');
  t.is(hostFromHeader('app.example.com.'), 'app.example.com');
  t.is(hostFromHeader('[2001:DB8::1]:80'), '[2001:db8::1]');
  t.is(hostFromHeader('a.test:notaport'), '');
  t.is(hostFromHeader('[::1'), '');
  t.is(hostFromHeader(undefined), '');
});

test('PublicRouter: Host, SNI and port tables; exact names only', (t) => {
  const web = exposure({ name: 'web', hostnames: ['Web.Example.test'] });
  const pass = exposure({ name: 'pass', protocol: 'tls', tls: 'passthrough', hostnames: ['secure.example.test'] });
  const term = exposure({ name: 'term', protocol: 'tls', tls: 'terminate', hostnames: ['term.example.test'] });
  const plainTls = exposure({ name: 'plain', protocol: 'tls', tls: null, hostnames: ['plain.example.test'] });
  const db = exposure({ name: 'db', protocol: 'tcp', publicPort: 5432 });
  const wild = exposure({ name: 'wild', hostnames: ['*.example.test'] });
  const r = new PublicRouter([web, pass, term, plainTls, db, wild]);
  t.is(r.byHost('web.example.TEST:80')?.name, 'web');
  t.is(r.byHost('other.example.test'), undefined);
  t.is(r.byHost('x.example.test'), undefined, 'no wildcard matching');
  t.is(r.bySni('secure.example.test')?.name, 'pass');
  t.is(r.bySni('web.example.test'), undefined, 'an http name is not a TLS route');
  t.is(r.bySni(null), undefined);
  t.is(PublicRouter.tlsMode(r.bySni('term.example.test')!), 'terminate');
  t.is(PublicRouter.tlsMode(r.bySni('plain.example.test')!), 'passthrough');
  t.is(r.byPort(5432)?.name, 'db');
  t.deepEqual(r.tcpPorts(), [5432]);
  t.deepEqual(r.conflicts, []);
});

test('PublicRouter: a name or port claimed twice goes to the first (tenant, name), the rest are conflicts', (t) => {
  const a = exposure({ tenant: 'beta', name: 'a', hostnames: ['dup.test'], protocol: 'http' });
  const b = exposure({ tenant: 'alpha', name: 'z', hostnames: ['dup.test'], protocol: 'http' });
  const p1 = exposure({ name: 'p1', protocol: 'tcp', publicPort: 9000 });
  const p2 = exposure({ name: 'p2', protocol: 'tcp', publicPort: 9000 });
  const onHttp = exposure({ name: 'p3', protocol: 'tcp', publicPort: 80 });
  const r = new PublicRouter([a, b, p2, p1, onHttp], [80, 443]);
  t.is(r.byHost('dup.test')?.tenant, 'alpha');
  t.is(r.byPort(9000)?.name, 'p1');
  t.is(r.byPort(80), undefined);
  t.deepEqual(
    r.conflicts.map((c) => `${c.kind} ${c.key} ${c.winner} ${c.loser}`),
    ['tcp 9000 acme/p1 acme/p2', 'tcp 80 (gateway listener) acme/p3', 'http dup.test alpha/z beta/a'],
  );
});

test('rate limiter: burst, then the rate; per key; bounded table', (t) => {
  let now = 0;
  const rl = new RateLimiter(10, 5, 3, () => now);
  for (let i = 0; i < 5; i++) t.true(rl.take('a'));
  t.false(rl.take('a'));
  t.is(rl.retryAfter('a'), 1);
  t.true(rl.take('b'), 'another client is not affected');
  now += 100; // 0.1 s at 10/s = one token
  t.true(rl.take('a'));
  t.false(rl.take('a'));
  rl.take('c');
  rl.take('d');
  t.is(rl.size, 3);
  t.true(new RateLimiter(1, 0, 10).take('x'), 'burst 0 disables');
});

test('client keys: IPv4 as is, IPv6 by /64, mapped IPv4 unmapped', (t) => {
  t.is(clientKey('192.0.2.1'), '192.0.2.1');
  t.is(clientKey('::ffff:192.0.2.1'), '192.0.2.1');
  t.is(clientKey('2001:db8:1:2:3:4:5:6'), '2001:db8:1:2::/64');
  t.is(clientKey('2001:db8::1'), '2001:db8:0:0::/64');
  t.is(clientKey('2001:db8:0:0:ffff::9'), clientKey('2001:db8::1'));
});

test('slots: cap per key, release once', (t) => {
  const s = new Slots(() => 2);
  const r1 = s.acquire('x')!;
  s.acquire('x');
  t.is(s.acquire('x'), null);
  r1();
  r1();
  t.is(s.count('x'), 1);
  t.truthy(s.acquire('x'));
});

test('limits: defaults are the documented ones; bad values refused', (t) => {
  const l = resolveLimits();
  t.is(l.maxHeaderBytes, 16384);
  t.is(l.maxBodyBytes, 10 * 1024 * 1024);
  t.is(l.headerTimeoutMs, 10_000);
  t.is(l.maxStreamsPerExposure, 1000);
  t.is(l.ratePerSecond, 50);
  t.is(l.rateBurst, 100);
  t.throws(() => resolveLimits({ maxBodyBytes: -1 }), { message: /maxBodyBytes/ });
  t.throws(() => resolveLimits({ idleTimeoutMs: Number.NaN }));
});

test('metrics render in the Prometheus text format', (t) => {
  const m = new PublicMetrics();
  m.accepted.http = 2;
  m.exposure('acme/web').requests = 3;
  m.reject('unknown_host');
  m.reject('exposure_busy', 'acme/web');
  const text = renderPrometheus(m.snapshot());
  t.regex(text, /^netwall_gateway_public_requests_total\{exposure="acme\/web"\} 3$/m);
  t.regex(text, /^netwall_gateway_public_rejections_total\{reason="unknown_host"\} 1$/m);
  t.regex(text, /^netwall_gateway_public_accepted_connections_total\{listener="http"\} 2$/m);
  t.deepEqual(m.snapshot().exposures['acme/web']!.rejections, { exposure_busy: 1 });
});
