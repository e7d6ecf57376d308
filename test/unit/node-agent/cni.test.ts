import test from 'ava';
import { FakeRunner } from '../../../src/shared/runner.js';
import { ConflictError, ExhaustedError, NetwallError, NotFoundError, ValidationError } from '../../../src/shared/errors.js';
import { containerInterfaceName } from '../../../src/node-agent/names.js';
import { attachmentAlias } from '../../../src/node-agent/attach.js';
import { UnavailableError, type AttachRequest, type AttachResponse, type DetachRequest } from '../../../src/node-agent/socket.js';
import { runCniPlugin, type AgentApi, type CniEnv } from '../../../src/node-agent/cni/plugin.js';
import { labelsFromCniArgs, parseCniArgs, sanitizeName, workloadName } from '../../../src/node-agent/cni/args.js';

const NS = '/run/netns/cni-test';
const CID = 'f00dcafe0123456789abcdef';
const baseEnv: CniEnv = {
  CNI_COMMAND: 'ADD',
  CNI_CONTAINERID: CID,
  CNI_NETNS: NS,
  CNI_IFNAME: 'eth0',
  CNI_PATH: '/opt/cni/bin',
  CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAME=web',
};
const conf = { cniVersion: '1.0.0', name: 'netwall-acme', type: 'netwall', tenant: 'acme', agentSocket: '/run/netwall/agent.sock', mtu: 1420 };

class FakeAgent implements AgentApi {
  attaches: AttachRequest[] = [];
  detaches: DetachRequest[] = [];
  sockets: string[] = [];
  attachError: Error | null = null;
  detachError: Error | null = null;

  async attach(req: AttachRequest): Promise<AttachResponse> {
    this.attaches.push(req);
    if (this.attachError) throw this.attachError;
    const host = containerInterfaceName(req.tenant, req.name);
    return {
      workload: { tenant: req.tenant, name: req.name, address: '10.20.0.5', labels: req.labels },
      attachment: {
        tenant: req.tenant,
        name: req.name,
        address: '10.20.0.5',
        gateway: '169.254.1.1',
        mtu: req.mtu ?? 1420,
        hostInterface: { name: host, mac: 'aa:aa:aa:aa:aa:01', ifindex: 7 },
        containerInterface: { name: req.ifname ?? 'eth0', mac: 'bb:bb:bb:bb:bb:02', ifindex: 2, sandbox: req.netns },
        routes: [{ dst: '169.254.1.1/32' }, { dst: '0.0.0.0/0', gw: '169.254.1.1' }],
        changes: ['ip link add …'],
      },
    };
  }

  async detach(req: DetachRequest) {
    this.detaches.push(req);
    if (this.detachError) throw this.detachError;
    return { tenant: req.tenant, name: req.name, removed: true, released: true };
  }
}

function harness(existing: string[] = [NS]) {
  const runner = new FakeRunner();
  const agent = new FakeAgent();
  const deps = {
    runner,
    agent: (path: string) => {
      agent.sockets.push(path);
      return agent;
    },
    netnsExists: (p: string) => existing.includes(p),
  };
  return { runner, agent, deps };
}

function parse(stdout: string): Record<string, unknown> {
  return JSON.parse(stdout) as Record<string, unknown>;
}

// ------------------------------------------------------------ validation matrix

const without = (k: string): CniEnv => {
  const e = { ...baseEnv };
  delete e[k];
  return e;
};

const matrix: { title: string; env: CniEnv; stdin: string; code: number; msg: RegExp; version?: string }[] = [
  { title: 'no CNI_COMMAND', env: without('CNI_COMMAND'), stdin: JSON.stringify(conf), code: 4, msg: /CNI_COMMAND/ },
  { title: 'unknown CNI_COMMAND', env: { ...baseEnv, CNI_COMMAND: 'FROB' }, stdin: JSON.stringify(conf), code: 4, msg: /unsupported command/ },
  { title: 'empty stdin', env: baseEnv, stdin: '', code: 6, msg: /empty/ },
  { title: 'malformed stdin', env: baseEnv, stdin: '{"cniVersion": "1.0.0",', code: 6, msg: /malformed/ },
  { title: 'stdin not an object', env: baseEnv, stdin: '[1,2]', code: 6, msg: /object/ },
  { title: 'cniVersion missing', env: baseEnv, stdin: JSON.stringify({ ...conf, cniVersion: undefined }), code: 1, msg: /cniVersion: missing/ },
  { title: 'cniVersion 0.3.1', env: baseEnv, stdin: JSON.stringify({ ...conf, cniVersion: '0.3.1' }), code: 1, msg: /"0.3.1" is not supported/ },
  { title: 'cniVersion 2.0.0', env: baseEnv, stdin: JSON.stringify({ ...conf, cniVersion: '2.0.0' }), code: 1, msg: /not supported/ },
  { title: 'cniVersion not a string', env: baseEnv, stdin: JSON.stringify({ ...conf, cniVersion: 1 }), code: 1, msg: /not supported/ },
  { title: 'wrong type', env: baseEnv, stdin: JSON.stringify({ ...conf, type: 'bridge' }), code: 7, msg: /type: expected "netwall"/ },
  { title: 'no network name', env: baseEnv, stdin: JSON.stringify({ ...conf, name: '' }), code: 7, msg: /name/ },
  { title: 'tenant missing', env: baseEnv, stdin: JSON.stringify({ ...conf, tenant: undefined }), code: 7, msg: /tenant/ },
  { title: 'tenant uppercase', env: baseEnv, stdin: JSON.stringify({ ...conf, tenant: 'Acme' }), code: 7, msg: /tenant: invalid/ },
  { title: 'tenant with slash', env: baseEnv, stdin: JSON.stringify({ ...conf, tenant: 'a/b' }), code: 7, msg: /tenant: invalid/ },
  { title: 'tenant too long', env: baseEnv, stdin: JSON.stringify({ ...conf, tenant: 'a'.repeat(64) }), code: 7, msg: /tenant: invalid/ },
  { title: 'mtu too small', env: baseEnv, stdin: JSON.stringify({ ...conf, mtu: 100 }), code: 7, msg: /mtu/ },
  { title: 'mtu a string', env: baseEnv, stdin: JSON.stringify({ ...conf, mtu: '1420' }), code: 7, msg: /mtu/ },
  { title: 'relative agentSocket', env: baseEnv, stdin: JSON.stringify({ ...conf, agentSocket: 'agent.sock' }), code: 7, msg: /agentSocket/ },
  { title: 'runtimeConfig not an object', env: baseEnv, stdin: JSON.stringify({ ...conf, runtimeConfig: 'x' }), code: 7, msg: /runtimeConfig/ },
  { title: 'bad label key in args.labels', env: baseEnv, stdin: JSON.stringify({ ...conf, args: { labels: { 'bad key': 'x' } } }), code: 7, msg: /invalid label key/ },
  { title: 'bad args.cni.labels entry', env: baseEnv, stdin: JSON.stringify({ ...conf, args: { cni: { labels: [{ key: 'a' }] } } }), code: 7, msg: /args.cni.labels/ },
  { title: 'no CNI_CONTAINERID', env: without('CNI_CONTAINERID'), stdin: JSON.stringify(conf), code: 4, msg: /CNI_CONTAINERID: required for (ADD|CHECK)/ },
  { title: 'bad CNI_CONTAINERID', env: { ...baseEnv, CNI_CONTAINERID: '../x' }, stdin: JSON.stringify(conf), code: 4, msg: /CNI_CONTAINERID: invalid/ },
  { title: 'no CNI_NETNS', env: without('CNI_NETNS'), stdin: JSON.stringify(conf), code: 4, msg: /CNI_NETNS: required for (ADD|CHECK)/ },
  { title: 'relative CNI_NETNS', env: { ...baseEnv, CNI_NETNS: 'netns/x' }, stdin: JSON.stringify(conf), code: 4, msg: /CNI_NETNS: must be an absolute path/ },
  { title: 'missing netns file', env: { ...baseEnv, CNI_NETNS: '/run/netns/gone' }, stdin: JSON.stringify(conf), code: 4, msg: /does not exist/ },
  { title: 'no CNI_IFNAME', env: without('CNI_IFNAME'), stdin: JSON.stringify(conf), code: 4, msg: /CNI_IFNAME: required/ },
  { title: 'CNI_IFNAME too long', env: { ...baseEnv, CNI_IFNAME: 'eth0123456789012' }, stdin: JSON.stringify(conf), code: 4, msg: /CNI_IFNAME: invalid/ },
  { title: 'CNI_IFNAME with slash', env: { ...baseEnv, CNI_IFNAME: 'a/b' }, stdin: JSON.stringify(conf), code: 4, msg: /CNI_IFNAME: invalid/ },
  { title: 'no CNI_PATH', env: without('CNI_PATH'), stdin: JSON.stringify(conf), code: 4, msg: /CNI_PATH: required/ },
  { title: 'malformed CNI_ARGS', env: { ...baseEnv, CNI_ARGS: 'IgnoreUnknown=1;oops' }, stdin: JSON.stringify(conf), code: 4, msg: /CNI_ARGS: invalid pair/ },
  { title: 'bad label value in CNI_ARGS', env: { ...baseEnv, CNI_ARGS: 'NETWALL_LABEL_app=no spaces' }, stdin: JSON.stringify(conf), code: 4, msg: /invalid value/ },
  { title: 'bad NETWALL_NAME', env: { ...baseEnv, CNI_ARGS: 'NETWALL_NAME=Web_1' }, stdin: JSON.stringify(conf), code: 4, msg: /NETWALL_NAME/ },
  {
    title: 'errors echo a supported config version',
    env: { ...baseEnv, CNI_IFNAME: '' },
    stdin: JSON.stringify({ ...conf, cniVersion: '0.4.0' }),
    code: 4,
    msg: /CNI_IFNAME/,
    version: '0.4.0',
  },
];

for (const m of matrix) {
  for (const command of ['ADD', 'CHECK']) {
    test(`${command} rejects (${m.title}) with code ${m.code}, touching nothing`, async (t) => {
      const { runner, agent, deps } = harness();
      const env = { ...m.env };
      if (env.CNI_COMMAND === 'ADD') env.CNI_COMMAND = command;
      // CHECK needs a prevResult; give it one so the case under test is what fails.
      let stdin = m.stdin;
      if (command === 'CHECK') {
        try {
          const o = JSON.parse(stdin) as Record<string, unknown>;
          if (o && typeof o === 'object' && !Array.isArray(o)) stdin = JSON.stringify({ ...o, prevResult: { cniVersion: '1.0.0', ips: [{ address: '10.20.0.5/32' }] } });
        } catch {
          // malformed on purpose
        }
      }
      const out = await runCniPlugin(env, stdin, deps);
      t.is(out.exitCode, 1);
      const body = parse(out.stdout);
      t.is(body.code, m.code, String(body.msg));
      t.regex(String(body.msg), m.msg);
      t.is(body.cniVersion, m.version ?? '1.0.0');
      t.deepEqual(Object.keys(body).sort().filter((k) => k !== 'details'), ['cniVersion', 'code', 'msg']);
      t.deepEqual(runner.calls, [], 'no command may run');
      t.deepEqual(agent.attaches, [], 'the agent must not be asked');
      t.deepEqual(agent.detaches, []);
    });
  }
}

test('DEL validates too, but CNI_NETNS is optional', async (t) => {
  const { runner, agent, deps } = harness();
  const bad = await runCniPlugin({ ...baseEnv, CNI_COMMAND: 'DEL' }, JSON.stringify({ ...conf, tenant: 'BAD' }), deps);
  t.is(parse(bad.stdout).code, 7);
  t.deepEqual(agent.detaches, []);
  const ok = await runCniPlugin({ ...without('CNI_NETNS'), CNI_COMMAND: 'DEL' }, JSON.stringify(conf), deps);
  t.is(ok.exitCode, 0);
  t.is(ok.stdout, '');
  t.deepEqual(agent.detaches, [{ tenant: 'acme', name: 'web', ifname: 'eth0', containerId: CID }]);
  t.deepEqual(runner.calls, []);
});

// ------------------------------------------------------------ VERSION

test('VERSION answers without config or other env', async (t) => {
  const { runner, deps } = harness();
  for (const stdin of ['', '{"cniVersion":"1.0.0"}', 'garbage']) {
    const out = await runCniPlugin({ CNI_COMMAND: 'VERSION' }, stdin, deps);
    t.is(out.exitCode, 0);
    t.deepEqual(parse(out.stdout), { cniVersion: '1.0.0', supportedVersions: ['0.4.0', '1.0.0'] });
  }
  t.deepEqual(runner.calls, []);
});

// ------------------------------------------------------------ ADD

test('ADD asks the agent and prints a 1.0.0 result', async (t) => {
  const { runner, agent, deps } = harness();
  const out = await runCniPlugin(baseEnv, JSON.stringify(conf), deps);
  t.is(out.exitCode, 0, out.stdout);
  t.deepEqual(agent.sockets, ['/run/netwall/agent.sock']);
  t.deepEqual(agent.attaches, [{ tenant: 'acme', name: 'web', labels: {}, netns: NS, ifname: 'eth0', containerId: CID, mtu: 1420 }]);
  t.deepEqual(parse(out.stdout), {
    cniVersion: '1.0.0',
    interfaces: [
      { name: containerInterfaceName('acme', 'web'), mac: 'aa:aa:aa:aa:aa:01' },
      { name: 'eth0', mac: 'bb:bb:bb:bb:bb:02', sandbox: NS },
    ],
    ips: [{ address: '10.20.0.5/32', gateway: '169.254.1.1', interface: 1 }],
    routes: [{ dst: '169.254.1.1/32' }, { dst: '0.0.0.0/0', gw: '169.254.1.1' }],
    dns: {},
  });
  t.deepEqual(runner.calls, [], 'the plugin itself runs no commands on ADD: the agent does');
});

test('ADD with cniVersion 0.4.0 prints a 0.4.0 result (ips carry version "4")', async (t) => {
  const { deps } = harness();
  const out = await runCniPlugin(baseEnv, JSON.stringify({ ...conf, cniVersion: '0.4.0' }), deps);
  const body = parse(out.stdout);
  t.is(body.cniVersion, '0.4.0');
  t.deepEqual(body.ips, [{ version: '4', address: '10.20.0.5/32', gateway: '169.254.1.1', interface: 1 }]);
});

test('ADD without agentSocket/mtu uses the default socket and lets the agent pick the MTU', async (t) => {
  const { agent, deps } = harness();
  const { agentSocket: _s, mtu: _m, ...minimal } = conf;
  const out = await runCniPlugin(baseEnv, JSON.stringify(minimal), deps);
  t.is(out.exitCode, 0);
  t.deepEqual(agent.sockets, ['/run/netwall/agent.sock']);
  t.false('mtu' in agent.attaches[0]!);
});

test('ADD: labels from config args and CNI_ARGS (CNI_ARGS wins), name from K8S_POD_NAME sanitised', async (t) => {
  const { agent, deps } = harness();
  const env = { ...baseEnv, CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAME=My_Web.1;NETWALL_LABEL_app=web;label.tier=front;K8S_POD_NAMESPACE=x' };
  const stdin = JSON.stringify({ ...conf, args: { labels: { app: 'x', env: 'prod' }, cni: { labels: [{ key: 'team', value: 'a' }] } } });
  const out = await runCniPlugin(env, stdin, deps);
  t.is(out.exitCode, 0, out.stdout);
  t.is(agent.attaches[0]!.name, 'my-web-1');
  t.deepEqual(agent.attaches[0]!.labels, { app: 'web', env: 'prod', team: 'a', tier: 'front' });
});

test('ADD: agent errors map to CNI codes', async (t) => {
  const cases: [Error, number][] = [
    [new UnavailableError('agent socket /run/netwall/agent.sock: ENOENT'), 11],
    [new ConflictError('already attached'), 104],
    [new ExhaustedError('pool exhausted'), 101],
    [new NotFoundError('no tenant acme'), 101],
    [new ValidationError('netns: gone', 'netns'), 4],
    [new NetwallError('ip link add …: exit 2: RTNETLINK answers: File exists'), 102],
    [new Error('weird'), 102],
  ];
  for (const [err, code] of cases) {
    const { agent, deps } = harness();
    agent.attachError = err;
    const out = await runCniPlugin(baseEnv, JSON.stringify(conf), deps);
    t.is(out.exitCode, 1);
    const body = parse(out.stdout);
    t.is(body.code, code, err.message);
    t.regex(String(body.details), new RegExp(err.message.slice(0, 10).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
  }
});

// ------------------------------------------------------------ DEL

test('DEL: success is empty stdout, exit 0; repeated DEL is fine', async (t) => {
  const { agent, deps } = harness();
  for (let i = 0; i < 2; i++) {
    const out = await runCniPlugin({ ...baseEnv, CNI_COMMAND: 'DEL' }, JSON.stringify(conf), deps);
    t.deepEqual(out, { stdout: '', stderr: '', exitCode: 0 });
  }
  t.is(agent.detaches.length, 2);
});

test('DEL with the agent down removes the veth locally and says "try again later"', async (t) => {
  const { runner, agent, deps } = harness();
  agent.detachError = new UnavailableError('agent socket /run/netwall/agent.sock: ECONNREFUSED');
  const host = containerInterfaceName('acme', 'web');
  runner.expect(['ip', '-j', '-d', 'addr', 'show', 'dev', host], {
    stdout: JSON.stringify([{ ifindex: 7, ifname: host, ifalias: attachmentAlias('acme', 'web', CID), flags: ['UP'] }]),
  });
  runner.expect(['ip', 'link', 'del', 'dev', host]);
  const out = await runCniPlugin({ ...baseEnv, CNI_COMMAND: 'DEL' }, JSON.stringify(conf), deps);
  t.is(out.exitCode, 1);
  const body = parse(out.stdout);
  t.is(body.code, 11);
  t.regex(String(body.details), /ECONNREFUSED; veth removed locally/);
  t.deepEqual(runner.pending(), []);
});

// ------------------------------------------------------------ CHECK

test('CHECK needs prevResult', async (t) => {
  const { runner, deps } = harness();
  const out = await runCniPlugin({ ...baseEnv, CNI_COMMAND: 'CHECK' }, JSON.stringify(conf), deps);
  t.is(parse(out.stdout).code, 7);
  t.regex(String(parse(out.stdout).msg), /prevResult/);
  t.deepEqual(runner.calls, []);
});

test('CHECK observes read-only and reports drift with code 103', async (t) => {
  const { runner, agent, deps } = harness();
  const host = containerInterfaceName('acme', 'web');
  const inNs = (...a: string[]) => ['nsenter', `--net=${NS}`, ...a];
  runner.expect(['ip', '-j', '-d', 'addr', 'show', 'dev', host], {
    stdout: JSON.stringify([
      {
        ifindex: 7,
        ifname: host,
        flags: ['UP'],
        mtu: 1420,
        ifalias: attachmentAlias('acme', 'web', CID),
        addr_info: [{ family: 'inet', local: '169.254.1.1', prefixlen: 32, scope: 'link' }],
      },
    ]),
  });
  runner.expect(['sysctl', '-n', `net/ipv6/conf/${host}/disable_ipv6`], { stdout: '1\n' });
  runner.expect(['ip', '-j', 'route', 'show', '10.20.0.5/32'], { stdout: '[]' });
  runner.expect(inNs('ip', '-j', '-d', 'addr', 'show'), {
    stdout: JSON.stringify([
      { ifindex: 1, ifname: 'lo', flags: ['UP'] },
      { ifindex: 2, ifname: 'eth0', link_index: 7, flags: ['UP'], mtu: 1420, addr_info: [{ family: 'inet', local: '10.20.0.5', prefixlen: 32 }] },
    ]),
  });
  runner.expect(inNs('sysctl', '-n', 'net/ipv6/conf/eth0/disable_ipv6'), { stdout: '1\n' });
  runner.expect(inNs('ip', '-j', 'route', 'show'), {
    stdout: JSON.stringify([
      { dst: 'default', gateway: '169.254.1.1', dev: 'eth0' },
      { dst: '169.254.1.1', dev: 'eth0', scope: 'link' },
    ]),
  });
  const prevResult = { cniVersion: '1.0.0', ips: [{ address: '10.20.0.5/32', gateway: '169.254.1.1', interface: 1 }] };
  const out = await runCniPlugin({ ...baseEnv, CNI_COMMAND: 'CHECK' }, JSON.stringify({ ...conf, prevResult }), deps);
  t.is(out.exitCode, 1);
  const body = parse(out.stdout);
  t.is(body.code, 103);
  t.regex(String(body.details), /host has no route 10.20.0.5\/32/);
  t.deepEqual(runner.pending(), []);
  t.true(runner.calls.every((c) => c.argv.includes('show') || c.argv.includes('-n')), 'CHECK only reads');
  t.deepEqual(agent.attaches, []);
});

test('GC is accepted and does nothing', async (t) => {
  const { runner, agent, deps } = harness();
  const out = await runCniPlugin({ CNI_COMMAND: 'GC', CNI_PATH: '/opt/cni/bin' }, JSON.stringify({ ...conf, cniVersion: '1.0.0' }), deps);
  t.deepEqual(out, { stdout: '', stderr: '', exitCode: 0 });
  t.deepEqual(runner.calls, []);
  t.deepEqual(agent.detaches, []);
});

// ------------------------------------------------------------ args helpers

test('CNI_ARGS parsing and label prefixes', (t) => {
  t.deepEqual(parseCniArgs(''), []);
  t.deepEqual(parseCniArgs('IgnoreUnknown=1;K8S_POD_NAME=a=b;'), [
    ['IgnoreUnknown', '1'],
    ['K8S_POD_NAME', 'a=b'],
  ]);
  t.deepEqual(labelsFromCniArgs(parseCniArgs('NETWALL_LABEL_app=web;label.app.kubernetes.io/name=db;OTHER=x;NETWALL_LABEL_empty=')), {
    app: 'web',
    'app.kubernetes.io/name': 'db',
    empty: '',
  });
  t.throws(() => labelsFromCniArgs([['NETWALL_LABEL_', 'x']]), { message: /invalid label key/ });
});

test('workload names', (t) => {
  t.is(workloadName([], 'ABCDEF0123456789'), 'c-abcdef012345');
  t.is(workloadName([['K8S_POD_NAME', 'nifty_darwin']], CID), 'nifty-darwin');
  t.is(workloadName([['K8S_POD_NAME', '___']], CID), 'c-f00dcafe0123');
  t.is(workloadName([['K8S_POD_NAME', 'x'], ['NETWALL_NAME', 'explicit']], CID), 'explicit');
  t.is(workloadName([], 'abc_def.ghij_kl'), 'c-abc-def-ghij');
  t.is(sanitizeName(`-${'a'.repeat(70)}-`), 'a'.repeat(63));
});
