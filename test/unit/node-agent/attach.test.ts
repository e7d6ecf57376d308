import test from 'ava';
import { FakeRunner } from '../../../src/shared/runner.js';
import { ConflictError, ValidationError } from '../../../src/shared/errors.js';
import { containerInterfaceName } from '../../../src/node-agent/names.js';
import {
  attachWorkload,
  attachmentAlias,
  checkWorkload,
  detachWorkload,
  listAttached,
  parseAttachmentAlias,
  planAttach,
  type IpLink,
  type ObservedAttach,
} from '../../../src/node-agent/attach.js';

const NS = '/run/netns/ctr1';
const HOST = containerInterfaceName('acme', 'web');
const spec = { netns: NS, tenant: 'acme', name: 'web', address: '10.20.0.5', mtu: 1420, containerId: 'abc123' };
const inNs = (...argv: string[]) => ['nsenter', `--net=${NS}`, ...argv];

function hostLink(over: Partial<IpLink> = {}): IpLink {
  return {
    ifindex: 7,
    ifname: HOST,
    link_index: 2,
    flags: ['BROADCAST', 'MULTICAST', 'UP', 'LOWER_UP'],
    mtu: 1420,
    address: 'aa:aa:aa:aa:aa:01',
    ifalias: attachmentAlias('acme', 'web', 'abc123'),
    linkinfo: { info_kind: 'veth' },
    addr_info: [{ family: 'inet', local: '169.254.1.1', prefixlen: 32, scope: 'link' }],
    ...over,
  };
}
function ctrLink(over: Partial<IpLink> = {}): IpLink {
  return {
    ifindex: 2,
    ifname: 'eth0',
    link_index: 7,
    flags: ['BROADCAST', 'MULTICAST', 'UP', 'LOWER_UP'],
    mtu: 1420,
    address: 'bb:bb:bb:bb:bb:02',
    linkinfo: { info_kind: 'veth' },
    addr_info: [{ family: 'inet', local: '10.20.0.5', prefixlen: 32, scope: 'global' }],
    ...over,
  };
}
const lo = (up = true): IpLink => ({ ifindex: 1, ifname: 'lo', flags: up ? ['LOOPBACK', 'UP'] : ['LOOPBACK'], addr_info: [] });
const ctrRoutes = [
  { dst: 'default', gateway: '169.254.1.1', dev: 'eth0' },
  { dst: '169.254.1.1', dev: 'eth0', scope: 'link' },
];

function converged(): ObservedAttach {
  return {
    host: { link: hostLink(), ipv6Disabled: true, routes: [{ dst: '10.20.0.5', dev: HOST, scope: 'link' }] },
    container: { link: ctrLink(), lo: lo(), ipv6Disabled: true, routes: ctrRoutes },
  };
}

/** Script the read commands of one observation. */
function expectObserve(r: FakeRunner, o: ObservedAttach): void {
  if (o.host.link) r.expect(['ip', '-j', '-d', 'addr', 'show', 'dev', HOST], { stdout: JSON.stringify([o.host.link]) });
  else r.expect(['ip', '-j', '-d', 'addr', 'show', 'dev', HOST], { exitCode: 1, stderr: `Device "${HOST}" does not exist.\n` });
  if (o.host.link) r.expect(['sysctl', '-n', `net/ipv6/conf/${HOST}/disable_ipv6`], { stdout: o.host.ipv6Disabled ? '1\n' : '0\n' });
  r.expect(['ip', '-j', 'route', 'show', '10.20.0.5/32'], { stdout: JSON.stringify(o.host.routes) });
  r.expect(inNs('ip', '-j', '-d', 'addr', 'show'), { stdout: JSON.stringify([o.container.lo, o.container.link].filter(Boolean)) });
  if (o.container.link) {
    r.expect(inNs('sysctl', '-n', 'net/ipv6/conf/eth0/disable_ipv6'), { stdout: o.container.ipv6Disabled ? '1\n' : '0\n' });
    r.expect(inNs('ip', '-j', 'route', 'show'), { stdout: JSON.stringify(o.container.routes) });
  }
}

const FRESH_PLAN = [
  ['ip', 'link', 'add', HOST, 'mtu', '1420', 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', '1420', 'netns', NS],
  ['sysctl', '-q', '-w', `net/ipv6/conf/${HOST}/disable_ipv6=1`],
  inNs('sysctl', '-q', '-w', 'net/ipv6/conf/eth0/disable_ipv6=1'),
  ['ip', 'link', 'set', 'dev', HOST, 'alias', 'netwall:acme/web/abc123'],
  ['ip', 'addr', 'replace', '169.254.1.1/32', 'dev', HOST, 'scope', 'link'],
  ['ip', 'link', 'set', 'dev', HOST, 'up'],
  inNs('ip', 'addr', 'replace', '10.20.0.5/32', 'dev', 'eth0'),
  inNs('ip', 'link', 'set', 'dev', 'eth0', 'up'),
  inNs('ip', 'link', 'set', 'dev', 'lo', 'up'),
  inNs('ip', 'route', 'replace', '169.254.1.1', 'dev', 'eth0', 'scope', 'link'),
  inNs('ip', 'route', 'replace', 'default', 'via', '169.254.1.1', 'dev', 'eth0'),
  ['ip', 'route', 'replace', '10.20.0.5/32', 'dev', HOST, 'scope', 'link'],
];

const empty = (): ObservedAttach => ({
  host: { link: null, ipv6Disabled: null, routes: [] },
  container: { link: null, lo: lo(false), ipv6Disabled: null, routes: [] },
});

test('planAttach: a fresh attachment creates the veth, IPv6 off before up, routes last', (t) => {
  t.deepEqual(
    planAttach(spec, empty()).map((c) => c.argv),
    FRESH_PLAN,
  );
});

test('planAttach: converged state → empty plan', (t) => {
  t.deepEqual(planAttach(spec, converged()), []);
});

test('planAttach: drift is repaired piece by piece', (t) => {
  const o = converged();
  o.container.link = ctrLink({ addr_info: [{ family: 'inet', local: '10.20.0.9', prefixlen: 32 }], flags: ['BROADCAST'] });
  o.container.routes = [{ dst: 'default', gateway: '10.0.0.1', dev: 'eth0' }];
  o.host.routes = [];
  o.host.ipv6Disabled = false;
  const plan = planAttach(spec, o).map((c) => c.argv.join(' '));
  t.deepEqual(plan, [
    `sysctl -q -w net/ipv6/conf/${HOST}/disable_ipv6=1`,
    `nsenter --net=${NS} ip addr del 10.20.0.9/32 dev eth0`,
    `nsenter --net=${NS} ip addr replace 10.20.0.5/32 dev eth0`,
    `nsenter --net=${NS} ip link set dev eth0 up`,
    `nsenter --net=${NS} ip route replace 169.254.1.1 dev eth0 scope link`,
    `nsenter --net=${NS} ip route replace default via 169.254.1.1 dev eth0`,
    `ip route replace 10.20.0.5/32 dev ${HOST} scope link`,
  ]);
});

test('planAttach: a host veth paired with another namespace is a conflict, never stolen', (t) => {
  const o = converged();
  o.container.link = null; // this netns has no eth0: the veth lives elsewhere
  t.throws(() => planAttach(spec, o), { instanceOf: ConflictError, message: /already attached.*container abc123/ });
  const o2 = converged();
  o2.container.link = ctrLink({ link_index: 99 });
  t.throws(() => planAttach(spec, o2), { instanceOf: ConflictError });
  const o3 = empty();
  o3.container.link = ctrLink();
  t.throws(() => planAttach(spec, o3), { instanceOf: ConflictError, message: /eth0 already exists/ });
});

test('planAttach: invalid specs are rejected before any command', (t) => {
  for (const bad of [
    { ...spec, netns: 'relative' },
    { ...spec, tenant: 'Acme' },
    { ...spec, name: 'a_b' },
    { ...spec, address: '10.20.0.256' },
    { ...spec, address: '10.20.0.5/32' },
    { ...spec, mtu: 100 },
    { ...spec, ifname: 'way-too-long-ifname' },
    { ...spec, ifname: 'a/b' },
    { ...spec, containerId: '-x' },
  ]) {
    t.throws(() => planAttach(bad, empty()), { instanceOf: ValidationError }, JSON.stringify(bad));
  }
});

test('attachWorkload: fresh attach runs the plan, re-observes and returns the CNI pieces', async (t) => {
  const r = new FakeRunner();
  expectObserve(r, empty());
  for (const argv of FRESH_PLAN) r.expect(argv);
  expectObserve(r, converged());
  const logged: string[] = [];
  const res = await attachWorkload(r, spec, { log: (l) => logged.push(l) });
  t.deepEqual(r.pending(), []);
  t.is(logged.length, FRESH_PLAN.length);
  t.is(logged[0], `[#] ${FRESH_PLAN[0]!.join(' ')}`);
  t.deepEqual(res.hostInterface, { name: HOST, mac: 'aa:aa:aa:aa:aa:01', ifindex: 7 });
  t.deepEqual(res.containerInterface, { name: 'eth0', mac: 'bb:bb:bb:bb:bb:02', ifindex: 2, sandbox: NS });
  t.is(res.address, '10.20.0.5');
  t.is(res.gateway, '169.254.1.1');
  t.deepEqual(res.routes, [{ dst: '169.254.1.1/32' }, { dst: '0.0.0.0/0', gw: '169.254.1.1' }]);
  t.is(res.changes.length, FRESH_PLAN.length);
});

test('attachWorkload: twice → the second run only reads', async (t) => {
  const r = new FakeRunner();
  expectObserve(r, converged());
  const res = await attachWorkload(r, spec);
  t.deepEqual(res.changes, []);
  t.deepEqual(r.pending(), []);
  t.true(r.calls.every((c) => c.argv.includes('show') || c.argv.includes('-n')));
});

test('attachWorkload: a failure after creating the veth removes it again', async (t) => {
  const r = new FakeRunner();
  expectObserve(r, empty());
  r.expect(FRESH_PLAN[0]!);
  r.expect(FRESH_PLAN[1]!, { exitCode: 1, stderr: 'boom' });
  r.expect(['ip', 'link', 'del', 'dev', HOST]);
  await t.throwsAsync(attachWorkload(r, spec), { message: /boom/ });
  t.deepEqual(r.pending(), []);
});

test('checkWorkload: reports what is off, read-only', async (t) => {
  const r = new FakeRunner();
  const o = converged();
  o.host.routes = [];
  expectObserve(r, o);
  t.deepEqual(await checkWorkload(r, { ...spec, mtu: undefined }), [`host has no route 10.20.0.5/32 dev ${HOST}`]);
  const r2 = new FakeRunner();
  expectObserve(r2, empty());
  t.deepEqual(await checkWorkload(r2, spec), [`host veth ${HOST} does not exist`]);
  const r3 = new FakeRunner();
  expectObserve(r3, converged());
  t.deepEqual(await checkWorkload(r3, { ...spec, containerId: 'other' }), [`${HOST} alias is not netwall:acme/web/other`]);
});

test('detachWorkload: idempotent, and leaves another container’s veth alone', async (t) => {
  const r = new FakeRunner();
  r.expect(['ip', '-j', '-d', 'addr', 'show', 'dev', HOST], { exitCode: 1, stderr: `Device "${HOST}" does not exist.` });
  t.deepEqual(await detachWorkload(r, { tenant: 'acme', name: 'web' }), { removed: false, foreign: false });

  const r2 = new FakeRunner();
  r2.expect(['ip', '-j', '-d', 'addr', 'show', 'dev', HOST], { stdout: JSON.stringify([hostLink()]) });
  r2.expect(['ip', 'link', 'del', 'dev', HOST]);
  t.deepEqual(await detachWorkload(r2, { tenant: 'acme', name: 'web', containerId: 'abc123' }), { removed: true, foreign: false });

  const r3 = new FakeRunner();
  r3.expect(['ip', '-j', '-d', 'addr', 'show', 'dev', HOST], { stdout: JSON.stringify([hostLink()]) });
  t.deepEqual(await detachWorkload(r3, { tenant: 'acme', name: 'web', containerId: 'zzz' }), { removed: false, foreign: true });
  t.deepEqual(r3.pending(), []);

  // Raced away between show and del: still success.
  const r4 = new FakeRunner();
  r4.expect(['ip', '-j', '-d', 'addr', 'show', 'dev', HOST], { stdout: JSON.stringify([hostLink()]) });
  r4.expect(['ip', 'link', 'del', 'dev', HOST], { exitCode: 1, stderr: `Cannot find device "${HOST}"` });
  t.deepEqual(await detachWorkload(r4, { tenant: 'acme', name: 'web' }), { removed: false, foreign: false });

  // A real failure is not swallowed.
  const r5 = new FakeRunner();
  r5.expect(['ip', '-j', '-d', 'addr', 'show', 'dev', HOST], { stdout: JSON.stringify([hostLink()]) });
  r5.expect(['ip', 'link', 'del', 'dev', HOST], { exitCode: 2, stderr: 'RTNETLINK answers: Operation not permitted' });
  await t.throwsAsync(detachWorkload(r5, { tenant: 'acme', name: 'web' }), { message: /Operation not permitted/ });
});

test('listAttached: only nwc* links, with the workload from the alias', async (t) => {
  const r = new FakeRunner();
  r.expect(['ip', '-j', '-d', 'link', 'show'], {
    stdout: JSON.stringify([
      { ifindex: 1, ifname: 'lo', flags: ['UP'] },
      { ifindex: 3, ifname: 'nw-acme', flags: ['UP'] },
      hostLink(),
      { ifindex: 9, ifname: 'nwc00000000000', flags: [] },
    ]),
  });
  t.deepEqual(await listAttached(r), [
    { ifname: 'nwc00000000000', ifindex: 9, up: false, tenant: null, name: null, containerId: null },
    { ifname: HOST, ifindex: 7, up: true, tenant: 'acme', name: 'web', containerId: 'abc123' },
  ]);
});

test('alias round trip', (t) => {
  t.deepEqual(parseAttachmentAlias(attachmentAlias('acme', 'web')), { tenant: 'acme', name: 'web', containerId: null });
  t.deepEqual(parseAttachmentAlias(attachmentAlias('acme', 'web', 'c1')), { tenant: 'acme', name: 'web', containerId: 'c1' });
  t.is(parseAttachmentAlias('something else'), null);
  t.is(parseAttachmentAlias('netwall:Bad/x'), null);
});

test('attachWorkload: a kernel without IPv6 is fine (nothing to disable)', async (t) => {
  const r = new FakeRunner();
  expectObserve(r, empty());
  for (const argv of FRESH_PLAN) {
    if (argv.includes('sysctl')) r.expect(argv, { exitCode: 255, stderr: `sysctl: cannot stat /proc/sys/${argv.at(-1)!.split('=')[0]}: No such file or directory` });
    else r.expect(argv);
  }
  // Re-observation: the sysctl is absent, so it is not judged.
  r.expect(['ip', '-j', '-d', 'addr', 'show', 'dev', HOST], { stdout: JSON.stringify([hostLink()]) });
  r.expect(['sysctl', '-n', `net/ipv6/conf/${HOST}/disable_ipv6`], { exitCode: 255, stderr: 'sysctl: cannot stat /proc/sys/net/ipv6/conf/x: No such file or directory' });
  r.expect(['ip', '-j', 'route', 'show', '10.20.0.5/32'], { stdout: JSON.stringify([{ dst: '10.20.0.5', dev: HOST, scope: 'link' }]) });
  r.expect(inNs('ip', '-j', '-d', 'addr', 'show'), { stdout: JSON.stringify([lo(), ctrLink()]) });
  r.expect(inNs('sysctl', '-n', 'net/ipv6/conf/eth0/disable_ipv6'), { exitCode: 255, stderr: 'sysctl: cannot stat x: No such file or directory' });
  r.expect(inNs('ip', '-j', 'route', 'show'), { stdout: JSON.stringify(ctrRoutes) });
  const res = await attachWorkload(r, spec);
  t.is(res.address, '10.20.0.5');
  t.deepEqual(r.pending(), []);
});
