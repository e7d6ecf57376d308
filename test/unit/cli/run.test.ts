/**
 * The dispatcher and the API client, in-process, against a fake fetch that
 * records each request and answers from a script.
 */
import test from 'ava';
import { ApiClient, apiPath, networkReason } from '../../../src/cli/client.js';
import { commands } from '../../../src/cli/commands.js';
import { errorLine, parseArgsMessage, resolve, run } from '../../../src/cli/run.js';
import { UsageError } from '../../../src/cli/parse.js';

interface Seen {
  method: string;
  url: string;
  headers: Record<string, string>;
  body: unknown;
}

type Answer = { status: number; body?: unknown; text?: string; headers?: Record<string, string> } | Error;

function fakeFetch(answer: Answer | ((s: Seen) => Answer)) {
  const seen: Seen[] = [];
  const fn = (async (input: URL | string, init?: RequestInit) => {
    const s: Seen = {
      method: init?.method ?? 'GET',
      url: String(input),
      headers: (init?.headers ?? {}) as Record<string, string>,
      body: init?.body === undefined ? undefined : JSON.parse(String(init.body)),
    };
    seen.push(s);
    const a = typeof answer === 'function' ? answer(s) : answer;
    if (a instanceof Error) throw a;
    const text = a.text ?? (a.body === undefined ? '' : JSON.stringify(a.body));
    const headers = { ...(a.body !== undefined && { 'content-type': 'application/json; charset=utf-8' }), ...a.headers };
    return new Response(a.status === 204 ? null : text, { status: a.status, headers });
  }) as typeof fetch;
  return { fn, seen };
}

async function cli(argv: string[], answer: Answer | ((s: Seen) => Answer) = { status: 200, body: {} }, env: Record<string, string> = {}) {
  const f = fakeFetch(answer);
  let stdout = '';
  let stderr = '';
  const code = await run(argv, {
    env: { NETWALL_TOKEN: 'nwa_secret', ...env },
    stdout: (s) => (stdout += s),
    stderr: (s) => (stderr += s),
    readFile: async (p) => {
      if (p === 'policy.json') return JSON.stringify({ from: { app: 'web' }, to: { app: 'db' }, allow: [{ protocol: 'icmp' }] });
      if (p === 'bad.json') return '{nope';
      throw Object.assign(new Error('ENOENT'), { code: 'ENOENT' });
    },
    fetch: f.fn,
  });
  return { code, stdout, stderr, seen: f.seen };
}

const tenant = { name: 'acme', subnet: '10.100.0.0/20', createdAt: '2025-01-02T03:04:05.000Z' };

test('every command has a unique path, a summary, and help that mentions it', (t) => {
  const paths = commands.map((c) => c.path.join(' '));
  t.is(new Set(paths).size, paths.length);
  for (const c of commands) {
    t.truthy(c.summary, paths.join());
    const r = resolve([...c.path, '--help']);
    t.is(r.kind, 'help');
    if (r.kind === 'help') t.true(r.text.startsWith(`Usage: netwall ${c.path.join(' ')}`));
  }
});

test('tenant create posts the body with the bearer token and prints fields', async (t) => {
  const r = await cli(['tenant', 'create', 'acme', '--prefix-length', '20'], { status: 201, body: tenant });
  t.is(r.code, 0, r.stderr);
  t.is(r.seen.length, 1);
  t.is(r.seen[0]!.method, 'POST');
  t.is(r.seen[0]!.url, 'http://127.0.0.1:7300/v1/tenants');
  t.is(r.seen[0]!.headers.authorization, 'Bearer nwa_secret');
  t.deepEqual(r.seen[0]!.body, { name: 'acme', prefixLength: 20 });
  t.is(r.stdout, 'Name:     acme\nSubnet:   10.100.0.0/20\nCreated:  2025-01-02 03:04:05Z\n');
  t.is(r.stderr, '');
});

test('--url and --token flags win over the environment, anywhere on the line', async (t) => {
  const r = await cli(['--url', 'http://coord:9000/', 'tenant', '--token=nwa_flag', 'list', '--json'], { status: 200, body: { tenants: [tenant] } }, {
    NETWALL_URL: 'http://env:1',
  });
  t.is(r.code, 0, r.stderr);
  t.is(r.seen[0]!.url, 'http://coord:9000/v1/tenants');
  t.is(r.seen[0]!.headers.authorization, 'Bearer nwa_flag');
  t.deepEqual(JSON.parse(r.stdout), { tenants: [tenant] });
});

test('a base URL with a path is kept as a prefix; names are escaped', (t) => {
  const c = new ApiClient({ url: 'https://proxy.example/netwall/' });
  t.is(c.url(apiPath('v1', 'tenants', 'a b/c')).href, 'https://proxy.example/netwall/v1/tenants/a%20b%2Fc');
  t.is(c.url('/v1/audit', { limit: 5, x: undefined }).href, 'https://proxy.example/netwall/v1/audit?limit=5');
  t.throws(() => apiPath('v1', 'tenants', '..'), { instanceOf: UsageError });
});

test('list renders a table by default and raw JSON with --json', async (t) => {
  const body = { tenants: [tenant, { ...tenant, name: 'globex', subnet: '10.100.16.0/20' }] };
  const table = await cli(['tenant', 'list'], { status: 200, body });
  t.is(table.stdout, ['NAME     SUBNET           CREATED', 'acme     10.100.0.0/20    2025-01-02 03:04:05Z', 'globex   10.100.16.0/20   2025-01-02 03:04:05Z', ''].join('\n'));
  const json = await cli(['tenant', 'list', '--json'], { status: 200, body });
  t.deepEqual(JSON.parse(json.stdout), body);
});

test('policy set builds the API body from flags', async (t) => {
  const r = await cli(
    ['policy', 'set', '--tenant', 'acme', 'allow-web-db', '--from', 'app=web', '--to', 'app=db', '--allow', 'tcp:5432', '--allow', 'tcp:8000-8080', '--allow', 'icmp'],
    (s) => ({ status: 200, body: { name: 'allow-web-db', tenant: 'acme', ...(s.body as object) } }),
  );
  t.is(r.code, 0, r.stderr);
  t.is(r.seen[0]!.method, 'PUT');
  t.is(r.seen[0]!.url, 'http://127.0.0.1:7300/v1/tenants/acme/policies/allow-web-db');
  t.deepEqual(r.seen[0]!.body, {
    from: { app: 'web' },
    to: { app: 'db' },
    allow: [{ protocol: 'tcp', ports: [5432, '8000-8080'] }, { protocol: 'icmp' }],
  });
  t.regex(r.stdout, /^Allow: +tcp:5432,8000-8080 icmp$/m);
});

test('policy set --file sends the file, and refuses --file mixed with body flags', async (t) => {
  const ok = await cli(['policy', 'set', 'p1', '--file', 'policy.json'], { status: 200, body: {} }, { NETWALL_TENANT: 'acme' });
  t.is(ok.code, 0, ok.stderr);
  t.deepEqual(ok.seen[0]!.body, { from: { app: 'web' }, to: { app: 'db' }, allow: [{ protocol: 'icmp' }] });
  const mixed = await cli(['policy', 'set', 'p1', '--tenant', 'acme', '--file', 'policy.json', '--allow', 'icmp']);
  t.is(mixed.code, 2);
  t.is(mixed.stderr, "netwall: --file cannot be combined with --allow (see 'netwall policy set --help')\n");
  const bad = await cli(['policy', 'set', 'p1', '--tenant', 'acme', '--file', 'bad.json']);
  t.is(bad.code, 1);
  t.regex(bad.stderr, /^netwall: bad\.json: not valid JSON: .*\n$/);
  const missing = await cli(['policy', 'set', 'p1', '--tenant', 'acme', '--file', 'nope.json']);
  t.is(missing.stderr, 'netwall: nope.json: no such file\n');
  t.is(ok.seen.length + mixed.seen.length + bad.seen.length + missing.seen.length, 1);
});

test('exposure set and egress set build their bodies', async (t) => {
  const ex = await cli([
    'exposure', 'set', '--tenant', 'acme', 'web', '--protocol', 'http', '--hostname', 'web.acme.test', '--mode', 'tunnel',
    '--gateway', 'gateway1', '--gateway', 'gateway2', '--selector', 'app=web', '--port', '8080',
  ]);
  t.is(ex.code, 0, ex.stderr);
  t.deepEqual(ex.seen[0]!.body, {
    protocol: 'http',
    hostnames: ['web.acme.test'],
    mode: 'tunnel',
    gateways: ['gateway1', 'gateway2'],
    target: { selector: { app: 'web' }, port: 8080 },
    tls: null,
    publicPort: null,
    proxyProtocol: false,
  });
  const eg = await cli(['egress', 'set', '--tenant', 'acme', 'internet', '--gateway', 'gateway1', '--allow', 'tcp:203.0.113.10/32:80']);
  t.is(eg.code, 0, eg.stderr);
  t.is(eg.seen[0]!.url, 'http://127.0.0.1:7300/v1/tenants/acme/egress/internet');
  t.deepEqual(eg.seen[0]!.body, { gateways: ['gateway1'], destinations: [{ cidr: '203.0.113.10/32', protocol: 'tcp', ports: [80] }] });
});

test('delete prints a line, nothing under --json; tenant delete --force adds the query', async (t) => {
  const r = await cli(['tenant', 'delete', 'acme', '--force'], { status: 204 });
  t.is(r.code, 0);
  t.is(r.seen[0]!.method, 'DELETE');
  t.is(r.seen[0]!.url, 'http://127.0.0.1:7300/v1/tenants/acme?force=true');
  t.is(r.stdout, 'deleted tenant acme\n');
  const j = await cli(['workload', 'delete', '--tenant', 'acme', 'web1', '--json'], { status: 204 });
  t.is(j.stdout, '');
  t.is(j.seen[0]!.url, 'http://127.0.0.1:7300/v1/tenants/acme/workloads/web1');
});

test('tokens: shown once on stdout, the reminder on stderr; the admin token never printed', async (t) => {
  const r = await cli(['tenant', 'token', 'acme', '--name', 'ci', '--ttl', '1h'], {
    status: 201,
    body: { token: 'nwt_new', name: 'ci', tenant: 'acme', expiresAt: '2025-01-02T04:04:05.000Z' },
  });
  t.deepEqual(r.seen[0]!.body, { name: 'ci', ttlSeconds: 3600 });
  t.regex(r.stdout, /^Token: +nwt_new$/m);
  t.regex(r.stderr, /shown only this once/);
  t.false((r.stdout + r.stderr).includes('nwa_secret'));
});

test('API errors: one line with the status, code and the server message; exit 1', async (t) => {
  const r = await cli(['tenant', 'create', 'Bad_Name'], { status: 400, body: { error: { code: 'invalid', message: 'body.name: invalid value' } } });
  t.is(r.code, 1);
  t.is(r.stderr, 'netwall: HTTP 400 invalid: body.name: invalid value\n');
  t.is(r.stdout, '');
});

test('401 without a token says how to give one; 429 says when to retry', async (t) => {
  const r = await cli(['tenant', 'list'], { status: 401, body: { error: { code: 'unauthorized', message: 'no token' } } }, { NETWALL_TOKEN: '' });
  t.is(r.stderr, 'netwall: HTTP 401 unauthorized: no token (no token given: set NETWALL_TOKEN or pass --token)\n');
  const l = await cli(['tenant', 'list'], { status: 429, body: { error: { code: 'rate_limited', message: 'slow down' } }, headers: { 'retry-after': '7' } });
  t.is(l.stderr, 'netwall: HTTP 429 rate_limited: slow down (retry after 7 s)\n');
  const h = await cli(['tenant', 'list'], { status: 502, text: '<html>\n<b>Bad gateway</b></html>' });
  t.is(h.code, 1);
  t.is(h.stderr, 'netwall: HTTP 502: the server at http://127.0.0.1:7300 answered with non-JSON: <html> <b>Bad gateway</b></html>\n');
});

test('network failures name the URL (without credentials) and exit 1', async (t) => {
  const refused = Object.assign(new TypeError('fetch failed'), { cause: Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }) });
  const r = await cli(['--url', 'http://user:pw@10.0.0.1:7300', 'health'], refused);
  t.is(r.code, 1);
  t.is(r.stderr, 'netwall: cannot reach the coordinator at http://10.0.0.1:7300: connection refused\n');
  t.is(networkReason(Object.assign(new Error('x'), { name: 'TimeoutError' }), 30_000), 'no answer within 30 s');
});

test('usage errors: one line, a pointer to --help, exit 2, no request sent', async (t) => {
  const cases: [string[], string][] = [
    [['frobnicate'], "netwall: unknown command 'frobnicate' (see 'netwall --help')"],
    [['tenant'], "netwall: 'tenant' needs a subcommand: create, list, show, delete, token (see 'netwall tenant --help')"],
    [['tenant', 'rename'], "netwall: unknown command 'tenant rename' (see 'netwall tenant --help')"],
    [['tenant', 'create'], "netwall: missing argument NAME (see 'netwall tenant create --help')"],
    [['tenant', 'create', 'a', 'b'], "netwall: unexpected argument 'b' (see 'netwall tenant create --help')"],
    [['tenant', 'list', '--bogus'], "netwall: unknown option '--bogus' (see 'netwall tenant list --help')"],
    [['tenant', 'create', 'a', '--prefix-length'], "netwall: --prefix-length needs a value (see 'netwall tenant create --help')"],
    [['tenant', 'create', 'a', '--prefix-length', 'x'], "netwall: --prefix-length: expected a whole number, got 'x' (see 'netwall tenant create --help')"],
    [['workload', 'list'], "netwall: missing --tenant (or set NETWALL_TENANT) (see 'netwall workload list --help')"],
    [['workload', 'create', '--tenant', 'acme', 'w'], "netwall: missing --node (see 'netwall workload create --help')"],
    [['enroll-token', 'create', '--kind', 'router', '--name', 'x'], "netwall: --kind must be one of node, gateway (got 'router') (see 'netwall enroll-token create --help')"],
    [['policy', 'set', '--tenant', 'acme', 'p', '--from', 'app', '--to', 'a=b', '--allow', 'icmp'], "netwall: --from 'app': expected key=value (see 'netwall policy set --help')"],
    [['--url', 'ftp://x', 'health'], "netwall: invalid coordinator URL 'ftp://x': only http and https are supported (see 'netwall --help')"],
    [['--token', 'two words', 'health'], "netwall: the token contains spaces or unprintable characters (see 'netwall --help')"],
  ];
  for (const [argv, line] of cases) {
    const r = await cli(argv);
    t.is(r.code, 2, argv.join(' '));
    t.is(r.stderr, line + '\n', argv.join(' '));
    t.is(r.seen.length, 0);
    t.false(r.stderr.includes('two words'));
  }
});

test('help: general, per noun, per command; exit 0 on stdout; bare netwall is a usage error', async (t) => {
  const g = await cli(['help']);
  t.is(g.code, 0);
  t.regex(g.stdout, /^ {2}policy set NAME +Create or replace a policy/m);
  const n = await cli(['tenant', '--help']);
  t.regex(n.stdout, /^Usage: netwall tenant <create\|list\|show\|delete\|token>/);
  const c = await cli(['help', 'exposure', 'set']);
  t.regex(c.stdout, /^Usage: netwall exposure set NAME --tenant TENANT --protocol PROTO/);
  t.regex(c.stdout, /--proxy-protocol/);
  const bare = await cli([]);
  t.is(bare.code, 2);
  t.is(bare.stdout, '');
  t.regex(bare.stderr, /^netwall — /);
});

test('metrics are printed as text even with --json; health shows status and URL', async (t) => {
  const m = await cli(['metrics', '--json'], { status: 200, text: '# TYPE x counter\nx 1\n', headers: { 'content-type': 'text/plain' } });
  t.is(m.stdout, '# TYPE x counter\nx 1\n');
  const h = await cli(['health'], { status: 200, body: { status: 'ok' } });
  t.is(h.stdout, 'ok (http://127.0.0.1:7300)\n');
});

test('host show renders its tenants as a nested table', async (t) => {
  const host = {
    name: 'node1', kind: 'node', identityKey: 'k', endpoint: '192.0.2.1:51820', mgmtAddress: null, publicAddress: null, status: 'online',
    lastSeen: '2025-01-02T03:04:05.000Z', version: 3, appliedVersion: 3, errors: [], drops: { policy: 2 },
    tenants: [{ tenant: 'acme', slice: '10.100.0.0/24', address: '10.100.0.1', listenPort: 51820, publicKey: null }],
  };
  const r = await cli(['node', 'show', 'node1'], { status: 200, body: host });
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /^Drops: +policy=2$/m);
  t.regex(r.stdout, /^Tenants:\n {2}TENANT +SLICE +ADDRESS +PORT +PUBLIC KEY\n {2}acme +10\.100\.0\.0\/24 +10\.100\.0\.1 +51820 +-$/m);
});

test('errorLine never prints a stack and folds newlines', (t) => {
  t.deepEqual(errorLine(new Error('boom\n  at x')), { line: 'netwall: internal error: boom at x', code: 1 });
  t.is(parseArgsMessage(new Error("Unknown option '--x'. To specify a positional argument starting with a '-', place it at the end")), "unknown option '--x'");
});

/* --------------------------------------------- policy explain / what-if / reachability */

const explanation = (allowed: boolean, extra: Record<string, unknown> = {}) => ({
  allowed,
  reason: allowed ? null : 'policy',
  verdict: allowed ? 'tcp port 5432 from web1 to db1 is allowed by policy "web-db"' : 'tcp port 22 from web1 to db1 is denied: no policy of tenant "acme" allows it (default deny)',
  from: { workload: 'web1', address: '10.100.0.66', node: 'node1' },
  to: { workload: 'db1', address: '10.100.0.67' },
  protocol: 'tcp',
  port: allowed ? 5432 : 22,
  ports: [{ from: 5432, to: 5432 }],
  rules: allowed ? [{ kind: 'policy', name: 'web-db', from: { app: 'web' }, to: { app: 'db' }, protocol: 'tcp', ports: [{ from: 5432, to: 5432 }] }] : [],
  ...extra,
});

test('policy explain: the sentence and the rules; exit 0 allowed, 1 denied (also with --json)', async (t) => {
  const yes = await cli(['policy', 'explain', '--tenant', 'acme', '--from', 'web1', '--to', 'db1', '--proto', 'tcp', '--port', '5432'], { status: 200, body: explanation(true) });
  t.is(yes.code, 0, yes.stderr);
  t.is(yes.seen[0]!.method, 'POST');
  t.is(yes.seen[0]!.url, 'http://127.0.0.1:7300/v1/tenants/acme/reachability/explain');
  t.deepEqual(yes.seen[0]!.body, { from: 'web1', to: 'db1', protocol: 'tcp', port: 5432 });
  t.is(yes.stdout, ['tcp port 5432 from web1 to db1 is allowed by policy "web-db"', '', 'KIND     NAME     MATCH', 'policy   web-db   app=web -> app=db tcp:5432', ''].join('\n'));

  const no = await cli(['policy', 'explain', '--tenant', 'acme', '--from', 'web1', '--to', 'db1', '--proto', 'tcp', '--port', '22'], { status: 200, body: explanation(false) });
  t.is(no.code, 1);
  t.is(no.stdout, 'tcp port 22 from web1 to db1 is denied: no policy of tenant "acme" allows it (default deny)\n');
  t.is(no.stderr, '');
  const warned = await cli(['policy', 'explain', '--tenant', 'acme', '--from', 'web1', '--to', '192.0.2.5', '--proto', 'tcp', '--port', '22'], {
    status: 200,
    body: explanation(false, { reason: 'to_host', warning: 'egress "x" covers 192.0.2.5, a netwall host' }),
  });
  t.is(warned.code, 1);
  t.is(warned.stderr, 'warning: egress "x" covers 192.0.2.5, a netwall host\n');
  const json = await cli(['policy', 'explain', '--tenant', 'acme', '--from', 'web1', '--to', 'db1', '--proto', 'tcp', '--port', '22', '--json'], { status: 200, body: explanation(false) });
  t.is(json.code, 1);
  t.like(JSON.parse(json.stdout), { allowed: false, reason: 'policy' });

  // No port: the body has none; egress and router-client citations read like the flags that made them.
  const egress = explanation(true, {
    rules: [
      { kind: 'egress', name: 'internet', cidr: '0.0.0.0/0', protocol: 'tcp', ports: [{ from: 1, to: 65535 }], gateway: 'gw1' },
      { kind: 'egress', name: 'web', cidr: '203.0.113.0/24', protocol: 'tcp', ports: [{ from: 80, to: 80 }, { from: 443, to: 443 }], gateway: 'gw1' },
      { kind: 'exposure', name: 'site', gateway: 'gw1', protocol: 'tcp', ports: [{ from: 7400, to: 7400 }] },
    ],
  });
  const e = await cli(['policy', 'explain', '--tenant', 'acme', '--from', 'web1', '--to', '203.0.113.9', '--proto', 'tcp'], { status: 200, body: egress });
  t.deepEqual(e.seen[0]!.body, { from: 'web1', to: '203.0.113.9', protocol: 'tcp' });
  t.regex(e.stdout, /^egress +internet +tcp:0\.0\.0\.0\/0 via gw1$/m);
  t.regex(e.stdout, /^egress +web +tcp:203\.0\.113\.0\/24:80,443 via gw1$/m);
  t.regex(e.stdout, /^exposure +site +router client -> gw1 tcp:7400$/m);
});

test('policy explain: errors are exit 2 (like grep), never 1 (which means denied)', async (t) => {
  const args = ['policy', 'explain', '--tenant', 'acme', '--from', 'web1', '--to', 'nope', '--proto', 'tcp'];
  const api = await cli(args, { status: 404, body: { error: { code: 'not_found', message: 'to: workload "nope" does not exist in tenant "acme"' } } });
  t.is(api.code, 2);
  t.is(api.stderr, 'netwall: HTTP 404 not_found: to: workload "nope" does not exist in tenant "acme"\n');
  const refused = Object.assign(new TypeError('fetch failed'), { cause: Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }) });
  t.is((await cli(args, refused)).code, 2);
  for (const [argv, line] of [
    [['policy', 'explain', '--tenant', 'acme', '--from', 'w', '--to', 'd', '--proto', 'icmp', '--port', '1'], '--port: icmp has no ports'],
    [['policy', 'explain', '--tenant', 'acme', '--from', 'w', '--to', 'd', '--proto', 'sctp'], "--proto must be one of tcp, udp, icmp (got 'sctp')"],
    [['policy', 'explain', '--tenant', 'acme', '--from', 'w', '--to', 'd', '--proto', 'tcp', '--port', '99999'], '--port: port 99999 is out of range 1-65535'],
    [['policy', 'explain', '--tenant', 'acme', '--to', 'd', '--proto', 'tcp'], 'missing --from'],
  ] as const) {
    const r = await cli([...argv]);
    t.is(r.code, 2, argv.join(' '));
    t.is(r.stderr, `netwall: ${line} (see 'netwall policy explain --help')\n`);
    t.is(r.seen.length, 0);
  }
  // Other commands keep exit 1 for API errors.
  t.is((await cli(['policy', 'show', '--tenant', 'acme', 'x'], { status: 404, body: { error: { code: 'not_found', message: 'x' } } })).code, 1);
});

const diff = {
  tenant: 'acme',
  op: 'put',
  policy: 'web-db',
  created: false,
  added: [
    { from: 'web1', to: 'db1', protocol: 'tcp', ports: [{ from: 8000, to: 8080 }] },
    { from: 'web1', to: 'db1', protocol: 'udp', ports: [{ from: 1, to: 65535 }] },
  ],
  removed: [{ from: 'web1', to: 'db1', protocol: 'icmp' }],
};

test('policy what-if: the same flags as policy set, PUT to …/what-if; --delete is a DELETE; the diff as a table', async (t) => {
  const r = await cli(['policy', 'what-if', '--tenant', 'acme', 'web-db', '--from', 'app=web', '--to', 'app=db', '--allow', 'tcp:8000-8080', '--allow', 'udp'], { status: 200, body: diff });
  t.is(r.code, 0, r.stderr);
  t.is(r.seen[0]!.method, 'PUT');
  t.is(r.seen[0]!.url, 'http://127.0.0.1:7300/v1/tenants/acme/policies/web-db/what-if');
  t.deepEqual(r.seen[0]!.body, { from: { app: 'web' }, to: { app: 'db' }, allow: [{ protocol: 'tcp', ports: ['8000-8080'] }, { protocol: 'udp' }] });
  t.is(
    r.stdout,
    [
      'Replacing policy web-db would allow 2 and deny 1 flow(s) (+ newly allowed, - no longer allowed):',
      'CHANGE   FROM   TO    FLOWS',
      '+        web1   db1   tcp:8000-8080 udp',
      '-        web1   db1   icmp',
      '',
    ].join('\n'),
  );
  const file = await cli(['policy', 'what-if', '--tenant', 'acme', 'p1', '--file', 'policy.json'], { status: 200, body: { ...diff, created: true, added: [], removed: [] } });
  t.deepEqual(file.seen[0]!.body, { from: { app: 'web' }, to: { app: 'db' }, allow: [{ protocol: 'icmp' }] });
  t.is(file.stdout, 'Creating policy web-db would change no flow.\n');

  const del = await cli(['policy', 'what-if', '--tenant', 'acme', 'web-db', '--delete'], { status: 200, body: { ...diff, op: 'delete', added: [] } });
  t.is(del.seen[0]!.method, 'DELETE');
  t.is(del.seen[0]!.url, 'http://127.0.0.1:7300/v1/tenants/acme/policies/web-db/what-if');
  t.regex(del.stdout, /^Deleting policy web-db would allow 0 and deny 1 flow/);

  const mixed = await cli(['policy', 'what-if', '--tenant', 'acme', 'web-db', '--delete', '--allow', 'icmp']);
  t.is(mixed.code, 2);
  t.is(mixed.stderr, "netwall: --delete cannot be combined with --allow (see 'netwall policy what-if --help')\n");
  const none = await cli(['policy', 'what-if', '--tenant', 'acme', 'web-db']);
  t.is(none.stderr, "netwall: missing --from (see 'netwall policy what-if --help')\n");
  t.is(mixed.seen.length + none.seen.length, 0);
});

test('reachability: one row per pair, protocols joined, every port as the bare protocol', async (t) => {
  const body = {
    tenant: 'acme',
    workloads: ['batch', 'db1', 'web1'],
    flows: [
      { from: 'batch', to: 'web1', protocol: 'udp', ports: [{ from: 1, to: 65535 }], policies: ['all-udp'] },
      { from: 'web1', to: 'db1', protocol: 'tcp', ports: [{ from: 5432, to: 5433 }, { from: 8000, to: 8000 }], policies: ['any-db', 'web-db'] },
      { from: 'web1', to: 'db1', protocol: 'icmp', policies: ['web-db'] },
    ],
  };
  const r = await cli(['reachability', '--tenant', 'acme'], { status: 200, body });
  t.is(r.code, 0, r.stderr);
  t.is(r.seen[0]!.url, 'http://127.0.0.1:7300/v1/tenants/acme/reachability');
  t.is(
    r.stdout,
    ['FROM    TO     ALLOW                     POLICIES', 'batch   web1   udp                       all-udp', 'web1    db1    tcp:5432-5433,8000 icmp   any-db, web-db', ''].join('\n'),
  );
  t.is(r.stderr, '3 workload(s); pairs not listed are denied.\n');
  const json = await cli(['reachability', '--tenant', 'acme', '--json'], { status: 200, body });
  t.deepEqual(JSON.parse(json.stdout), body);
  t.is(json.stderr, '');
});
