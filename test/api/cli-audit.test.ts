/**
 * `netwall audit` end to end: the real CLI as a child process against the
 * real coordinator in-process, with the node played by a loop in this
 * process (signed long-polls, results as a correct or a faulty wall would
 * give them). Exit status is the contract CI relies on: 0 all matched, 1 a
 * violation, 3 broken only, 2 usage/API errors. And `audit scan
 * --from-here` against 127.0.0.1 only.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../src/coordinator/app.js';
import { openAssignment, type AssignedProbe, type ProbeReport } from '../../src/shared/audit.js';
import { generateSigningKeyPair, generateToken, signRequest, type SigningKeyPair } from '../../src/shared/crypto.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const MAIN = join(ROOT, 'src/cli/main.ts');

let app: FastifyInstance;
let url: string;
let dir: string;
const adminToken = generateToken('admin');
const signingKey = generateSigningKeyPair();
const nodeKey = generateSigningKeyPair();
/** How the played node answers each probe (default: as a correct wall). */
let answer: (p: AssignedProbe) => ProbeReport['got'] = (p) => (p.expect === 'denied' ? 'silent' : 'refused');
let stopped = false;

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function netwall(args: string[]): Promise<Result> {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('NETWALL_')));
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', MAIN, ...args], { cwd: ROOT, env: { ...clean, NETWALL_URL: url, NETWALL_TOKEN: adminToken }, timeout: 90_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
    );
  });
}

async function admin(method: string, path: string, body?: unknown): Promise<void> {
  const r = await app.inject({ method: method as 'GET', url: path, headers: { authorization: `Bearer ${adminToken}` }, ...(body === undefined ? {} : { payload: body as object }) });
  if (r.statusCode >= 300) throw new Error(`${method} ${path}: ${r.statusCode} ${r.body}`);
}

function signed(keys: SigningKeyPair, method: string, path: string, body?: unknown) {
  const text = body === undefined ? '' : JSON.stringify(body);
  return app.inject({
    method: method as 'GET',
    url: path,
    headers: { ...signRequest('node1', keys.secretKey, method, path, text), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { payload: text }),
  });
}

/** node1, played: long-poll, answer every probe, report. */
async function playNode(): Promise<void> {
  while (!stopped) {
    const r = await signed(nodeKey, 'GET', '/v1/nodes/node1/audits?wait=1');
    if (r.statusCode !== 200) continue;
    for (const s of r.json<{ audits: { assignment: string; signature: string }[] }>().audits) {
      const o = openAssignment(s, signingKey.publicKey, 'node1');
      if ('error' in o) throw new Error(o.error);
      const results = o.assignment.probes.map((p) => ({ i: p.i, got: answer(p), ms: 1, attempts: 1 }));
      await signed(nodeKey, 'POST', `/v1/nodes/node1/audits/${o.assignment.id}/results`, { results, done: true });
    }
  }
}

let loop: Promise<void>;
test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'netwall-cli-audit-'));
  app = await buildApp({ db: join(dir, 'coordinator.db'), adminToken, signingKey });
  await app.listen({ host: '127.0.0.1', port: 0 });
  url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  await admin('POST', '/v1/tenants', { name: 'acme' });
  const tok = await app.inject({ method: 'POST', url: '/v1/enrollment-tokens', headers: { authorization: `Bearer ${adminToken}` }, payload: { kind: 'node', name: 'node1' } });
  const enrolled = await app.inject({ method: 'POST', url: '/v1/enroll', payload: { token: tok.json<{ token: string }>().token, name: 'node1', identityKey: nodeKey.publicKey, endpoint: '192.0.2.11' } });
  if (enrolled.statusCode !== 201) throw new Error(enrolled.body);
  await admin('POST', '/v1/tenants/acme/workloads', { name: 'web1', node: 'node1', labels: { app: 'web' } });
  await admin('POST', '/v1/tenants/acme/workloads', { name: 'db1', node: 'node1', labels: { app: 'db' } });
  await admin('PUT', '/v1/tenants/acme/policies/web-db', { from: { app: 'web' }, to: { app: 'db' }, allow: [{ protocol: 'tcp', ports: [5432] }] });
  loop = playNode();
});

test.after.always(async () => {
  stopped = true;
  await loop;
  await app.close();
  await rm(dir, { recursive: true, force: true });
});

test.serial('all matched: exit 0, a summary line; --json has every probe', async (t) => {
  answer = (p) => (p.expect === 'denied' ? 'silent' : 'refused');
  const r = await netwall(['audit', '--extra-target', '192.0.2.100', '--extra-target', 'udp:192.0.2.100:53']);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /^audit [0-9a-f]{16} done: \d+ probes, \d+ matched, 0 violations, 0 broken \(1 node\(s\), [\d.]+ s\)$/m);
  t.notRegex(r.stdout, /OUTCOME/, 'no table when nothing differs');
  const j = await netwall(['audit', '--json', '--tenant', 'acme']);
  t.is(j.code, 0, j.stderr);
  const v = JSON.parse(j.stdout) as { summary: { probes: number; matched: number }; probes: unknown[] };
  t.true(v.summary.probes > 50);
  t.is(v.summary.matched, v.summary.probes);
  t.is(v.probes.length, v.summary.probes);
});

test.serial('a violation: exit 1 and the mismatch in the table, with the reason from the model', async (t) => {
  answer = (p) => (p.expect === 'denied' ? (p.protocol === 'tcp' && p.port === 22 && p.workload === 'web1' ? 'answered' : 'silent') : 'silent');
  const r = await netwall(['audit']);
  t.is(r.code, 1, r.stderr);
  t.regex(r.stdout, /^OUTCOME\s+FROM\s+TO\s+ADDRESS\s+PROBE\s+EXPECTED\s+GOT\s+WHY/m);
  t.regex(r.stdout, /^violation\s+acme\/web1\s+acme\/db1\s+\S+\s+tcp\/22\s+denied\s+answered\s+tcp port 22 from web1 to db1 is denied: no policy/m);
  t.regex(r.stdout, /^broken\s+acme\/web1\s+acme\/db1\s+\S+\s+tcp\/5432\s+allowed\s+silent/m);
  t.regex(r.stdout, /\d+ violations, 1 broken/);
});

test.serial('broken cells only: exit 3', async (t) => {
  answer = () => 'silent';
  const r = await netwall(['audit', '--tenant', 'acme']);
  t.is(r.code, 3, r.stderr);
  t.regex(r.stdout, /0 violations, 1 broken/);
});

test.serial('usage and API errors: exit 2', async (t) => {
  t.is((await netwall(['audit', '--extra-target', 'nope'])).code, 2);
  t.is((await netwall(['audit', '--timeout', '1'])).code, 2);
  const unknown = await netwall(['audit', '--tenant', 'nope']);
  t.is(unknown.code, 2);
  t.regex(unknown.stderr, /HTTP 404 not_found: tenant "nope" does not exist/);
  t.is((await netwall(['audit', 'show', 'xyz'])).code, 2);
  const scan = await netwall(['audit', 'scan', '127.0.0.1']);
  t.is(scan.code, 2);
  t.regex(scan.stderr, /--from-here is required/);
});

test.serial('audit scan --from-here against 127.0.0.1: an open port that may not answer is a violation; closed ones are unfiltered', async (t) => {
  const server = net.createServer((s) => s.on('error', () => {}).end());
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const open = (server.address() as AddressInfo).port;
  const spare = net.createServer();
  await new Promise<void>((r) => spare.listen(0, '127.0.0.1', r));
  const closed = (spare.address() as AddressInfo).port;
  spare.close();
  const file = join(dir, 'surface.json');
  await writeFile(file, JSON.stringify({ hosts: [{ name: 'node1', kind: 'node', addresses: [{ address: '127.0.0.1', what: 'public' }], udp: [], tcp: [] }] }));
  try {
    const base = ['audit', 'scan', '--from-here', '--expect', file, '--no-sample', '--allow-tcp', 'none', '--tcp-ports', `${open},${closed}`, 'node1'];
    const bad = await netwall(base);
    t.is(bad.code, 1, bad.stderr);
    t.regex(bad.stdout, new RegExp(`^violation\\s+node1\\s+127\\.0\\.0\\.1\\s+tcp/${open}\\s+open\\s+no$`, 'm'));
    t.regex(bad.stdout, new RegExp(`^unfiltered\\s+node1\\s+127\\.0\\.0\\.1\\s+tcp/${closed}\\s+closed\\s+no$`, 'm'));
    t.regex(bad.stdout, /scan from here: 2 ports on 1 address\(es\), 1 violations, 1 unfiltered, 0 errors/);
    const allowed = await netwall([...base.slice(0, -1), '--allow-tcp', String(open), 'node1', '--json']);
    t.is(allowed.code, 0, allowed.stderr);
    t.like(JSON.parse(allowed.stdout), { summary: { violations: 0, unfiltered: 1, allowed: 1 } });
    const strict = await netwall([...base, '--strict', '--allow-tcp', String(open)]);
    t.is(strict.code, 1, 'closed counts with --strict');
  } finally {
    server.close();
  }
});
