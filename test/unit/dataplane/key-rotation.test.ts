/**
 * WireGuard key rotation (src/shared/dataplane/key-rotation.ts): the decision
 * table, a whole rotation step by step (the current key is never registered
 * again while the next one waits), the key files, the handshake kicks, and
 * `netwall-agent rotate-key` against an agent socket in a temp directory.
 */
import test from 'ava';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  currentKeyFile,
  keyDecision,
  nextKeyFile,
  pendingNextKey,
  promoteNextKey,
  settleTenantKeys,
  watchNextKeys,
  writeNextKey,
  type KeyState,
} from '../../../src/shared/dataplane/key-rotation.js';
import { Reconciler } from '../../../src/shared/dataplane/reconcile.js';
import { desiredWireguard, ensureTenantKey, handshakeKicks, publicKeyOfFile, type ObservedInterface, type WireguardChange } from '../../../src/shared/dataplane/wireguard.js';
import { nodeFirewall } from '../../../src/node-agent/nftables.js';
import { rotateKeyCommand } from '../../../src/node-agent/rotate-key.js';
import { rotateKey } from '../../../src/shared/dataplane/rotate-key-command.js';
import { startAgentSocket } from '../../../src/node-agent/socket.js';
import { FakeRunner } from '../../../src/shared/runner.js';
import { FakeKernel } from '../node-agent/fake-kernel.js';
import { node, peer, tenant, testKey, twoTenants } from '../node-agent/dataplane-fixtures.js';

const C = 'CURRENT=';
const N = 'NEXT=';
const O = 'OTHER=';

// ------------------------------------------------------------------ decision table

const table: [string, KeyState, { promote: boolean; register: string | null; inUse: boolean }][] = [
  ['never registered, no rotation: register the current key', { registered: null, known: null, current: C, next: null }, { promote: false, register: C, inUse: true }],
  ['registered, no rotation: nothing to do', { registered: C, known: C, current: C, next: null }, { promote: false, register: null, inUse: true }],
  ['rotation pending, document names the current key: register the next (as next)', { registered: C, known: C, current: C, next: N }, { promote: false, register: N, inUse: false }],
  ['document names the next key (the peers still have the current): promote, then confirm it in use', { registered: N, known: C, current: C, next: N }, { promote: true, register: N, inUse: true }],
  ['switched, the confirmation lost (the peers still have the old key): confirm again', { registered: N, known: C, current: N, next: null }, { promote: false, register: N, inUse: true }],
  ['switched and confirmed: nothing to do', { registered: N, known: N, current: N, next: null }, { promote: false, register: null, inUse: true }],
  ['document names neither, next pending: register the next (never the current)', { registered: O, known: O, current: C, next: N }, { promote: false, register: N, inUse: false }],
  ['never registered, next pending: register the next', { registered: null, known: null, current: C, next: N }, { promote: false, register: N, inUse: false }],
  ['document names another key, no rotation: register the current in use', { registered: O, known: O, current: C, next: null }, { promote: false, register: C, inUse: true }],
  ['a next key without a current one: promote at once and register it in use', { registered: null, known: null, current: null, next: N }, { promote: true, register: N, inUse: true }],
  ['promoted already (current = next = registered)', { registered: N, known: C, current: N, next: N }, { promote: true, register: N, inUse: true }],
];
for (const [title, state, want] of table) {
  test(`keyDecision: ${title}`, (t) => t.deepEqual(keyDecision(state), want));
}

test("a whole rotation against the coordinator's two steps, with stale and reordered documents: the current key is never registered again, the peers get the next only once it is in use", (t) => {
  // The coordinator's record (store.ts registerKey) and the host's files, stepped through every document the host may see.
  const co: { peers: string; next: string | null } = { peers: C, next: null };
  const register = (key: string, inUse: boolean) => {
    if (!inUse) co.next = key === co.peers ? co.next : key;
    else [co.peers, co.next] = [key, null];
  };
  const doc = () => ({ registered: co.next ?? co.peers, known: co.peers });
  const s: { current: string | null; next: string | null } = { current: C, next: null };
  const registrations: string[] = [];
  const inUse: string[] = [];
  const tick = (d0: { registered: string | null; known: string | null }, delivered = true) => {
    const d = keyDecision({ ...d0, current: s.current, next: s.next });
    if (d.promote) [s.current, s.next] = [s.next, null];
    inUse.push(s.current!); // the reconcile applies the current key
    if (d.register !== null) {
      registrations.push(`${d.register}${d.inUse ? ' in use' : ' next'}`);
      if (delivered) register(d.register, d.inUse);
    }
    t.true(co.peers === s.current || co.peers === C, 'the peers never get a key before the host uses it');
  };
  tick(doc()); // idle
  t.deepEqual(registrations, []);
  s.next = N; // rotate-key
  const stale = doc();
  tick(doc()); // the document still names the current key → register N as next
  t.deepEqual(co, { peers: C, next: N }, 'the peers keep the current key');
  tick(stale); // a tick before the new document arrived (stale): N as next again, not C
  t.deepEqual(co, { peers: C, next: N }, 'a repeated next registration gives the peers nothing');
  t.is(s.current, C, 'the current key stays in use until the document names the next');
  tick(doc(), false); // the new document → promote, apply, confirm (lost on the way)
  t.is(s.current, N);
  t.true(s.next === null, 'no next key left');
  t.deepEqual(co, { peers: C, next: N }, 'the confirmation was lost: the peers still have the current key');
  tick(doc()); // the same document again: confirm again
  t.deepEqual(co, { peers: N, next: null }, 'confirmed: the peers get the new key');
  tick(doc()); // idle again
  tick({ registered: C, known: C }); // an old cached document (agent restart without the coordinator): N, the key in use
  t.deepEqual(registrations, [`${N} next`, `${N} next`, `${N} in use`, `${N} in use`, `${N} in use`]);
  t.false(registrations.some((r) => r.startsWith(C)));
  t.deepEqual(inUse, [C, C, C, N, N, N, N]);
});

// ------------------------------------------------------------------ files

function tempDir(t: { teardown: (f: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'netwall-rotate-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('writeNextKey: 0600 next key beside the current one; refuses a tenant without a key', (t) => {
  const dir = tempDir(t);
  t.throws(() => writeNextKey(dir, 'acme'), { message: /no WireGuard key for tenant "acme"/ });
  const cur = ensureTenantKey(dir, 'acme');
  const { publicKey, file } = writeNextKey(dir, 'acme');
  t.is(file, nextKeyFile(dir, 'acme'));
  t.is(statSync(file).mode & 0o777, 0o600);
  t.is(publicKeyOfFile(file), publicKey);
  t.not(publicKey, cur.publicKey);
  t.is(pendingNextKey(dir, 'acme'), publicKey);
  t.is(ensureTenantKey(dir, 'acme').publicKey, cur.publicKey, 'the current key is untouched');
});

test('promoteNextKey: the next key becomes the current one (0600), the old private key is gone', (t) => {
  const dir = tempDir(t);
  const first = ensureTenantKey(dir, 'acme');
  const oldPrivate = readFileSync(first.privateKeyFile, 'utf8');
  const { publicKey } = writeNextKey(dir, 'acme');
  t.is(promoteNextKey(dir, 'acme'), publicKey);
  t.false(existsSync(nextKeyFile(dir, 'acme')));
  t.is(publicKeyOfFile(currentKeyFile(dir, 'acme')), publicKey);
  t.is(statSync(currentKeyFile(dir, 'acme')).mode & 0o777, 0o600);
  t.false(readFileSync(currentKeyFile(dir, 'acme'), 'utf8') === oldPrivate);
  t.is(promoteNextKey(dir, 'acme'), null, 'nothing pending: nothing to promote');
});

test('settleTenantKeys: register the next key, then promote when the document names it', (t) => {
  const dir = tempDir(t);
  const log: string[] = [];
  const doc = node([tenant('acme', 1)]);
  // First document: no key registered yet → the current key (created now).
  const first = settleTenantKeys(dir, doc, (l) => log.push(l));
  const current = ensureTenantKey(dir, 'acme').publicKey;
  t.deepEqual(first, [{ tenant: 'acme', publicKey: current, inUse: true }]);
  doc.tenants[0]!.publicKey = current;
  t.deepEqual(settleTenantKeys(dir, doc, (l) => log.push(l)), []);
  // rotate-key
  const { publicKey: next } = writeNextKey(dir, 'acme');
  t.deepEqual(settleTenantKeys(dir, doc, (l) => log.push(l)), [{ tenant: 'acme', publicKey: next, inUse: false }]);
  t.is(ensureTenantKey(dir, 'acme').publicKey, current, 'still the current key until the document names the next');
  doc.tenants[0]!.publicKey = next; // held as the next key: the peers still have the current one
  doc.tenants[0]!.peerKey = current;
  t.deepEqual(settleTenantKeys(dir, doc, (l) => log.push(l)), [{ tenant: 'acme', publicKey: next, inUse: true }], 'promoted, then confirmed in use');
  t.is(ensureTenantKey(dir, 'acme').publicKey, next, 'promoted');
  doc.tenants[0]!.peerKey = next;
  t.deepEqual(settleTenantKeys(dir, doc, (l) => log.push(l)), [], 'confirmed: nothing more');
  t.is(pendingNextKey(dir, 'acme'), null);
  t.true(log.some((l) => l.includes(`switching to it`) && l.includes(next)));
  t.false(log.some((l) => /[A-Za-z0-9+/]{43}=/.test(l) && !l.includes(next)), 'no other key (and never a private one) is logged');
});

// ------------------------------------------------------------------ handshake kicks

const iface = (peers: ReturnType<typeof peer>[], keepalive: number | null = null) =>
  desiredWireguard({ ...node([tenant('acme', 1, { peers })]), settings: { mtu: 1420, statusIntervalSeconds: 30, keepaliveSeconds: keepalive } }, () => ({
    privateKeyFile: '/state/wg-acme.key',
    publicKey: testKey(1),
  }));

const observed = (endpoints: Record<string, string | null>, publicKey: string | null = testKey(9)): ObservedInterface[] => [
  {
    iface: 'nw-acme',
    linkKind: 'tun',
    mtu: 1420,
    up: true,
    addresses: ['10.1.1.1/32'],
    wg: {
      publicKey,
      listenPort: 51821,
      fwmark: 'off',
      peers: Object.entries(endpoints).map(([k, endpoint]) => ({ publicKey: k, endpoint, allowedIps: [], latestHandshake: 0, rxBytes: 0, txBytes: 0, keepalive: null })),
    },
  },
];

const rotation = (old: string | null): WireguardChange => ({
  kind: 'wg-config',
  op: 'update',
  iface: 'nw-acme',
  old: old === null ? null : { publicKey: old, listenPort: 51821 },
  new: { publicKey: testKey(1), listenPort: 51821, privateKeyFile: '/state/wg-acme.key' },
});

test('handshakeKicks: our key changed → every peer with an endpoint (known or roamed), keepalive back to its value', (t) => {
  const d = iface([peer('node2', 2, ['10.1.2.0/24']), peer('gw', 3, ['10.1.255.1/32'], { endpoint: null }), peer('node3', 4, ['10.1.3.0/24'], { endpoint: null })]);
  const kicks = handshakeKicks([rotation(testKey(9))], d, observed({ [testKey(2)]: '192.0.2.2:51820', [testKey(3)]: '198.51.100.9:4000', [testKey(4)]: null }));
  t.deepEqual(kicks, [
    [
      'wg', 'set', 'nw-acme',
      'peer', testKey(2), 'persistent-keepalive', '1', 'peer', testKey(2), 'persistent-keepalive', 'off',
      'peer', testKey(3), 'persistent-keepalive', '1', 'peer', testKey(3), 'persistent-keepalive', 'off',
    ],
  ]);
  // With keepalive on (behind NAT): off, then the value.
  const nat = iface([peer('node2', 2, ['10.1.2.0/24'])], 25);
  t.deepEqual(handshakeKicks([rotation(testKey(9))], nat, observed({}))[0]?.slice(3), ['peer', testKey(2), 'persistent-keepalive', 'off', 'peer', testKey(2), 'persistent-keepalive', '25']);
});

test('handshakeKicks: a new interface (no old key) kicks only added peers; no change kicks nothing', (t) => {
  const d = iface([peer('node2', 2, ['10.1.2.0/24']), peer('node3', 4, ['10.1.3.0/24'])]);
  t.deepEqual(handshakeKicks([rotation(null)], d, []), []);
  t.deepEqual(handshakeKicks([], d, observed({})), []);
  const add: WireguardChange = { kind: 'peer-set', op: 'add', iface: 'nw-acme', old: null, new: d[0]!.peers[1]! };
  const update: WireguardChange = { kind: 'peer-set', op: 'update', iface: 'nw-acme', old: null, new: d[0]!.peers[0]! };
  t.deepEqual(handshakeKicks([add, update], d, []), [['wg', 'set', 'nw-acme', 'peer', testKey(4), 'persistent-keepalive', '1', 'peer', testKey(4), 'persistent-keepalive', 'off']]);
});

test('Reconciler with kickHandshakes: a rotated key is applied and every peer kicked; keepalives stay as desired; the next tick is quiet', async (t) => {
  const files = new Map([
    ['/state/wg-acme.key', testKey(101)],
    ['/state/wg-acme.rotated', testKey(111)],
    ['/state/wg-beta-corp.key', testKey(102)],
  ]);
  const kernel = new FakeKernel(files);
  const log: string[] = [];
  let acmeFile = '/state/wg-acme.key';
  const rec = new Reconciler({
    firewall: nodeFirewall(),
    runner: kernel,
    log: (l) => log.push(l),
    keyFileFor: (tn) => (tn === 'acme' ? acmeFile : `/state/wg-${tn}.key`),
    readPublicKey: (f) => files.get(f) ?? 'missing',
    kickHandshakes: true,
  });
  const doc = twoTenants();
  t.deepEqual((await rec.reconcile(doc)).errors, []);
  const peersBefore = JSON.stringify([...kernel.links.get('nw-acme')!.peers.values()].map((p) => [p.publicKey, p.keepalive]));
  log.length = 0;
  acmeFile = '/state/wg-acme.rotated';
  const r = await rec.reconcile(doc);
  t.deepEqual(r.errors, []);
  t.deepEqual(r.changes.map((c) => c.kind), ['wg-config']);
  t.is(kernel.links.get('nw-acme')!.publicKey, testKey(111));
  t.deepEqual(log, [
    // The key only: giving wireguard-go its listen port again would reopen its UDP socket mid-handshake.
    '[#] wg set nw-acme private-key /state/wg-acme.rotated',
    // node2 has an endpoint (keepalive 25 in this document); gateway1 has none and never roamed here.
    `[#] wg set nw-acme peer ${testKey(2)} persistent-keepalive off peer ${testKey(2)} persistent-keepalive 25`,
  ]);
  t.is(JSON.stringify([...kernel.links.get('nw-acme')!.peers.values()].map((p) => [p.publicKey, p.keepalive])), peersBefore);
  log.length = 0;
  t.deepEqual((await rec.reconcile(doc)).changes, []);
  t.deepEqual(log, [], 'nothing changed, nothing kicked');
  // A peer's new key (its rotation): added, kicked, the old one removed.
  const rotatedPeer = twoTenants();
  rotatedPeer.tenants[0]!.peers[0]!.publicKey = testKey(12);
  await rec.reconcile(rotatedPeer);
  t.true(log.some((l) => l.startsWith(`[#] wg set nw-acme peer ${testKey(12)} persistent-keepalive off peer ${testKey(12)} persistent-keepalive 25`)), log.join('\n'));
  t.false(kernel.links.get('nw-acme')!.peers.has(testKey(2)));
});

// ------------------------------------------------------------------ rotate-key

test('rotate-key: writes the next key, asks the agent to reconcile, waits for the switch', async (t) => {
  const dir = tempDir(t);
  ensureTenantKey(dir, 'acme');
  let calls = 0;
  const sock = await startAgentSocket({
    path: join(dir, 'run', 'agent.sock'),
    allocator: { create: () => Promise.reject(new Error('unused')), release: () => Promise.resolve() },
    runner: new FakeRunner(),
    // The agent registers the key; the coordinator's document names it a moment later: promote.
    onReconcile: () => {
      calls++;
      setTimeout(() => promoteNextKey(dir, 'acme'), 150);
    },
  });
  t.teardown(() => sock.close());
  const out: string[] = [];
  const r = await rotateKeyCommand({ stateDir: dir, tenant: 'acme', socket: sock.path, waitSeconds: 5, pollMs: 20, out: (l) => out.push(l) });
  t.is(calls, 1);
  t.true(r.agentNotified);
  t.true(r.switched);
  t.is(ensureTenantKey(dir, 'acme').publicKey, r.publicKey);
  t.regex(out.join('\n'), /switched to/);
  t.false(out.join('\n').includes(readFileSync(currentKeyFile(dir, 'acme'), 'utf8').trim()), 'the private key is never printed');
});

test('rotate-key: no agent → the key waits for it; a bad tenant name is refused before any file is touched', async (t) => {
  const dir = tempDir(t);
  ensureTenantKey(dir, 'acme');
  const out: string[] = [];
  const r = await rotateKeyCommand({ stateDir: dir, tenant: 'acme', socket: join(dir, 'none.sock'), out: (l) => out.push(l) });
  t.false(r.agentNotified);
  t.false(r.switched);
  t.is(pendingNextKey(dir, 'acme'), r.publicKey);
  t.regex(out.join('\n'), /did not answer/);
  await t.throwsAsync(rotateKeyCommand({ stateDir: dir, tenant: '../acme', socket: join(dir, 'none.sock'), out: () => {} }), { message: /--tenant/ });
  await t.throwsAsync(rotateKeyCommand({ stateDir: dir, tenant: 'acme', socket: join(dir, 'none.sock'), waitSeconds: 0.2, pollMs: 20, out: () => {} }), { message: /not switched/ });
});

test('rotate-key without a way to notify (the gateway): says when the daemon picks the key up, waits for its switch', async (t) => {
  const dir = tempDir(t);
  ensureTenantKey(dir, 'globex');
  const out: string[] = [];
  // The daemon's next tick registers the key; the coordinator's document names it a moment later: promote.
  const timer = setTimeout(() => promoteNextKey(dir, 'globex'), 150);
  t.teardown(() => clearTimeout(timer));
  const r = await rotateKey({ stateDir: dir, tenant: 'globex', daemon: 'the gateway', nextTick: 'at its next tick', waitSeconds: 5, pollMs: 20, out: (l) => out.push(l) });
  t.false(r.notified);
  t.true(r.switched);
  t.is(ensureTenantKey(dir, 'globex').publicKey, r.publicKey);
  t.deepEqual(out, [
    `tenant globex: next WireGuard key ${r.publicKey} written; the gateway registers it and switches once the coordinator holds it (the peers get it after the switch)`,
    'the gateway registers the key at its next tick',
    `tenant globex: switched to ${r.publicKey}`,
  ]);
});

test('watchNextKeys: a rotate-key run (the next key written) is seen at once; other files are not', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nw-watch-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  ensureTenantKey(dir, 'acme');
  const seen: string[] = [];
  const w = watchNextKeys(dir, (tenant) => seen.push(tenant));
  t.truthy(w);
  t.teardown(() => w?.close());
  ensureTenantKey(dir, 'globex'); // a current key, the cache, the firewall memory: not a rotation
  writeFileSync(join(dir, 'desired.json'), '{}');
  await new Promise((r) => setTimeout(r, 300));
  t.deepEqual(seen, []);
  const t0 = performance.now();
  writeNextKey(dir, 'acme');
  while (seen.length === 0 && performance.now() - t0 < 3000) await new Promise((r) => setTimeout(r, 10));
  t.true(seen.length > 0 && seen.every((x) => x === 'acme'), `seen: ${JSON.stringify(seen)}`);
  t.is(watchNextKeys(join(dir, 'missing'), () => {}), null, 'an absent directory: null (the caller falls back to its interval)');
});
