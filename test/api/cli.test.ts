/**
 * End to end: the real coordinator, in-process on 127.0.0.1:0 with a temp
 * database, and the real `netwall` CLI run as a child process against it.
 * The children are spawned asynchronously: the server lives in this event loop.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../src/coordinator/app.js';
import { generateSigningKeyPair, generateToken } from '../../src/shared/crypto.js';
import { enroll } from '../../src/shared/host-client.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const MAIN = join(ROOT, 'src/cli/main.ts');

let app: FastifyInstance;
let url: string;
let dir: string;
const adminToken = generateToken('admin');

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run `netwall ARGS` with NETWALL_URL/NETWALL_TOKEN pointing at our coordinator unless overridden. */
function netwall(args: string[], env: Record<string, string | undefined> = {}): Promise<Result> {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('NETWALL_')));
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', MAIN, ...args],
      { cwd: ROOT, env: { ...clean, NETWALL_URL: url, NETWALL_TOKEN: adminToken, ...env }, timeout: 60_000 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** Exit 0 and nothing on stderr (the token reminder aside), else fail with what the CLI said. */
async function ok(t: { is: (a: unknown, b: unknown, m?: string) => void }, args: string[], env?: Record<string, string>): Promise<string> {
  const r = await netwall(args, env);
  t.is(r.code, 0, `netwall ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** One non-empty line, no stack trace. */
function oneLine(t: { is: (a: unknown, b: unknown, m?: string) => void; false: (v: boolean, m?: string) => void }, stderr: string): void {
  t.is(stderr.trimEnd().split('\n').length, 1, stderr);
  t.false(/\n\s+at /.test(stderr), stderr);
}

test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'netwall-cli-'));
  app = await buildApp({ db: join(dir, 'coordinator.db'), adminToken, signingKey: generateSigningKeyPair() });
  await app.listen({ host: '127.0.0.1', port: 0 });
  url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
});

test.after.always(async () => {
  await app?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

test.serial('health and tenants: create, show, list as a table and as JSON', async (t) => {
  t.regex(await ok(t, ['health']), /^ok \(http:\/\/127\.0\.0\.1:\d+\)\n$/);

  const created = await ok(t, ['tenant', 'create', 'acme', '--prefix-length', '20']);
  t.regex(created, /^Name: +acme$/m);
  t.regex(created, /^Subnet: +\d+\.\d+\.\d+\.\d+\/20$/m);
  await ok(t, ['tenant', 'create', 'globex']);

  const table = await ok(t, ['tenant', 'list']);
  const lines = table.trimEnd().split('\n');
  t.regex(lines[0]!, /^NAME +SUBNET +CREATED$/);
  t.is(lines.length, 3);
  t.regex(table, /^acme +\S+\/20 +\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$/m);

  const json = JSON.parse(await ok(t, ['tenant', 'list', '--json'])) as { tenants: { name: string; subnet: string }[] };
  t.deepEqual(json.tenants.map((x) => x.name).sort(), ['acme', 'globex']);

  const shown = JSON.parse(await ok(t, ['--json', 'tenant', 'show', 'acme'])) as { name: string };
  t.is(shown.name, 'acme');
});

test.serial('hosts enroll with tokens from the CLI; workloads, policies, exposures and egress through the CLI', async (t) => {
  // Enrollment tokens, then the hosts enroll (as netwall-agent / netwall-gateway would).
  const hosts = [['node', 'node1'], ['gateway', 'gateway1'], ['gateway', 'gateway2']] as const;
  await Promise.all(
    hosts.map(async ([kind, name], i) => {
      const r = await netwall(['enroll-token', 'create', '--kind', kind, '--name', name, '--ttl', '10m']);
      t.is(r.code, 0, r.stderr);
      const token = /^Token: +(\S+)$/m.exec(r.stdout)?.[1];
      t.truthy(token, r.stdout);
      t.regex(r.stderr, /shown only this once/);
      t.false(r.stdout.includes(adminToken));
      await enroll(url, { token: token!, name, identityKey: generateSigningKeyPair().publicKey, endpoint: `192.0.2.${10 + i}:51820` });
    }),
  );
  const [nodes, gateways, node1] = await Promise.all([ok(t, ['node', 'list']), ok(t, ['gateway', 'list']), ok(t, ['node', 'show', 'node1'])]);
  t.regex(nodes, /^node1 +\S+ /m);
  t.regex(gateways, /^gateway2 +/m);
  t.regex(node1, /^Kind: +node$/m);

  // Workloads.
  const w = await ok(t, ['workload', 'create', '--tenant', 'acme', 'web1', '--node', 'node1', '--label', 'app=web']);
  t.regex(w, /^Address: +\d+\.\d+\.\d+\.\d+$/m);
  t.regex(w, /^Labels: +app=web$/m);
  await ok(t, ['workload', 'create', '--tenant', 'acme', 'db1', '--node', 'node1', '--label', 'app=db,tier=data']);
  const wl = await ok(t, ['workload', 'list'], { NETWALL_TENANT: 'acme' });
  t.regex(wl.split('\n')[0]!, /^NAME +NODE +ADDRESS +LABELS +CREATED$/);
  t.regex(wl, /^db1 +node1 +\S+ +app=db,tier=data +/m);

  // A policy from flags reads back as the same flags.
  const p = await ok(t, [
    'policy', 'set', '--tenant', 'acme', 'allow-web-db',
    '--from', 'app=web', '--to', 'app=db', '--allow', 'tcp:5432', '--allow', 'tcp:8000-8080', '--allow', 'icmp',
  ]);
  t.regex(p, /^Allow: +tcp:5432,8000-8080 icmp$/m);
  const pj = JSON.parse(await ok(t, ['policy', 'show', '--tenant', 'acme', 'allow-web-db', '--json'])) as Record<string, unknown>;
  t.like(pj, { name: 'allow-web-db', from: { app: 'web' }, to: { app: 'db' } });
  t.regex(await ok(t, ['policy', 'list', '--tenant', 'acme']), /^allow-web-db +app=web +app=db +tcp:5432,8000-8080 icmp$/m);

  // A policy from a file.
  const file = join(dir, 'policy.json');
  await writeFile(file, JSON.stringify({ from: {}, to: { app: 'web' }, allow: [{ protocol: 'tcp', ports: [80] }] }));
  t.regex(await ok(t, ['policy', 'set', '--tenant', 'acme', 'any-to-web', '--file', file]), /^From: +\*$/m);

  // Exposure and egress.
  const e = await ok(t, [
    'exposure', 'set', '--tenant', 'acme', 'web', '--protocol', 'http', '--hostname', 'web.acme.test', '--mode', 'tunnel',
    '--gateway', 'gateway1', '--gateway', 'gateway2', '--selector', 'app=web', '--port', '8080',
  ]);
  t.regex(e, /^Target: +app=web:8080$/m);
  t.regex(await ok(t, ['exposure', 'list', '--tenant', 'acme']), /^web +http +web\.acme\.test +tunnel +gateway1, gateway2 +app=web:8080$/m);
  const g = await ok(t, ['egress', 'set', '--tenant', 'acme', 'internet', '--gateway', 'gateway1', '--allow', 'tcp:203.0.113.10/32:80']);
  t.regex(g, /^Destinations: +tcp:203\.0\.113\.10\/32:80$/m);
  const gj = JSON.parse(await ok(t, ['egress', 'list', '--tenant', 'acme', '--json'])) as { egress: { name: string; destinations: unknown[] }[] };
  t.deepEqual(gj.egress.map((x) => x.name), ['internet']);
  t.deepEqual(gj.egress[0]!.destinations, [{ cidr: '203.0.113.10/32', protocol: 'tcp', ports: [80] }]);

  // The audit log saw it all; metrics are there.
  const [audit, metrics] = await Promise.all([ok(t, ['audit-log', '--limit', '50']), ok(t, ['metrics'])]);
  t.regex(audit, /^ID +AT +ACTOR +ACTION +TARGET +DETAIL$/m);
  t.regex(audit, /^\d+ +\S+ \S+ +admin +policy\.put +acme\/allow-web-db +/m);
  t.regex(metrics, /netwall_tenants/);
});

test.serial('a tenant token works for its own tenant only', async (t) => {
  const r = await netwall(['tenant', 'token', 'acme', '--name', 'ci', '--ttl', '1h', '--json']);
  t.is(r.code, 0, r.stderr);
  const { token } = JSON.parse(r.stdout) as { token: string };
  t.regex(token, /^nwt_/);
  t.is(r.stderr, '');

  t.regex(await ok(t, ['workload', 'list', '--tenant', 'acme'], { NETWALL_TOKEN: token }), /^web1 /m);
  const other = await netwall(['workload', 'list', '--tenant', 'globex', '--token', token]);
  t.is(other.code, 1);
  t.regex(other.stderr, /^netwall: HTTP 403 forbidden: /);
  oneLine(t, other.stderr);
});

test.serial('deletes, and a refused tenant delete', async (t) => {
  const refused = await netwall(['tenant', 'delete', 'acme']);
  t.is(refused.code, 1);
  t.regex(refused.stderr, /^netwall: HTTP 409 conflict: .*workload/);
  t.is(await ok(t, ['egress', 'delete', '--tenant', 'acme', 'internet']), 'deleted egress rule internet of tenant acme\n');
  t.is(await ok(t, ['workload', 'delete', '--tenant', 'acme', 'db1', '--json']), '');
  const gone = await netwall(['workload', 'show', '--tenant', 'acme', 'db1']);
  t.is(gone.code, 1);
  t.regex(gone.stderr, /^netwall: HTTP 404 not_found: .*db1/);
  t.is(await ok(t, ['tenant', 'delete', 'globex']), 'deleted tenant globex\n');
});

test('bad input from the server: exit 1, one line naming the field', async (t) => {
  const r = await netwall(['tenant', 'create', 'Bad_Name']);
  t.is(r.code, 1);
  t.regex(r.stderr, /^netwall: HTTP 400 invalid: body\.name: /);
  oneLine(t, r.stderr);
  t.is(r.stdout, '');

  const tcp = await netwall([
    'exposure', 'set', '--tenant', 'acme', 'db', '--protocol', 'tcp', '--mode', 'mesh', '--gateway', 'gateway1', '--selector', 'app=db', '--port', '5432',
  ]);
  t.is(tcp.code, 1);
  t.regex(tcp.stderr, /^netwall: HTTP 400 invalid: publicPort: /);
  oneLine(t, tcp.stderr);
});

test('bad input caught by the CLI: exit 2, one line with a pointer to --help', async (t) => {
  const r = await netwall(['policy', 'set', '--tenant', 'acme', 'p', '--from', 'app=web', '--to', 'app=db', '--allow', 'tcp:99999']);
  t.is(r.code, 2);
  t.is(r.stderr, "netwall: --allow 'tcp:99999': port 99999 is out of range 1-65535 (see 'netwall policy set --help')\n");
  const u = await netwall(['tenant', 'list', '--frobnicate']);
  t.is(u.code, 2);
  oneLine(t, u.stderr);
});

test('wrong or missing token: 401 in one line, and the token is not echoed', async (t) => {
  const r = await netwall(['tenant', 'list'], { NETWALL_TOKEN: 'nwa_wrong-token-value' });
  t.is(r.code, 1);
  t.regex(r.stderr, /^netwall: HTTP 401 unauthorized: /);
  t.false(r.stderr.includes('nwa_wrong-token-value'));
  const none = await netwall(['tenant', 'list'], { NETWALL_TOKEN: undefined });
  t.regex(none.stderr, /set NETWALL_TOKEN or pass --token/);
  oneLine(t, none.stderr);
});

test('an unreachable URL: exit 1 and a line naming it', async (t) => {
  const port = await new Promise<number>((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
  const r = await netwall(['tenant', 'list', '--url', `http://127.0.0.1:${port}`]);
  t.is(r.code, 1);
  t.is(r.stderr, `netwall: cannot reach the coordinator at http://127.0.0.1:${port}: connection refused\n`);
  t.is(r.stdout, '');
});
