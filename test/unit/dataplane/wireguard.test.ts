import test from 'ava';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  WireguardLinks,
  desiredWireguard,
  ensureTenantKey,
  parseWgDump,
  planWireguard,
  wireguardCommand,
  type DesiredInterface,
  type ObservedInterface,
} from '../../../src/shared/dataplane/wireguard.js';
import { WireguardGoSupervisor, type ChildHandle, type Spawner } from '../../../src/shared/dataplane/wgproc.js';
import { FakeRunner } from '../../../src/shared/runner.js';
import { testKey, twoTenants } from '../node-agent/dataplane-fixtures.js';

const DUMP = [
  'PRIVATEKEY=\tPUBKEY=\t51821\toff',
  `${testKey(2)}\t(none)\t192.0.2.2:51820\t10.1.2.1/32,10.1.2.0/24\t1700000000\t100\t200\toff`,
  `${testKey(3)}\t(none)\t(none)\t(none)\t0\t0\t0\t25`,
  '',
].join('\n');

test('parseWgDump reads the interface line and peers, and keeps no private key', (t) => {
  const dump = parseWgDump(DUMP);
  t.is(dump.publicKey, 'PUBKEY=');
  t.is(dump.listenPort, 51821);
  t.false(JSON.stringify(dump).includes('PRIVATEKEY'));
  t.deepEqual(dump.peers[0], {
    publicKey: testKey(2),
    endpoint: '192.0.2.2:51820',
    allowedIps: ['10.1.2.0/24', '10.1.2.1/32'],
    latestHandshake: 1700000000,
    rxBytes: 100,
    txBytes: 200,
    keepalive: null,
  });
  t.is(dump.peers[1]?.endpoint, null);
  t.deepEqual(dump.peers[1]?.allowedIps, []);
  t.is(dump.peers[1]?.keepalive, 25);
});

const keyFor = (tenant: string) => ({ privateKeyFile: `/state/wg-${tenant}.key`, publicKey: `PUB-${tenant}` });

/** What the kernel would show once `d` is fully applied. */
function observedFrom(d: DesiredInterface): ObservedInterface {
  return {
    iface: d.iface,
    linkKind: 'tun',
    mtu: d.mtu,
    up: true,
    addresses: [d.address],
    wg: {
      publicKey: d.publicKey,
      listenPort: d.listenPort,
      fwmark: 'off',
      peers: d.peers.map((p) => ({ ...p, endpoint: p.endpoint ?? '198.51.100.7:4000', latestHandshake: 1700000000, rxBytes: 1, txBytes: 1 })),
    },
  };
}

test('a new interface: create, key and port, mtu, address, up, every peer', (t) => {
  const desired = desiredWireguard(twoTenants(), keyFor);
  const changes = planWireguard(desired.slice(0, 1), []);
  t.deepEqual(
    changes.map((c) => c.kind),
    ['link-add', 'wg-config', 'mtu', 'addr-add', 'link-up', 'peer-set', 'peer-set'],
  );
  const cmds = changes.map(wireguardCommand).filter((c) => c !== null).map((c) => c.join(' '));
  t.deepEqual(cmds.slice(0, 4), [
    'wg set nw-acme listen-port 51821 private-key /state/wg-acme.key',
    'ip link set dev nw-acme mtu 1420',
    'ip -4 address add 10.1.1.1/32 dev nw-acme',
    'ip link set dev nw-acme up',
  ]);
  t.is(cmds[4], `wg set nw-acme peer ${testKey(2)} endpoint 192.0.2.2:51820 persistent-keepalive 25 allowed-ips 10.1.2.0/24,10.1.2.1/32`);
  t.false(cmds.join('\n').includes('PRIVATE'), 'the private key is never on argv');
});

test('up to date: empty plan, even when a peer with no desired endpoint has roamed', (t) => {
  const desired = desiredWireguard(twoTenants(), keyFor);
  t.deepEqual(planWireguard(desired, desired.map(observedFrom)), []);
});

test('one peer changes: only that peer is touched, with only what changed', (t) => {
  const desired = desiredWireguard(twoTenants(), keyFor);
  const observed = desired.map(observedFrom);
  const doc = twoTenants();
  doc.tenants[0]!.peers[0]!.allowedIps.push('10.1.3.0/24');
  const changes = planWireguard(desiredWireguard(doc, keyFor), observed);
  t.is(changes.length, 1);
  t.deepEqual(wireguardCommand(changes[0]!), ['wg', 'set', 'nw-acme', 'peer', testKey(2), 'allowed-ips', '10.1.2.0/24,10.1.2.1/32,10.1.3.0/24']);
});

test('peer removed, stray address removed, stale interface deleted; nothing recreated', (t) => {
  const desired = desiredWireguard(twoTenants(), keyFor);
  const observed = desired.map(observedFrom);
  observed[0]!.addresses.push('10.1.9.9/32');
  observed.push({ ...observed[1]!, iface: 'nw-old' });
  const doc = twoTenants();
  doc.tenants[0]!.peers = doc.tenants[0]!.peers.filter((p) => p.host !== 'gateway1');
  const changes = planWireguard(desiredWireguard(doc, keyFor), observed);
  t.deepEqual(
    changes.map((c) => `${c.kind} ${c.iface}`),
    ['peer-del nw-acme', 'addr-del nw-acme', 'link-del nw-old'],
  );
  t.deepEqual(wireguardCommand(changes[0]!), ['wg', 'set', 'nw-acme', 'peer', testKey(3), 'remove']);
});

test('a changed key or port reconfigures in place; a link wg cannot talk to is recreated', (t) => {
  const desired = desiredWireguard(twoTenants(), keyFor);
  const observed = desired.map(observedFrom);
  observed[0]!.wg!.listenPort = 1;
  const portOnly = planWireguard(desired, observed);
  t.deepEqual(portOnly.map((c) => c.kind), ['wg-config']);
  t.deepEqual(wireguardCommand(portOnly[0]!), ['wg', 'set', 'nw-acme', 'listen-port', '51821'], 'the port only: the key is as it was');
  observed[0]!.wg!.listenPort = 51821;
  observed[0]!.wg!.publicKey = testKey(99);
  // Never the port when it did not change: wireguard-go reopens its UDP socket for any listen-port, dropping what arrives meanwhile.
  t.deepEqual(wireguardCommand(planWireguard(desired, observed)[0]!), ['wg', 'set', 'nw-acme', 'private-key', '/state/wg-acme.key'], 'the key only');
  observed[0]!.wg = null;
  t.deepEqual(planWireguard(desired, observed)[0]?.kind, 'link-add');
});

test('ensureTenantKey writes a 0600 key file once and derives the public key', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nwt-key-'));
  try {
    const a = ensureTenantKey(dir, 'acme');
    const b = ensureTenantKey(dir, 'acme');
    t.deepEqual(a, b);
    t.is(statSync(a.privateKeyFile).mode & 0o777, 0o600);
    t.regex(a.publicKey, /^[A-Za-z0-9+/]{43}=$/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

class FakeSpawner implements Spawner {
  readonly spawned: string[][] = [];
  readonly killed: string[] = [];
  private ends: ((code: number | string) => void)[] = [];
  spawn(argv: readonly string[], env: Record<string, string>): ChildHandle {
    this.spawned.push([`WG_PROCESS_FOREGROUND=${env.WG_PROCESS_FOREGROUND}`, ...argv]);
    let end: (code: number | string) => void = () => {};
    const exited = new Promise<number | string>((resolve) => (end = resolve));
    this.ends.push(end);
    return {
      pid: 4242,
      exited,
      kill: (signal) => {
        this.killed.push(signal ?? 'SIGTERM');
        end(signal ?? 'SIGTERM');
      },
    };
  }
  crash(i = 0): void {
    this.ends[i]?.(1);
  }
}

test('auto mode: kernel WireGuard missing → wireguard-go, supervised by pid, stopped by pid', async (t) => {
  const spawner = new FakeSpawner();
  const exits: string[] = [];
  const supervisor = new WireguardGoSupervisor({ spawner, onExit: (iface) => exits.push(iface) });
  const runner = new FakeRunner()
    .expect(['ip', 'link', 'add', 'nw-acme', 'type', 'wireguard'], { exitCode: 2, stderr: 'Error: Unknown device type.' })
    .expect(['wg', 'show', 'nw-acme', 'listen-port'], { exitCode: 1 })
    .expect(['wg', 'show', 'nw-acme', 'listen-port'], { stdout: '0\n' })
    .expect(['wg', 'show', 'nw-beta', 'listen-port'], { stdout: '0\n' })
    .expect(['ip', 'link', 'show', 'dev', 'nw-acme'], { exitCode: 1 });
  const log: string[] = [];
  const links = new WireguardLinks(runner, (l) => log.push(l), supervisor);
  await links.create('nw-acme');
  await links.create('nw-beta'); // remembers: no second kernel attempt
  t.deepEqual(spawner.spawned, [
    ['WG_PROCESS_FOREGROUND=1', 'wireguard-go', 'nw-acme'],
    ['WG_PROCESS_FOREGROUND=1', 'wireguard-go', 'nw-beta'],
  ]);
  t.is(supervisor.pid('nw-acme'), 4242);
  spawner.crash(1);
  await new Promise((r) => setImmediate(r));
  t.deepEqual(exits, ['nw-beta'], 'a child that dies on its own is reported');
  t.false(supervisor.has('nw-beta'));
  await links.remove('nw-acme');
  t.deepEqual(spawner.killed, ['SIGTERM']);
  t.deepEqual(exits, ['nw-beta'], 'a child we stop is not reported as a crash');
  t.deepEqual(runner.pending(), []);
  t.deepEqual(log, [
    '[#] ip link add nw-acme type wireguard',
    '[#] wireguard-go nw-acme',
    '[#] wireguard-go nw-beta',
    '[#] kill 4242 (wireguard-go nw-acme)',
  ]);
});

test('kernel mode fails loudly instead of falling back', async (t) => {
  const runner = new FakeRunner().expect(['ip', 'link', 'add', 'nw-acme', 'type', 'wireguard'], { exitCode: 2, stderr: 'Unknown device type' });
  const links = new WireguardLinks(runner, () => {}, new WireguardGoSupervisor({ spawner: new FakeSpawner() }), 'kernel');
  await t.throwsAsync(links.create('nw-acme'), { message: /Unknown device type/ });
});
