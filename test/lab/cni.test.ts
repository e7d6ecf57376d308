/**
 * Lab: the netwall CNI plugin and the agent socket against real network namespaces
 * and a real podman container. Root only; run with
 *   npx ava --config ava.lab.config.js test/lab/cni.test.ts
 *
 * Layout (everything named nwt<pid>-…, removed at the end):
 *   nwt<pid>-host   the lab node: the agent socket's runner and every plugin/podman
 *                   process run here (nsenter --net=…), so no veth or route ever
 *                   lands in the machine's root namespace
 *   nwt<pid>-c1/c2  plain container namespaces (the runtime's part done by hand)
 *   podman          one busybox container on network netwall-acme (CNI backend)
 * The allocator is an in-memory stand-in for the coordinator.
 */
import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ExecaRunner, PrefixedRunner } from '../../src/shared/runner.js';
import { containerInterfaceName } from '../../src/node-agent/names.js';
import { startAgentSocket, type Allocator, type AgentSocketServer } from '../../src/node-agent/socket.js';
import { writeCniConfig } from '../../src/node-agent/cni-config.js';
import { installCniPlugin } from '../../src/node-agent/cni/install.js';
import { buildBusyboxRootfs, writeContainersConf } from '../../scripts/lab-world.js';

const isRoot = process.getuid?.() === 0;
const hasPodman = spawnSync('podman', ['--version']).status === 0 && spawnSync('runc', ['--version']).status === 0;
const labTest = isRoot ? test.serial : test.skip;
const podmanTest = isRoot && hasPodman ? test.serial : test.skip;
if (!isRoot) console.log('SKIP test/lab/cni.test.ts: needs root (real network namespaces)');
else if (!hasPodman) console.log('SKIP podman part of test/lab/cni.test.ts: podman/runc not installed');

const repo = resolve(fileURLToPath(new URL('../..', import.meta.url)));
const pluginMain = join(repo, 'src/node-agent/cni/main.ts');
const tsxImport = import.meta.resolve('tsx');

const P = process.pid;
const HOST = `nwt${P}-host`;
const C1 = `nwt${P}-c1`;
const C2 = `nwt${P}-c2`;
const HOST_NS = `/run/netns/${HOST}`;
const TENANT = 'acme';
const SUBNET = '10.77.1';

// ------------------------------------------------------------------ helpers

function sh(argv: string[], opts: { allowFailure?: boolean; input?: string; env?: NodeJS.ProcessEnv; timeout?: number } = {}) {
  const [file, ...args] = argv;
  const r = spawnSync(file as string, args, {
    input: opts.input,
    env: { ...process.env, LC_ALL: 'C', ...opts.env },
    encoding: 'utf8',
    timeout: opts.timeout ?? 60_000,
  });
  const out = { status: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? String(r.error ?? '') };
  if (out.status !== 0 && !opts.allowFailure) throw new Error(`${argv.join(' ')}: exit ${out.status}: ${out.stderr.trim()}`);
  return out;
}
/** Like sh, but without blocking the event loop: podman calls the plugin, which calls the agent socket served by this process. */
function shAsync(argv: string[], opts: { allowFailure?: boolean; env?: NodeJS.ProcessEnv; timeout?: number } = {}): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((res, rej) => {
    const [file, ...args] = argv;
    const child = spawn(file as string, args, { env: { ...process.env, LC_ALL: 'C', ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeout ?? 120_000);
    child.on('error', rej);
    child.on('close', (code) => {
      clearTimeout(timer);
      const out = { status: code ?? -1, stdout, stderr };
      if (out.status !== 0 && !opts.allowFailure) rej(new Error(`${argv.join(' ')}: exit ${out.status}: ${stderr.trim()}`));
      else res(out);
    });
  });
}
const inHost = (...argv: string[]) => ['nsenter', `--net=${HOST_NS}`, ...argv];
const ipj = <T = Record<string, unknown>[]>(ns: string, ...args: string[]): T => JSON.parse(sh(['ip', '-n', ns, '-j', ...args]).stdout || '[]') as T;

/** Runs the plugin exactly as a runtime does: env vars + config on stdin, inside the lab host's netns. */
function cni(command: string, env: Record<string, string>, conf: unknown): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((res, rej) => {
    const child = spawn('nsenter', [`--net=${HOST_NS}`, process.execPath, '--import', tsxImport, pluginMain], {
      env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', CNI_COMMAND: command, ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', rej);
    child.on('close', (code) => {
      clearTimeout(timer);
      res({ code: code ?? -1, stdout, stderr });
    });
    child.stdin.end(typeof conf === 'string' ? conf : JSON.stringify(conf));
  });
}

/** The coordinator's part, in memory: one address per (tenant, name), stable until released. */
class MemAllocator implements Allocator {
  readonly placed = new Map<string, { address: string; labels: Record<string, string> }>();
  readonly releases: string[] = [];
  private next = 2;
  async create(tenant: string, name: string, labels: Record<string, string>) {
    if (tenant !== TENANT) throw new Error(`no tenant ${tenant}`);
    const key = `${tenant}/${name}`;
    let w = this.placed.get(key);
    if (!w) {
      w = { address: `${SUBNET}.${this.next++}`, labels };
      this.placed.set(key, w);
    }
    return { address: w.address };
  }
  async release(tenant: string, name: string) {
    this.releases.push(`${tenant}/${name}`);
    this.placed.delete(`${tenant}/${name}`);
  }
}

// ------------------------------------------------------------------ fixture

const work = isRoot ? mkdtempSync(join(tmpdir(), `nwt${P}-`)) : '';
const socketPath = join(work, 'run', 'agent.sock');
const allocator = new MemAllocator();
const changes: string[] = [];
let server: AgentSocketServer | null = null;
const conf = { cniVersion: '1.0.0', name: 'netwall-acme', type: 'netwall', tenant: TENANT, agentSocket: socketPath, mtu: 1420 };
const baseEnv = (ns: string, id: string, args = ''): Record<string, string> => ({
  CNI_CONTAINERID: id,
  CNI_NETNS: `/run/netns/${ns}`,
  CNI_IFNAME: 'eth0',
  CNI_PATH: join(work, 'cnibin'),
  CNI_ARGS: `IgnoreUnknown=1${args}`,
});
const podmanIds: string[] = [];
let podmanBase: string[] = [];

test.before(async () => {
  if (!isRoot) return;
  for (const ns of [HOST, C1, C2]) sh(['ip', 'netns', 'add', ns]);
  sh(['ip', '-n', HOST, 'link', 'set', 'lo', 'up']);
  // Forwarding inside the lab host only (container ↔ container through the node).
  sh(inHost('sysctl', '-q', '-w', 'net.ipv4.ip_forward=1'));
  server = await startAgentSocket({
    path: socketPath,
    allocator,
    runner: new PrefixedRunner(new ExecaRunner(), ['nsenter', `--net=${HOST_NS}`]),
    mtu: 1420,
    log: (l) => changes.push(l),
  });
});

test.after.always(async () => {
  if (!isRoot) return;
  for (const id of podmanIds) await shAsync([...podmanBase, 'rm', '-f', '-t', '0', id], { allowFailure: true, timeout: 60_000 });
  await server?.close();
  for (const ns of [C1, C2, HOST]) sh(['ip', 'netns', 'del', ns], { allowFailure: true });
  // Safety net: a container podman failed to remove leaves its shm mounted under our work dir.
  const mounts = sh(['cat', '/proc/self/mounts']).stdout.split('\n').map((l) => l.split(' ')[1] ?? '');
  for (const m of mounts.filter((m) => m.startsWith(`${work}/`)).reverse()) sh(['umount', '-l', m], { allowFailure: true });
  rmSync(work, { recursive: true, force: true });
});

// ------------------------------------------------------------------ plain namespaces

labTest('VERSION, and a bad config creates nothing', async (t) => {
  const v = await cni('VERSION', {}, { cniVersion: '1.0.0' });
  t.is(v.code, 0);
  t.deepEqual(JSON.parse(v.stdout), { cniVersion: '1.0.0', supportedVersions: ['0.4.0', '1.0.0'] });

  const bad = await cni('ADD', baseEnv(C1, 'badcfg'), { ...conf, tenant: 'NOPE' });
  t.not(bad.code, 0);
  t.is(JSON.parse(bad.stdout).code, 7);
  const junk = await cni('ADD', baseEnv(C1, 'badcfg'), '{"cniVersion":');
  t.is(JSON.parse(junk.stdout).code, 6);
  t.deepEqual(ipj(HOST, 'link', 'show').map((l) => l.ifname), ['lo'], 'no link created in the host');
  t.deepEqual(ipj(C1, 'link', 'show').map((l) => l.ifname), ['lo'], 'no link created in the container');
  t.is(allocator.placed.size, 0);
});

labTest('ADD → veth with address and routes; CHECK; re-ADD is a no-op; conflict; DEL twice', async (t) => {
  const host1 = containerInterfaceName(TENANT, 'web-1');
  const add = await cni('ADD', baseEnv(C1, 'c1aaaa', ';K8S_POD_NAME=web_1;NETWALL_LABEL_app=web'), conf);
  t.is(add.code, 0, add.stdout + add.stderr);
  const result = JSON.parse(add.stdout);
  const addr = allocator.placed.get('acme/web-1')?.address;
  t.truthy(addr, 'allocated through the agent socket');
  t.deepEqual(allocator.placed.get('acme/web-1')?.labels, { app: 'web' });
  t.is(result.cniVersion, '1.0.0');
  t.deepEqual(result.ips, [{ address: `${addr}/32`, gateway: '169.254.1.1', interface: 1 }]);
  t.is(result.interfaces[0].name, host1);
  t.is(result.interfaces[1].name, 'eth0');
  t.is(result.interfaces[1].sandbox, `/run/netns/${C1}`);
  t.regex(result.interfaces[1].mac, /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);

  // Container side.
  const [eth0] = ipj(C1, 'addr', 'show', 'dev', 'eth0') as { mtu: number; flags: string[]; addr_info: { family: string; local: string; prefixlen: number }[] }[];
  t.is(eth0!.mtu, 1420);
  t.true(eth0!.flags.includes('UP'));
  t.deepEqual(eth0!.addr_info.map((a) => `${a.family} ${a.local}/${a.prefixlen}`), [`inet ${addr}/32`], 'IPv4 /32 only, no IPv6 link-local');
  t.is(sh(['nsenter', `--net=/run/netns/${C1}`, 'sysctl', '-n', 'net/ipv6/conf/eth0/disable_ipv6']).stdout.trim(), '1');
  const routes = ipj(C1, 'route', 'show').map((r) => `${r.dst} ${r.gateway ?? '-'} ${r.dev} ${r.scope ?? ''}`.trim());
  t.deepEqual(routes.sort(), ['169.254.1.1 - eth0 link', 'default 169.254.1.1 eth0'].sort());
  t.true((ipj(C1, 'link', 'show', 'dev', 'lo')[0]!.flags as string[]).includes('UP'));

  // Host side (in the lab host namespace, never the root namespace).
  const [h] = ipj(HOST, 'addr', 'show', 'dev', host1) as { flags: string[]; addr_info: { local: string; prefixlen: number; scope: string; family: string }[] }[];
  t.true(h!.flags.includes('UP'));
  t.deepEqual(h!.addr_info.map((a) => `${a.family} ${a.local}/${a.prefixlen} ${a.scope}`), ['inet 169.254.1.1/32 link']);
  t.deepEqual(ipj(HOST, 'route', 'show', `${addr}/32`).map((r) => r.dev), [host1]);
  t.not(sh(['ip', 'link', 'show', 'dev', host1], { allowFailure: true }).status, 0, 'nothing in the root namespace');

  // Plumbing works: the container reaches its next hop, the node reaches the container…
  t.is(sh(['ip', 'netns', 'exec', C1, 'ping', '-c', '1', '-W', '2', '169.254.1.1'], { allowFailure: true }).status, 0);
  t.is(sh(inHost('ping', '-c', '1', '-W', '2', addr as string), { allowFailure: true }).status, 0);
  // …and nothing routing does not allow.
  t.not(sh(['ip', 'netns', 'exec', C1, 'ping', '-c', '1', '-W', '1', `${SUBNET}.250`], { allowFailure: true }).status, 0, 'no route to an unplaced address');
  t.not(sh(['ip', 'netns', 'exec', C1, 'ping', '-c', '1', '-W', '1', '192.0.2.1'], { allowFailure: true }).status, 0, 'nothing beyond the node');

  // CHECK with the ADD result as prevResult.
  const check = await cni('CHECK', baseEnv(C1, 'c1aaaa', ';K8S_POD_NAME=web_1'), { ...conf, prevResult: result });
  t.is(check.code, 0, check.stdout + check.stderr);

  // Drift: CHECK notices, a re-ADD repairs, then re-ADD is a no-op.
  sh(['ip', '-n', HOST, 'route', 'del', `${addr}/32`]);
  const drift = await cni('CHECK', baseEnv(C1, 'c1aaaa', ';K8S_POD_NAME=web_1'), { ...conf, prevResult: result });
  t.is(drift.code, 1);
  t.is(JSON.parse(drift.stdout).code, 103);
  t.regex(JSON.parse(drift.stdout).details, /host has no route/);
  changes.length = 0;
  const readd = await cni('ADD', baseEnv(C1, 'c1aaaa', ';K8S_POD_NAME=web_1'), conf);
  t.is(readd.code, 0);
  t.deepEqual(changes, [`[#] ip route replace ${addr}/32 dev ${host1} scope link`]);
  changes.length = 0;
  const again = await cni('ADD', baseEnv(C1, 'c1aaaa', ';K8S_POD_NAME=web_1'), conf);
  t.is(again.code, 0);
  t.deepEqual(changes, [], 'converged: nothing to do');
  t.deepEqual(JSON.parse(again.stdout).ips, result.ips);

  // Another container claiming the same workload name gets a conflict and steals nothing.
  const steal = await cni('ADD', baseEnv(C2, 'c2bbbb', ';K8S_POD_NAME=web_1'), conf);
  t.is(steal.code, 1);
  t.is(JSON.parse(steal.stdout).code, 104);
  t.deepEqual(ipj(C2, 'link', 'show').map((l) => l.ifname), ['lo']);
  const stealDel = await cni('DEL', baseEnv(C2, 'c2bbbb', ';K8S_POD_NAME=web_1'), conf);
  t.is(stealDel.code, 0, 'DEL after a failed ADD succeeds…');
  t.deepEqual(ipj(HOST, 'link', 'show', 'dev', host1).length, 1, '…and leaves the owner’s veth alone');
  t.true(allocator.placed.has('acme/web-1'), '…and does not release the owner’s workload');

  // A second workload, routed (no bridge) through the node.
  const add2 = await cni('ADD', baseEnv(C2, 'c2bbbb', ';K8S_POD_NAME=db'), conf);
  t.is(add2.code, 0, add2.stdout);
  const addr2 = allocator.placed.get('acme/db')!.address;
  t.is(sh(['ip', 'netns', 'exec', C1, 'ping', '-c', '1', '-W', '2', addr2], { allowFailure: true }).status, 0, 'c1 → c2 via /32 routes');

  // DEL, twice.
  const del = await cni('DEL', baseEnv(C1, 'c1aaaa', ';K8S_POD_NAME=web_1'), conf);
  t.is(del.code, 0, del.stdout);
  t.is(del.stdout, '');
  t.not(sh(['ip', '-n', HOST, 'link', 'show', 'dev', host1], { allowFailure: true }).status, 0, 'host veth gone');
  t.deepEqual(ipj(C1, 'link', 'show').map((l) => l.ifname), ['lo'], 'container side gone');
  t.deepEqual(ipj(HOST, 'route', 'show', `${addr}/32`), []);
  t.false(allocator.placed.has('acme/web-1'), 'released');
  const del2 = await cni('DEL', baseEnv(C1, 'c1aaaa', ';K8S_POD_NAME=web_1'), conf);
  t.is(del2.code, 0, 'DEL again succeeds');
  const delNoNs = await cni('DEL', { ...baseEnv(C1, 'c1aaaa', ';K8S_POD_NAME=web_1'), CNI_NETNS: '' }, conf);
  t.is(delNoNs.code, 0, 'DEL without a netns succeeds');
  const del3 = await cni('DEL', baseEnv(C2, 'c2bbbb', ';K8S_POD_NAME=db'), conf);
  t.is(del3.code, 0);
  t.deepEqual(ipj(HOST, 'link', 'show').map((l) => l.ifname), ['lo']);
});

labTest('DEL with the agent down: veth removed, code 11 (try again later)', async (t) => {
  const add = await cni('ADD', baseEnv(C1, 'c1cccc', ';NETWALL_NAME=cache'), conf);
  t.is(add.code, 0, add.stdout);
  const del = await cni('DEL', baseEnv(C1, 'c1cccc', ';NETWALL_NAME=cache'), { ...conf, agentSocket: join(work, 'nobody.sock') });
  t.is(del.code, 1);
  const body = JSON.parse(del.stdout);
  t.is(body.code, 11);
  t.regex(body.details, /veth removed locally/);
  t.not(sh(['ip', '-n', HOST, 'link', 'show', 'dev', containerInterfaceName(TENANT, 'cache')], { allowFailure: true }).status, 0);
  const retry = await cni('DEL', baseEnv(C1, 'c1cccc', ';NETWALL_NAME=cache'), conf);
  t.is(retry.code, 0, 'the retry with the agent back releases');
  t.false(allocator.placed.has('acme/cache'));
});

// ------------------------------------------------------------------ podman

podmanTest('a real podman container on a netwall CNI network', async (t) => {
  const rootfs = join(work, 'rootfs');
  buildBusyboxRootfs(rootfs);
  const netd = join(work, 'net.d');
  writeCniConfig({ tenant: TENANT, agentSocket: socketPath, mtu: 1420, dir: netd });
  installCniPlugin({ binDir: join(work, 'cnibin'), mainPath: pluginMain, nodeArgs: ['--import', tsxImport] });
  const confFile = writeContainersConf(join(work, 'containers.conf'), join(work, 'cnibin'), netd);
  const env = { CONTAINERS_CONF: confFile, CNI_ARGS: 'NETWALL_LABEL_app=web' };
  podmanBase = [
    'nsenter',
    `--net=${HOST_NS}`,
    'env',
    `CONTAINERS_CONF=${confFile}`,
    'podman',
    '--root',
    join(work, 'storage'),
    '--runroot',
    join(work, 'runroot'),
    '--storage-driver',
    'vfs',
    '--network-backend',
    'cni',
    '--network-config-dir',
    netd,
    '--runtime',
    'runc',
  ];
  const name = `nwt${P}-web`;
  const run = await shAsync(
    [
      ...podmanBase,
      'run',
      '-d',
      '--name',
      name,
      '--ulimit',
      'nofile=1024:1024',
      '--ulimit',
      'nproc=1024:1024',
      '--network',
      'netwall-acme',
      '--rootfs',
      rootfs,
      '/bin/httpd',
      '-f',
      '-p',
      '8080',
      '-h',
      '/www',
    ],
    { env, allowFailure: true, timeout: 120_000 },
  );
  t.is(run.status, 0, run.stderr);
  if (run.status !== 0) return;
  const id = run.stdout.trim().split('\n').pop() as string;
  podmanIds.push(id);

  // Placed by the agent under the container's name, with the label from CNI_ARGS.
  const w = allocator.placed.get(`acme/${name}`);
  t.truthy(w, `workload acme/${name} placed: ${JSON.stringify([...allocator.placed.keys()])}`);
  t.deepEqual(w?.labels, { app: 'web' });
  const addr = w!.address;

  // Podman understood our result.
  const inspect = JSON.parse((await shAsync([...podmanBase, 'inspect', id], { env })).stdout)[0];
  const net = inspect.NetworkSettings.Networks['netwall-acme'];
  t.is(net.IPAddress, addr);
  t.is(net.IPPrefixLen, 32);
  t.is(net.Gateway, '169.254.1.1');
  const sandbox: string = inspect.NetworkSettings.SandboxKey;
  t.regex(sandbox, /^\/run\/netns\//);

  // Inside the container: eth0 with the address, default via 169.254.1.1.
  const ipAddr = (await shAsync([...podmanBase, 'exec', id, '/bin/ip', '-4', 'addr', 'show', 'dev', 'eth0'], { env })).stdout;
  t.regex(ipAddr, new RegExp(`inet ${addr.replace(/\./g, '\\.')}/32`));
  t.regex((await shAsync([...podmanBase, 'exec', id, '/bin/ip', 'route'], { env })).stdout, /default via 169\.254\.1\.1 dev eth0/);

  // Plumbing: container → next hop; node → container's httpd; nothing past the node.
  t.is(sh(['nsenter', `--net=${sandbox}`, 'ping', '-c', '1', '-W', '2', '169.254.1.1'], { allowFailure: true }).status, 0);
  let body = '';
  for (let i = 0; i < 20 && !body; i++) {
    body = sh(inHost('/bin/busybox', 'wget', '-q', '-O', '-', `http://${addr}:8080/index.html`), { allowFailure: true, timeout: 5_000 }).stdout;
    if (!body) await new Promise((r) => setTimeout(r, 250));
  }
  t.is(body, 'hello from netwall\n');
  t.not(sh(['nsenter', `--net=${sandbox}`, 'ping', '-c', '1', '-W', '1', '198.51.100.1'], { allowFailure: true }).status, 0);
  t.not(sh(['ip', 'link', 'show', 'dev', containerInterfaceName(TENANT, name)], { allowFailure: true }).status, 0, 'nothing in the root namespace');

  // Removing the container runs DEL: veth gone, workload released.
  const rm = await shAsync([...podmanBase, 'rm', '-f', '-t', '0', id], { env, allowFailure: true, timeout: 120_000 });
  t.is(rm.status, 0, rm.stderr);
  podmanIds.splice(podmanIds.indexOf(id), 1);
  t.not(sh(['ip', '-n', HOST, 'link', 'show', 'dev', containerInterfaceName(TENANT, name)], { allowFailure: true }).status, 0);
  t.true(allocator.releases.includes(`acme/${name}`));
  t.false(allocator.placed.has(`acme/${name}`));
});
