import { existsSync, mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { generateSigningKeyPair } from '../../../src/shared/crypto.js';
import type { DesiredState, EntryPoint, RouterCredential } from '../../../src/shared/desired.js';
import { signGrant } from '../../../src/shared/router-protocol.js';
import { NetnsRegistry, TunnelSupervisor } from '../../../src/node-agent/tunnels.js';
import type { ChildHandle, Spawner } from '../../../src/shared/dataplane/wgproc.js';

const coordinator = generateSigningKeyPair();

/** Fake processes: pid → start time while alive; signals recorded. */
class FakeProcesses {
  readonly alive = new Map<number, string>();
  readonly signals: [number, string][] = [];
  startTimeOf = (pid: number): string | null => this.alive.get(pid) ?? null;
  signal = (pid: number, sig: NodeJS.Signals): void => {
    this.signals.push([pid, sig]);
    this.alive.delete(pid);
  };
}

class FakeSpawner implements Spawner {
  spawned: { argv: string[]; child: ChildHandle & { killed?: string; exit: (c: number) => void } }[] = [];
  private pid = 100;
  constructor(private readonly procs = new FakeProcesses()) {}
  spawn(argv: readonly string[]): ChildHandle {
    let exit!: (c: number) => void;
    const pid = this.pid++;
    const procs = this.procs;
    procs.alive.set(pid, `start-${pid}`);
    const exited = new Promise<number | string>((r) => (exit = (c) => (procs.alive.delete(pid), r(c))));
    const child = { pid, exited, exit, killed: undefined as string | undefined, kill(sig?: string) { this.killed = sig ?? 'SIGTERM'; exit(143); } };
    this.spawned.push({ argv: [...argv], child });
    return child;
  }
}

function doc(entryPoints: EntryPoint[]): DesiredState {
  return {
    schema: 1, kind: 'node', host: 'node1', version: 1, settings: { mtu: 1420, statusIntervalSeconds: 30, keepaliveSeconds: null }, exposures: [], networks: ['acme'],
    tenants: [{ tenant: 'acme', iface: 'nw-acme', subnet: '10.240.0.0/20', slice: '10.240.0.64/26', address: '10.240.0.65', listenPort: 51820, publicKey: null, peers: [], workloads: [], firewall: { groups: {}, rules: [] }, entryPoints, egress: { gateway: null, allow: [] } }],
  };
}

const ep = (over: Partial<EntryPoint> = {}): EntryPoint => ({
  exposure: 'web', workload: 'web1', address: '10.240.0.66', port: 8080, mode: 'tunnel',
  gateways: [{ host: 'gateway1', meshAddress: '10.240.0.1', routerPort: 7400 }, { host: 'gateway2', meshAddress: '10.240.0.2', routerPort: 7400 }],
  routerKey: null, credential: null, ...over,
});

function setup(days = 30, shared?: { stateDir: string; procs: FakeProcesses }) {
  const stateDir = shared?.stateDir ?? mkdtempSync(join(tmpdir(), 'netwall-tunnels-'));
  const procs = shared?.procs ?? new FakeProcesses();
  const spawner = new FakeSpawner(procs);
  const registered: string[] = [];
  const sup = new TunnelSupervisor({
    stateDir,
    spawner,
    startTimeOf: procs.startTimeOf,
    signal: procs.signal,
    log: () => {},
    nodePath: '/usr/bin/node',
    mainPath: '/opt/netwall/router-client-main.js',
    netnsOf: (t, w) => (t === 'acme' && w === 'web1' ? '/run/netns/web1' : undefined),
    registerRouterKey: async (tenant, exposure, workload, publicKey): Promise<RouterCredential> => {
      registered.push(publicKey);
      const now = Date.now();
      return signGrant({ v: 1, tenant, exposure, workload, node: 'node1', publicKey, issuedAt: new Date(now).toISOString(), expiresAt: new Date(now + days * 86_400_000).toISOString() }, coordinator.secretKey);
    },
  });
  return { stateDir, spawner, registered, sup, procs };
}

test('a tunnel entry point gets a local key, a registered credential, and a router client in its namespace', async (t) => {
  const { stateDir, spawner, registered, sup } = setup();
  t.deepEqual(await sup.sync(doc([ep()])), []);
  t.is(registered.length, 1);
  const keyFile = join(stateDir, 'router', 'acme.web.web1.key');
  t.is(statSync(keyFile).mode & 0o777, 0o600);
  t.is(statSync(join(stateDir, 'router', 'acme.web.web1.credential.json')).mode & 0o777, 0o600);
  t.deepEqual(spawner.spawned[0]!.argv, [
    'nsenter', '--net=/run/netns/web1', '/usr/bin/node', '/opt/netwall/router-client-main.js',
    '--gateway', 'gateway1@10.240.0.1:7400', '--gateway', 'gateway2@10.240.0.2:7400',
    '--key', keyFile, '--credential', join(stateDir, 'router', 'acme.web.web1.credential.json'), '--target', '127.0.0.1:8080',
  ]);
  // Once the coordinator's document carries our key and its credential, nothing is registered or restarted.
  const credential = signGrant({ v: 1, tenant: 'acme', exposure: 'web', workload: 'web1', node: 'node1', publicKey: registered[0]!, issuedAt: new Date().toISOString(), expiresAt: new Date(Date.now() + 30 * 86_400_000).toISOString() }, coordinator.secretKey);
  await sup.sync(doc([ep({ routerKey: registered[0]!, credential })]));
  t.is(registered.length, 1);
  t.is(spawner.spawned.length, 1);
});

test('a credential about to expire is renewed; a changed gateway set restarts the client; a removed entry point stops it', async (t) => {
  const { spawner, registered, sup } = setup(3);
  await sup.sync(doc([ep()]));
  await sup.sync(doc([ep()])); // the 3-day grant is inside the renewal window
  t.is(registered.length, 2);
  t.is(spawner.spawned.length, 1);
  await sup.sync(doc([ep({ gateways: [{ host: 'gateway2', meshAddress: '10.240.0.2', routerPort: 7400 }] })]));
  t.is(spawner.spawned.length, 2);
  t.is(spawner.spawned[0]!.child.killed, 'SIGTERM');
  await sup.sync(doc([]));
  t.is(spawner.spawned[1]!.child.killed, 'SIGTERM');
});

test('a dead router client is started again on the next sync; mesh entry points and unknown namespaces get none', async (t) => {
  const { spawner, sup } = setup();
  await sup.sync(doc([ep()]));
  spawner.spawned[0]!.child.exit(1);
  await new Promise((r) => setImmediate(r));
  await sup.sync(doc([ep()]));
  t.is(spawner.spawned.length, 2);
  const errors = await sup.sync(doc([ep({ workload: 'ghost' }), ep({ exposure: 'm', mode: 'mesh' })]));
  t.is(errors.length, 1);
  t.regex(errors[0]!, /acme\/web\/ghost: its network namespace is unknown/);
});

test('the namespace registry survives a restart', (t) => {
  const file = join(mkdtempSync(join(tmpdir(), 'netwall-netns-')), 'workloads.json');
  new NetnsRegistry(file).set('acme', 'web1', '/run/netns/x');
  t.is(new NetnsRegistry(file).get('acme', 'web1'), '/run/netns/x');
  new NetnsRegistry(file).set('acme', 'web1', undefined);
  t.is(new NetnsRegistry(file).get('acme', 'web1'), undefined);
});

test('a restarted agent adopts a live router client with the same command line, replaces a changed one, stops an unwanted one', async (t) => {
  const first = setup();
  t.deepEqual(await first.sup.sync(doc([ep()])), []);
  const pid = first.spawner.spawned[0]!.child.pid;
  t.true(statSync(join(first.stateDir, 'router', 'acme.web.web1.pid')).isFile());

  // The agent restarts (SIGKILL: nothing stopped); the router client lives on and is adopted, not duplicated.
  const second = setup(30, { stateDir: first.stateDir, procs: first.procs });
  t.deepEqual(await second.sup.sync(doc([ep({ routerKey: first.registered[0]!, credential: null })])), []);
  t.is(second.spawner.spawned.length, 0, 'no second router client');
  t.deepEqual(second.sup.status(), [{ id: 'acme.web.web1', pid, running: true }]);

  // A pid recorded by an earlier agent but now someone else's process (start time differs) is never signalled.
  first.procs.alive.set(pid, 'another-process');
  const third = setup(30, { stateDir: first.stateDir, procs: first.procs });
  await third.sup.sync(doc([ep()]));
  t.is(third.spawner.spawned.length, 1, 'a new router client instead');
  t.deepEqual(first.procs.signals, [], 'the recycled pid was left alone');

  // The entry point is gone while the agent was away: the next agent stops the recorded client.
  const orphan = third.spawner.spawned[0]!.child.pid;
  const fourth = setup(30, { stateDir: first.stateDir, procs: first.procs });
  t.deepEqual(await fourth.sup.sync(doc([])), []);
  t.deepEqual(first.procs.signals, [[orphan, 'SIGTERM']]);
  t.false(existsSync(join(first.stateDir, 'router', 'acme.web.web1.pid')));
});
