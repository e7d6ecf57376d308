/**
 * End to end: `netwall policy explain`, `policy what-if` and `reachability`,
 * the real CLI as child processes against the real coordinator in-process
 * (like cli.test.ts). Exit status is the contract scripts rely on: explain
 * is 0 allowed, 1 denied, 2 any error.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../src/coordinator/app.js';
import { generateSigningKeyPair, generateToken } from '../../src/shared/crypto.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const MAIN = join(ROOT, 'src/cli/main.ts');

let app: FastifyInstance;
let url: string;
let dir: string;
let globexToken: string;
const adminToken = generateToken('admin');

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function netwall(args: string[], env: Record<string, string | undefined> = {}): Promise<Result> {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('NETWALL_')));
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', MAIN, ...args],
      { cwd: ROOT, env: { ...clean, NETWALL_URL: url, NETWALL_TOKEN: adminToken, NETWALL_TENANT: 'acme', ...env }, timeout: 60_000 },
      (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
    );
  });
}

async function admin<T = unknown>(method: string, path: string, body?: unknown): Promise<T> {
  const r = await app.inject({ method: method as 'GET', url: path, headers: { authorization: `Bearer ${adminToken}` }, ...(body === undefined ? {} : { payload: body as object }) });
  if (r.statusCode >= 300) throw new Error(`${method} ${path}: ${r.statusCode} ${r.body}`);
  return r.json<T>();
}

test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'netwall-cli-reach-'));
  app = await buildApp({ db: join(dir, 'coordinator.db'), adminToken, signingKey: generateSigningKeyPair() });
  await app.listen({ host: '127.0.0.1', port: 0 });
  url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  for (const name of ['acme', 'globex']) await admin('POST', '/v1/tenants', { name });
  const { token } = await admin<{ token: string }>('POST', '/v1/enrollment-tokens', { kind: 'node', name: 'node1' });
  const enrolled = await app.inject({ method: 'POST', url: '/v1/enroll', payload: { token, name: 'node1', identityKey: generateSigningKeyPair().publicKey, endpoint: '192.0.2.10' } });
  if (enrolled.statusCode !== 201) throw new Error(enrolled.body);
  await admin('POST', '/v1/tenants/acme/workloads', { name: 'web1', node: 'node1', labels: { app: 'web' } });
  await admin('POST', '/v1/tenants/acme/workloads', { name: 'db1', node: 'node1', labels: { app: 'db' } });
  await admin('PUT', '/v1/tenants/acme/policies/web-to-db', { from: { app: 'web' }, to: { app: 'db' }, allow: [{ protocol: 'tcp', ports: [5432] }, { protocol: 'icmp' }] });
  globexToken = (await admin<{ token: string }>('POST', '/v1/tenants/globex/tokens', { name: 'ci' })).token;
});

test.after.always(async () => {
  await app?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('policy explain: a sentence and the rules; exit 0 allowed, 1 denied, 2 on any error', async (t) => {
  const [allowed, denied, json, unknown, foreign] = await Promise.all([
    netwall(['policy', 'explain', '--from', 'web1', '--to', 'db1', '--proto', 'tcp', '--port', '5432']),
    netwall(['policy', 'explain', '--from', 'db1', '--to', 'web1', '--proto', 'tcp', '--port', '5432']),
    netwall(['policy', 'explain', '--from', 'web1', '--to', '192.0.2.10', '--proto', 'tcp', '--port', '22', '--json']),
    netwall(['policy', 'explain', '--from', 'web1', '--to', 'nope', '--proto', 'tcp']),
    netwall(['policy', 'explain', '--from', 'web1', '--to', 'db1', '--proto', 'icmp'], { NETWALL_TOKEN: globexToken }),
  ]);
  t.is(allowed.code, 0, allowed.stderr);
  t.is(allowed.stdout, ['tcp port 5432 from web1 to db1 is allowed by policy "web-to-db"', '', 'KIND     NAME        MATCH', 'policy   web-to-db   app=web -> app=db tcp:5432', ''].join('\n'));
  t.is(denied.code, 1, denied.stderr);
  t.is(denied.stdout, 'tcp port 5432 from db1 to web1 is denied: no policy of tenant "acme" allows it (default deny)\n');
  t.is(denied.stderr, '');
  t.is(json.code, 1, json.stderr);
  t.like(JSON.parse(json.stdout), { allowed: false, reason: 'to_host', to: { workload: null, address: '192.0.2.10' } });
  t.is(unknown.code, 2);
  t.is(unknown.stderr, 'netwall: HTTP 404 not_found: to: workload "nope" does not exist in tenant "acme"\n');
  t.is(foreign.code, 2);
  t.regex(foreign.stderr, /^netwall: HTTP 403 forbidden: this token is scoped to tenant "globex"\n$/);
});

test('policy what-if prints the diff and changes nothing; reachability prints the matrix', async (t) => {
  const before = await admin<{ version: number }>('GET', '/v1/nodes/node1');
  const [put, del, matrix] = await Promise.all([
    netwall(['policy', 'what-if', 'db-to-web', '--from', 'app=db', '--to', 'app=web', '--allow', 'udp:53']),
    netwall(['policy', 'what-if', 'web-to-db', '--delete']),
    netwall(['reachability']),
  ]);
  t.is(put.code, 0, put.stderr);
  t.is(put.stdout, ['Creating policy db-to-web would allow 1 and deny 0 flow(s) (+ newly allowed, - no longer allowed):', 'CHANGE   FROM   TO     FLOWS', '+        db1    web1   udp:53', ''].join('\n'));
  t.is(del.code, 0, del.stderr);
  t.regex(del.stdout, /^-  +web1 +db1 +tcp:5432 icmp$/m);
  t.is(matrix.code, 0, matrix.stderr);
  t.is(matrix.stdout, ['FROM   TO    ALLOW           POLICIES', 'web1   db1   tcp:5432 icmp   web-to-db', ''].join('\n'));
  t.is(matrix.stderr, '2 workload(s); pairs not listed are denied.\n');
  // Nothing was written: the policies, the node's desired version.
  const policies = await admin<{ policies: { name: string }[] }>('GET', '/v1/tenants/acme/policies');
  t.deepEqual(policies.policies.map((p) => p.name), ['web-to-db']);
  t.is((await admin<{ version: number }>('GET', '/v1/nodes/node1')).version, before.version);
});
