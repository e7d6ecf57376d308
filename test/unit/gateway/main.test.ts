/** netwall-gateway's command line: help, and bad flags as one readable line with exit 2 (nothing started). */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pendingNextKey } from '../../../src/shared/dataplane/key-rotation.js';
import { ensureTenantKey } from '../../../src/shared/dataplane/wireguard.js';

const MAIN = join(import.meta.dirname, '../../../src/gateway/main.ts');
const gateway = (...args: string[]) =>
  spawnSync(process.execPath, ['--import', 'tsx', MAIN, ...args], { encoding: 'utf8', timeout: 30_000 });

test('--help and help print the usage, exit 0', (t) => {
  for (const h of ['--help', '-h', 'help']) {
    const r = gateway(h);
    t.is(r.status, 0, h);
    t.regex(r.stdout, /^usage: netwall-gateway/);
  }
});

const stateDir = mkdtempSync(join(tmpdir(), 'nwt-gw-main-'));
const bad: [string[], RegExp][] = [
  [['run', '--state-dir', stateDir, '--limit', 'bogus=1'], /--limit: unknown limit "bogus"/],
  [['run', '--state-dir', stateDir, '--limit', 'ratePerSecond=-3'], /--limit ratePerSecond: "-3" is not a non-negative number/],
  [['run', '--state-dir', stateDir, '--listen', '0.0.0.0.1'], /--listen: "0\.0\.0\.0\.1" is not an IPv4 address/],
  [['run', '--state-dir', stateDir, '--http-port', '70000'], /--http-port: "70000" is not a port/],
  [['run', '--state-dir', stateDir, '--admin', 'example.com:80'], /--admin: "example\.com:80" is not IP:PORT or off/],
  [['run', '--state-dir', stateDir, '--admin-allow-tcp', '22,x'], /--admin-allow-tcp: "x" is not a port/],
  [['run', '--state-dir', stateDir, '--wireguard', 'maybe'], /--wireguard: auto, kernel or userspace/],
  [['run', '--bogus'], /Unknown option '--bogus'/],
  [['enroll', '--state-dir', stateDir], /--coordinator is required/],
  [['frobnicate'], /unknown command "frobnicate"/],
  [['rotate-key', '--state-dir', stateDir], /--tenant is required/],
  [['rotate-key', '--state-dir', stateDir, '--tenant', '../acme'], /--tenant: lowercase letters, digits and '-'/],
  [['rotate-key', '--state-dir', stateDir, '--tenant', 'acme', '--wait', '0'], /--wait: 1-3600 seconds/],
  [['rotate-key', '--state-dir', stateDir, '--tenant', 'acme', '--wait', 'soon'], /--wait: 1-3600 seconds/],
  [['rotate-key', '--state-dir', stateDir, '--tenant'], /argument missing/],
];
for (const [args, message] of bad) {
  test(`bad input: ${args.filter((a) => a !== stateDir).join(' ')} → exit 2, one line`, (t) => {
    const r = gateway(...args);
    t.is(r.status, 2, r.stderr);
    t.regex(r.stderr, message);
    t.is(r.stderr.trim().split('\n').length, 1, 'one line');
  });
}

test('rotate-key for a tenant this gateway does not serve: exit 1, one line, no key written', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nwt-gw-rotate-'));
  const r = gateway('rotate-key', '--state-dir', dir, '--tenant', 'acme');
  t.is(r.status, 1, r.stderr);
  t.regex(r.stderr, /no WireGuard key for tenant "acme"/);
  t.is(r.stderr.trim().split('\n').length, 1);
  t.deepEqual(readdirSync(dir), []);
});

test('rotate-key writes the next key and says the running gateway picks it up at once (it watches its state directory; no control socket)', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nwt-gw-rotate-'));
  const current = ensureTenantKey(dir, 'globex').publicKey;
  const r = gateway('rotate-key', '--state-dir', dir, '--tenant', 'globex');
  t.is(r.status, 0, r.stderr);
  const next = /next WireGuard key (\S+) written/.exec(r.stdout)?.[1];
  t.regex(next ?? '', /^[A-Za-z0-9+/]{43}=$/);
  t.is(pendingNextKey(dir, 'globex'), next ?? null);
  t.is(ensureTenantKey(dir, 'globex').publicKey, current, 'the current key stays until the coordinator holds the next');
  t.regex(r.stdout, /the gateway registers the key at once \(it watches its state directory\)/);
});

test('run with a state directory that holds no identity: exit 1, one line', (t) => {
  const r = gateway('run', '--state-dir', mkdtempSync(join(tmpdir(), 'nwt-gw-empty-')), '--admin', 'off', '--http-port', 'off', '--https-port', 'off');
  t.is(r.status, 1, r.stderr);
  t.is(r.stderr.trim().split('\n').length, 1);
});
