import test, { type ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeRunner } from '../../../src/shared/runner.js';
import { ExhaustedError, NotFoundError, ValidationError } from '../../../src/shared/errors.js';
import { containerInterfaceName } from '../../../src/node-agent/names.js';
import { attachmentAlias } from '../../../src/node-agent/attach.js';
import {
  AgentClient,
  attachCommand,
  detachCommand,
  hostClientAllocator,
  parseLabelArgs,
  resolveNetnsArg,
  startAgentSocket,
  UnavailableError,
  type Allocator,
  type ChangeEvent,
} from '../../../src/node-agent/socket.js';

class MemAllocator implements Allocator {
  created: [string, string, Record<string, string>][] = [];
  released: [string, string][] = [];
  fail: Error | null = null;
  async create(tenant: string, name: string, labels: Record<string, string>) {
    this.created.push([tenant, name, labels]);
    if (this.fail) throw this.fail;
    return { address: '10.20.0.5' };
  }
  async release(tenant: string, name: string) {
    this.released.push([tenant, name]);
  }
}

function tmp(t: { teardown: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'nw-sock-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function setup(t: ExecutionContext) {
  const dir = tmp(t);
  const runner = new FakeRunner();
  const allocator = new MemAllocator();
  const events: ChangeEvent[] = [];
  const path = join(dir, 'run', 'agent.sock');
  const srv = await startAgentSocket({ path, runner, allocator, mtu: () => 1380, onChange: (e) => events.push(e) });
  t.teardown(() => srv.close());
  return { dir, runner, allocator, events, path, srv, client: new AgentClient(path) };
}

test('socket: directory 0750, socket 0660, never world-accessible', async (t) => {
  const { path } = await setup(t);
  t.is(statSync(join(path, '..')).mode & 0o777, 0o750);
  t.is(statSync(path).mode & 0o777, 0o660);
  t.true(statSync(path).isSocket());
});

test('socket: refuses a world-writable directory, a second agent, and a non-socket file', async (t) => {
  const dir = tmp(t);
  const open = join(dir, 'open');
  mkdirSync(open);
  chmodSync(open, 0o777);
  const base = { runner: new FakeRunner(), allocator: new MemAllocator() };
  await t.throwsAsync(startAgentSocket({ ...base, path: join(open, 'a.sock') }), { message: /world-writable/ });

  const { path } = await setup(t);
  await t.throwsAsync(startAgentSocket({ ...base, path }), { message: /another process is listening/ });

  const file = join(dir, 'file.sock');
  writeFileSync(file, 'x');
  await t.throwsAsync(startAgentSocket({ ...base, path: file }), { message: /not a socket/ });
});

test('socket: a stale socket file (nobody listening) is replaced', async (t) => {
  const dir = tmp(t);
  const path = join(dir, 'agent.sock');
  // A bound but never-listening unix socket: what a crashed agent leaves behind (connect → ECONNREFUSED).
  execFileSync('python3', ['-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', path]);
  t.true(statSync(path).isSocket());
  const srv = await startAgentSocket({ path, runner: new FakeRunner(), allocator: new MemAllocator() });
  t.teardown(() => srv.close());
  t.deepEqual(await new AgentClient(path).health(), { status: 'ok' });
  t.is(statSync(path).mode & 0o777, 0o660);
});

test('socket: health', async (t) => {
  const { client } = await setup(t);
  t.deepEqual(await client.health(), { status: 'ok' });
});

test('socket: bad bodies are 400 naming the field, nothing allocated or run', async (t) => {
  const { client, allocator, runner, dir } = await setup(t);
  const netns = join(dir, 'ns');
  writeFileSync(netns, '');
  const cases: [unknown, RegExp][] = [
    [{}, /^tenant: required/],
    [{ tenant: 'Acme', name: 'web', netns }, /^tenant:/],
    [{ tenant: 'acme', name: 'we b', netns }, /^name:/],
    [{ tenant: 'acme', name: 'web' }, /^netns: required/],
    [{ tenant: 'acme', name: 'web', netns: 'rel/ative' }, /^netns:/],
    [{ tenant: 'acme', name: 'web', netns: join(dir, 'missing') }, /^netns: .* does not exist/],
    [{ tenant: 'acme', name: 'web', netns, labels: { 'bad key': 'v' } }, /^labels: invalid label key/],
    [{ tenant: 'acme', name: 'web', netns, labels: { app: 3 } }, /^labels.app: invalid label value/],
    [{ tenant: 'acme', name: 'web', netns, ifname: 'x'.repeat(16) }, /^ifname:/],
    [{ tenant: 'acme', name: 'web', netns, mtu: 9 }, /^mtu:/],
    [{ tenant: 'acme', name: 'web', netns, containerId: '../x' }, /^containerId:/],
    [{ tenant: 'acme', name: 'web', netns, extra: 1 }, /^extra: unknown field/],
    [[1], /^body:/],
  ];
  for (const [body, re] of cases) {
    const err = await t.throwsAsync(client.attach(body as never), { instanceOf: ValidationError });
    t.regex(err!.message, re, JSON.stringify(body));
  }
  const raw = await t.throwsAsync(client.request('POST', '/v1/detach', { tenant: 'acme' }));
  t.regex(raw!.message, /^name: required/);
  t.deepEqual(allocator.created, []);
  t.deepEqual(runner.calls, []);
});

test('socket: malformed JSON, unknown routes, wrong methods', async (t) => {
  const { path } = await setup(t);
  const http = await import('node:http');
  const call = (method: string, p: string, body?: string) =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.request({ socketPath: path, path: p, method }, (res) => {
        let s = '';
        res.on('data', (c: Buffer) => (s += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: s }));
      });
      req.on('error', reject);
      req.end(body);
    });
  const bad = await call('POST', '/v1/attach', '{"tenant":');
  t.is(bad.status, 400);
  t.deepEqual(JSON.parse(bad.body), { error: { code: 'invalid', message: 'body: malformed JSON' } });
  t.is((await call('GET', '/v1/nope')).status, 404);
  t.is((await call('GET', '/v1/attach')).status, 405);
  const big = await call('POST', '/v1/attach', JSON.stringify({ x: 'a'.repeat(70_000) }));
  t.is(big.status, 413);
});

test('socket: attach allocates, converges (already attached → reads only) and notifies', async (t) => {
  const { client, allocator, runner, events, dir } = await setup(t);
  const netns = join(dir, 'ns');
  writeFileSync(netns, '');
  const host = containerInterfaceName('acme', 'web');
  const inNs = (...a: string[]) => ['nsenter', `--net=${netns}`, ...a];
  runner.expect(['ip', '-j', '-d', 'addr', 'show', 'dev', host], {
    stdout: JSON.stringify([
      {
        ifindex: 7,
        ifname: host,
        flags: ['UP'],
        mtu: 1380,
        address: 'aa:aa:aa:aa:aa:01',
        ifalias: attachmentAlias('acme', 'web', 'c1'),
        addr_info: [{ family: 'inet', local: '169.254.1.1', prefixlen: 32, scope: 'link' }],
      },
    ]),
  });
  runner.expect(['sysctl', '-n', `net/ipv6/conf/${host}/disable_ipv6`], { stdout: '1\n' });
  runner.expect(['ip', '-j', 'route', 'show', '10.20.0.5/32'], { stdout: JSON.stringify([{ dst: '10.20.0.5', dev: host, scope: 'link' }]) });
  runner.expect(inNs('ip', '-j', '-d', 'addr', 'show'), {
    stdout: JSON.stringify([
      { ifindex: 1, ifname: 'lo', flags: ['UP'] },
      { ifindex: 2, ifname: 'eth0', link_index: 7, flags: ['UP'], mtu: 1380, address: 'bb:bb:bb:bb:bb:02', addr_info: [{ family: 'inet', local: '10.20.0.5', prefixlen: 32 }] },
    ]),
  });
  runner.expect(inNs('sysctl', '-n', 'net/ipv6/conf/eth0/disable_ipv6'), { stdout: '1\n' });
  runner.expect(inNs('ip', '-j', 'route', 'show'), {
    stdout: JSON.stringify([
      { dst: 'default', gateway: '169.254.1.1', dev: 'eth0' },
      { dst: '169.254.1.1', dev: 'eth0', scope: 'link' },
    ]),
  });
  const res = await client.attach({ tenant: 'acme', name: 'web', labels: { app: 'web' }, netns, containerId: 'c1' });
  t.deepEqual(allocator.created, [['acme', 'web', { app: 'web' }]]);
  t.deepEqual(res.workload, { tenant: 'acme', name: 'web', address: '10.20.0.5', labels: { app: 'web' } });
  t.is(res.attachment.mtu, 1380, 'the agent default MTU applies when the request names none');
  t.deepEqual(res.attachment.changes, []);
  t.deepEqual(events, [{ op: 'attach', tenant: 'acme', name: 'web', address: '10.20.0.5', netns, changed: false }]);
  t.deepEqual(runner.pending(), []);
});

test('socket: allocation errors pass through with their code; nothing is run', async (t) => {
  const { client, allocator, runner, dir } = await setup(t);
  const netns = join(dir, 'ns');
  writeFileSync(netns, '');
  allocator.fail = new ExhaustedError('tenant acme: no free address on this node');
  await t.throwsAsync(client.attach({ tenant: 'acme', name: 'web', labels: {}, netns }), { instanceOf: ExhaustedError, message: /no free address/ });
  allocator.fail = new TypeError('fetch failed');
  await t.throwsAsync(client.attach({ tenant: 'acme', name: 'web', labels: {}, netns }), { instanceOf: UnavailableError, message: /coordinator unreachable/ });
  t.deepEqual(runner.calls, []);
});

test('socket: detach is idempotent and releases; another container’s veth is kept and not released', async (t) => {
  const { client, allocator, runner, events } = await setup(t);
  const host = containerInterfaceName('acme', 'web');
  runner.expect(['ip', '-j', '-d', 'addr', 'show', 'dev', host], { exitCode: 1, stderr: `Device "${host}" does not exist.` });
  t.deepEqual(await client.detach({ tenant: 'acme', name: 'web' }), { tenant: 'acme', name: 'web', removed: false, released: true });
  runner.expect(['ip', '-j', '-d', 'addr', 'show', 'dev', host], {
    stdout: JSON.stringify([{ ifindex: 7, ifname: host, ifalias: attachmentAlias('acme', 'web', 'other') }]),
  });
  t.deepEqual(await client.detach({ tenant: 'acme', name: 'web', containerId: 'mine' }), { tenant: 'acme', name: 'web', removed: false, released: false });
  t.deepEqual(allocator.released, [['acme', 'web']]);
  t.is(events.length, 2);
  t.deepEqual(runner.pending(), []);
});

test('client: an absent agent is UnavailableError', async (t) => {
  const dir = tmp(t);
  await t.throwsAsync(new AgentClient(join(dir, 'none.sock')).health(), { instanceOf: UnavailableError, message: /ENOENT/ });
});

test('attachCommand/detachCommand talk to the socket', async (t) => {
  const { path, runner, allocator, dir } = await setup(t);
  const host = containerInterfaceName('acme', 'db');
  runner.expect(['ip', '-j', '-d', 'addr', 'show', 'dev', host], { exitCode: 1, stderr: `Device "${host}" does not exist.` });
  const lines: string[] = [];
  const res = await detachCommand({ tenant: 'acme', name: 'db', socket: path, out: (l) => lines.push(l) });
  t.true(res.released);
  t.deepEqual(lines, ['detached acme/db (no veth was attached), released']);
  // attach with a missing netns: the server's validation comes back as a ValidationError
  await t.throwsAsync(attachCommand({ tenant: 'acme', name: 'db', labels: ['app=db'], netns: join(dir, 'nope'), socket: path, out: () => undefined }), {
    instanceOf: ValidationError,
    message: /netns: .* does not exist/,
  });
  t.deepEqual(allocator.created, []);
});

test('label and netns argument helpers', (t) => {
  t.deepEqual(parseLabelArgs(['app=web', 'tier=front', 'x=']), { app: 'web', tier: 'front', x: '' });
  t.throws(() => parseLabelArgs(['novalue']), { message: /key=value/ });
  t.throws(() => parseLabelArgs(['a=b c']), { message: /invalid label value/ });
  t.is(resolveNetnsArg('1234'), '/proc/1234/ns/net');
  t.is(resolveNetnsArg('ctr1'), '/run/netns/ctr1');
  t.is(resolveNetnsArg('/proc/1/ns/net'), '/proc/1/ns/net');
});

test('hostClientAllocator: address without prefix; releasing an unknown workload is fine', async (t) => {
  const calls: string[] = [];
  const a = hostClientAllocator({
    async createWorkload(tenant, name, labels) {
      calls.push(`create ${tenant}/${name} ${JSON.stringify(labels)}`);
      return { address: '10.20.0.9/32' };
    },
    async deleteWorkload(tenant, name) {
      calls.push(`delete ${tenant}/${name}`);
      if (name === 'gone') throw new NotFoundError('no such workload');
      if (name === 'boom') throw new Error('boom');
    },
  });
  t.deepEqual(await a.create('acme', 'web', { app: 'web' }), { address: '10.20.0.9' });
  await a.release('acme', 'web');
  await a.release('acme', 'gone');
  await t.throwsAsync(a.release('acme', 'boom'), { message: 'boom' });
  t.deepEqual(calls, ['create acme/web {"app":"web"}', 'delete acme/web', 'delete acme/gone', 'delete acme/boom']);
});
