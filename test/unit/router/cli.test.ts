/**
 * The standalone router client (src/node-agent/router-client-main.ts) run as a
 * process, as the agent (or an operator inside an image) would: it serves
 * through the gateway, holds no listening socket at all, and exits cleanly on
 * SIGTERM.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CLIENT, entry, exposureOf, httpGet, startApp, startGateway, waitFor } from './helpers.js';

const MAIN = fileURLToPath(new URL('../../../src/node-agent/router-client-main.ts', import.meta.url));

/** Inodes of this process's sockets that are in LISTEN state (TCP, v4 and v6), from /proc. */
function listeningSockets(pid: number): string[] {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]!);
    } catch {
      /* fd closed meanwhile */
    }
  }
  const out: string[] = [];
  for (const file of ['tcp', 'tcp6']) {
    for (const line of readFileSync(`/proc/${pid}/net/${file}`, 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f[3] === '0A' && inodes.has(f[9]!)) out.push(`${file} ${f[1]}`);
    }
  }
  return out;
}

function socketCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).filter((fd) => {
    try {
      return readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:');
    } catch {
      return false;
    }
  }).length;
}

test('router-client-main: serves through two gateways, listens on nothing, exits 0 on SIGTERM', async (t) => {
  const e = entry('acme', 'web', 'web-1');
  const exp = exposureOf('acme', 'web', [e]);
  const gw1 = await startGateway(t, 'gw1', [exp]);
  const gw2 = await startGateway(t, 'gw2', [exp]);
  const app = await startApp(t, 'A');
  const dir = mkdtempSync(join(tmpdir(), 'nw-rc-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'key'), `${e.keys.secretKey}\n`, { mode: 0o600 });
  writeFileSync(join(dir, 'credential.json'), JSON.stringify(e.credential), { mode: 0o600 });

  const proc = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      MAIN,
      '--gateway',
      `gw1@127.0.0.1:${gw1.port}`,
      '--gateway',
      `127.0.0.1:${gw2.port}`, // unpinned: any gateway name accepted
      '--key',
      join(dir, 'key'),
      '--credential',
      join(dir, 'credential.json'),
      '--target',
      `${app.target.host}:${app.target.port}`,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  proc.stderr.on('data', (d: Buffer) => (stderr += d));
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  t.teardown(() => void proc.kill('SIGKILL'));

  await waitFor(() => gw1.server.liveCount('acme', 'web') === 1 && gw2.server.liveCount('acme', 'web') === 1, 15_000, `sessions (${stderr})`);
  t.is((await httpGet(await gw1.server.open(exp, CLIENT), '/1')).body, 'A /1');
  t.is((await httpGet(await gw2.server.open(exp, CLIENT), '/2')).body, 'A /2');

  // Every socket it holds is one it dialled: none is listening.
  t.true(socketCount(proc.pid!) >= 2);
  t.deepEqual(listeningSockets(proc.pid!), []);
  // The check itself works: this test process does listen (the gateways and the app).
  t.true(listeningSockets(process.pid).length >= 3);

  proc.kill('SIGTERM');
  t.is(await exited, 0);
  await waitFor(() => gw1.server.liveCount('acme', 'web') === 0 && gw2.server.liveCount('acme', 'web') === 0);
  t.regex(stderr, /router-client acme\/web: serving 127\.0\.0\.1:\d+ through gw1@127\.0\.0\.1:\d+/);
  t.regex(stderr, /SIGTERM: closing/);
});

test('router-client-main: a key that does not match the credential is a one-line error, exit 1; bad flags exit 2', async (t) => {
  const e = entry('acme', 'web', 'web-1');
  const other = entry('acme', 'web', 'web-2');
  const dir = mkdtempSync(join(tmpdir(), 'nw-rc-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'key'), JSON.stringify({ secretKey: other.keys.secretKey }));
  writeFileSync(join(dir, 'credential.json'), JSON.stringify(e.credential));
  const run = (args: string[]) =>
    new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const p = spawn(process.execPath, ['--import', 'tsx', MAIN, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      p.stderr.on('data', (d: Buffer) => (stderr += d));
      p.on('exit', (code) => resolve({ code, stderr }));
    });
  const mismatch = await run(['--gateway', '127.0.0.1:1', '--key', join(dir, 'key'), '--credential', join(dir, 'credential.json'), '--target', '127.0.0.1:80']);
  t.is(mismatch.code, 1);
  t.regex(mismatch.stderr, /was issued for another key/);
  const usage = await run(['--gateway', '127.0.0.1:1', '--key', join(dir, 'key'), '--credential', join(dir, 'credential.json'), '--target', 'nope']);
  t.is(usage.code, 2);
  t.regex(usage.stderr, /--target nope: expected HOST:PORT/);
});
