/**
 * The netns lab as a library: the topology of `scripts/lab` (and of
 * test/lab/agent.test.ts, under its own prefix and directory) — namespaces,
 * the two lab networks, the real programs started from dist/ with the flags a
 * real install uses, podman containers on the agents' CNI networks — and the
 * cleanup that removes all of it.
 *
 * Topology (every name starts with the prefix, `nwlab` for scripts/lab):
 *
 *   <prefix>-sw           the lab switch: bridges `public` and `mgmt`, one veth
 *                         port per host. Never linked to the root namespace.
 *   host        mgmt (198.51.100.0/24)   public (192.0.2.0/24)
 *   coordinator 198.51.100.10            —
 *   node1       198.51.100.11            192.0.2.11   (WireGuard endpoint)
 *   node2       198.51.100.12            192.0.2.12   (WireGuard endpoint)
 *   gateway1    198.51.100.21            192.0.2.21
 *   gateway2    198.51.100.22            192.0.2.22
 *   internet    —                        192.0.2.100, and 203.0.113.10 on lo
 *                                        (its web server; the gateways route
 *                                        203.0.113.0/24 via 192.0.2.100)
 *
 * Nodes and gateways also get a mount namespace of their own (a `sleep`
 * holder, slave of the root's so podman's /run/netns mounts reach it) with a
 * private tmpfs on /run/wireguard: wireguard-go's control sockets live there,
 * and both nodes use the same interface names. Their programs run inside both
 * namespaces through `nsenter`; podman runs with `nsenter --net=` only (it
 * needs the real /sys and cgroups).
 *
 * Processes are recorded in `<dir>/pids/<name>.pid` as `pid starttime`, and
 * stopped by that pid only if the start time still matches. Anything left in
 * a lab namespace is found with `ip netns pids` and stopped by pid.
 *
 * Lab safety: namespaces only, documentation ranges only, no route or NAT
 * towards the machine's real network.
 */
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const WG_RUN_DIR = '/run/wireguard';

export type HostName = 'coordinator' | 'node1' | 'node2' | 'gateway1' | 'gateway2' | 'internet';
export type NodeName = 'node1' | 'node2';
export type GatewayName = 'gateway1' | 'gateway2';

export interface HostSpec {
  mgmt?: string;
  public?: string;
  /** Extra addresses on lo. */
  loopback?: string[];
  /** Needs its own /run/wireguard (runs WireGuard). */
  wireguard: boolean;
}

export const HOSTS: Record<HostName, HostSpec> = {
  coordinator: { mgmt: '198.51.100.10', wireguard: false },
  node1: { mgmt: '198.51.100.11', public: '192.0.2.11', wireguard: true },
  node2: { mgmt: '198.51.100.12', public: '192.0.2.12', wireguard: true },
  gateway1: { mgmt: '198.51.100.21', public: '192.0.2.21', wireguard: true },
  gateway2: { mgmt: '198.51.100.22', public: '192.0.2.22', wireguard: true },
  internet: { public: '192.0.2.100', loopback: ['203.0.113.10'], wireguard: false },
};
export const HOST_NAMES = Object.keys(HOSTS) as HostName[];
export const NODES: NodeName[] = ['node1', 'node2'];
export const GATEWAYS: GatewayName[] = ['gateway1', 'gateway2'];
export const NETWORKS = { mgmt: '198.51.100.0/24', public: '192.0.2.0/24', internet: '203.0.113.0/24' } as const;
export const COORDINATOR_PORT = 7300;
export const COORDINATOR_URL = `http://${HOSTS.coordinator.mgmt}:${COORDINATOR_PORT}`;
export const INTERNET_WEB = '203.0.113.10';

export interface RunResult {
  status: number;
  stdout: string;
  stderr: string;
}

export interface RunOpts {
  input?: string;
  env?: Record<string, string>;
  timeoutMs?: number;
  allowFailure?: boolean;
}

/** Run to completion without blocking the event loop (the agent socket may be served by this process). */
export function run(argv: readonly string[], opts: RunOpts = {}): Promise<RunResult> {
  return new Promise((res, rej) => {
    const [file, ...args] = argv;
    if (!file) return rej(new Error('run: empty argv'));
    const child = spawn(file, args, { env: { ...process.env, PATH: SYSTEM_PATH, LC_ALL: 'C', ...opts.env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      if (opts.allowFailure) res({ status: -1, stdout, stderr: `${stderr}${err.message}` });
      else rej(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const out = { status: code ?? (signal ? 128 : -1), stdout, stderr };
      if (out.status !== 0 && !opts.allowFailure) rej(new Error(`${argv.join(' ')}: exit ${out.status}: ${stderr.trim() || stdout.trim()}`));
      else res(out);
    });
    child.stdin.on('error', () => {});
    child.stdin.end(opts.input ?? '');
  });
}

function runSync(argv: readonly string[]): RunResult {
  const [file, ...args] = argv;
  const r = spawnSync(file as string, args, { env: { ...process.env, PATH: SYSTEM_PATH, LC_ALL: 'C' }, encoding: 'utf8', timeout: 30_000 });
  return { status: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function waitUntil(check: () => Promise<boolean> | boolean, timeoutMs: number, what: string, stepMs = 100): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(stepMs);
  }
}

/** Start time of a process (clock ticks since boot), to tell a pid from its reuse. */
function startTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

async function stopPid(pid: number, graceMs = 3000): Promise<void> {
  if (!pidAlive(pid)) return;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline && pidAlive(pid)) await sleep(50);
  if (pidAlive(pid)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
    const end = Date.now() + 2000;
    while (Date.now() < end && pidAlive(pid)) await sleep(50);
  }
}

export interface ContainerSpec {
  name: string;
  tenant: string;
  node: NodeName;
  labels: Record<string, string>;
  /** Command inside the busybox rootfs. */
  command: string[];
  /** What it serves, for status and "what to try". */
  serves: string;
}

export interface ContainerInfo {
  tenant: string;
  node: NodeName;
  ip: string;
  id: string;
  /** Path of its network namespace (podman's SandboxKey). */
  netns: string;
  labels: Record<string, string>;
  serves: string;
}

export interface LabState {
  prefix: string;
  dir: string;
  phase: 'creating' | 'ready' | 'failed';
  startedAt: string;
  readyAt?: string;
  seconds?: number;
  containers: Record<string, ContainerInfo>;
  /** Network namespaces podman made (deleted at down if podman left them). */
  sandboxes: string[];
  createdRunDir: boolean;
  notes: string[];
}

export interface LabOptions {
  /** Namespace prefix: `nwlab` for scripts/lab, `nwt<pid>` for tests. */
  prefix: string;
  /** State directory (pid files, logs, program state, podman storage). */
  dir: string;
  /** Repository root (dist/ lives there). */
  repo?: string;
  log?: (line: string) => void;
  /** `netwall-agent run --interval`. */
  agentInterval?: number;
  /** Extra `netwall-agent run` flags. */
  agentArgs?: string[];
}

export class LabWorld {
  readonly prefix: string;
  readonly dir: string;
  readonly repo: string;
  readonly log: (line: string) => void;
  readonly agentInterval: number;
  readonly agentArgs: string[];
  state: LabState;

  constructor(o: LabOptions) {
    this.prefix = o.prefix;
    this.dir = resolve(o.dir);
    this.repo = o.repo ?? resolve(fileURLToPath(new URL('..', import.meta.url)));
    this.log = o.log ?? (() => {});
    this.agentInterval = o.agentInterval ?? 5;
    this.agentArgs = o.agentArgs ?? ['--underlay-restrict', '--underlay-allow-tcp', '22'];
    this.state = this.loadState() ?? {
      prefix: this.prefix,
      dir: this.dir,
      phase: 'creating',
      startedAt: new Date().toISOString(),
      containers: {},
      sandboxes: [],
      createdRunDir: false,
      notes: [],
    };
  }

  // ------------------------------------------------------------ paths and state

  ns(host: HostName | 'sw'): string {
    return `${this.prefix}-${host}`;
  }
  nsPath(host: HostName | 'sw'): string {
    return `/run/netns/${this.ns(host)}`;
  }
  hostDir(host: string): string {
    return join(this.dir, 'hosts', host);
  }
  stateDirOf(host: HostName): string {
    return join(this.hostDir(host), 'state');
  }
  socketOf(node: NodeName): string {
    return join(this.hostDir(node), 'run', 'agent.sock');
  }
  cniConfDirOf(node: NodeName): string {
    return join(this.hostDir(node), 'net.d');
  }
  get cniBinDir(): string {
    return join(this.dir, 'cni-bin');
  }
  get dbPath(): string {
    return join(this.stateDirOf('coordinator'), 'netwall.db');
  }
  logPath(proc: string): string {
    return join(this.dir, 'logs', `${proc}.log`);
  }
  private get statePath(): string {
    return join(this.dir, 'state.json');
  }
  private pidPath(proc: string): string {
    return join(this.dir, 'pids', `${proc}.pid`);
  }
  dist(rel: string): string {
    return join(this.repo, 'dist', rel);
  }

  private loadState(): LabState | null {
    try {
      return JSON.parse(readFileSync(join(resolve(this.dir), 'state.json'), 'utf8')) as LabState;
    } catch {
      return null;
    }
  }

  saveState(): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    writeFileSync(this.statePath, `${JSON.stringify(this.state, null, 2)}\n`, { mode: 0o600 });
  }

  // ------------------------------------------------------------ processes

  /** pid of a recorded process if it is still the same process. */
  pidOf(proc: string): number | null {
    try {
      const [pid, start] = readFileSync(this.pidPath(proc), 'utf8').trim().split(' ');
      const n = Number(pid);
      if (!Number.isInteger(n) || n <= 0) return null;
      if (startTime(n) !== start || !pidAlive(n)) return null;
      return n;
    } catch {
      return null;
    }
  }

  /** Start a detached long-running process (output to its log), recorded by pid. */
  startProcess(proc: string, argv: readonly string[], env: Record<string, string> = {}): number {
    mkdirSync(join(this.dir, 'pids'), { recursive: true });
    mkdirSync(join(this.dir, 'logs'), { recursive: true });
    const fd = openSync(this.logPath(proc), 'a');
    const [file, ...args] = argv;
    const child = spawn(file as string, args, {
      detached: true,
      stdio: ['ignore', fd, fd],
      env: { ...process.env, PATH: SYSTEM_PATH, LC_ALL: 'C', ...env },
    });
    closeSync(fd);
    if (child.pid === undefined) throw new Error(`${proc}: did not start`);
    child.unref();
    // The start time can be read once /proc has the entry (immediately after spawn).
    writeFileSync(this.pidPath(proc), `${child.pid} ${startTime(child.pid) ?? '?'}\n`);
    return child.pid;
  }

  async stopProcess(proc: string, graceMs = 3000): Promise<void> {
    const pid = this.pidOf(proc);
    if (pid !== null) await stopPid(pid, graceMs);
    rmSync(this.pidPath(proc), { force: true });
  }

  /** argv prefix entering a host's network (and, for WireGuard hosts, mount) namespace. */
  enter(host: HostName, opts: { mount?: boolean } = {}): string[] {
    const argv = ['nsenter', `--net=${this.nsPath(host)}`];
    if ((opts.mount ?? true) && HOSTS[host].wireguard) {
      const holder = this.pidOf(`mnt-${host}`);
      if (holder === null) throw new Error(`${host}: its mount namespace holder is not running (scripts/lab up)`);
      // Entering a mount namespace moves to its root: keep the caller's directory.
      argv.push(`--mount=/proc/${holder}/ns/mnt`, `--wd=${process.cwd()}`);
    }
    return argv;
  }

  exec(host: HostName, argv: readonly string[], opts: RunOpts = {}): Promise<RunResult> {
    return run([...this.enter(host), ...argv], opts);
  }

  /** In a container's network namespace (commands of this machine, as a probe from its point of view). */
  execIn(netns: string, argv: readonly string[], opts: RunOpts = {}): Promise<RunResult> {
    return run(['nsenter', `--net=${netns}`, ...argv], opts);
  }

  // ------------------------------------------------------------ network

  private async ip(args: string[]): Promise<void> {
    await run(['ip', ...args]);
  }

  async namespaceExists(name: string): Promise<boolean> {
    return existsSync(`/run/netns/${name}`);
  }

  async labNamespaces(): Promise<string[]> {
    const out = await run(['ip', 'netns', 'list'], { allowFailure: true });
    return out.stdout
      .split('\n')
      .map((l) => l.split(' ')[0] ?? '')
      .filter((n) => n.startsWith(`${this.prefix}-`));
  }

  /** Namespaces, the switch with the two bridges, addresses, routes, mount namespaces. */
  async createNetwork(): Promise<void> {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const sw = this.ns('sw');
    await this.ip(['netns', 'add', sw]);
    for (const br of ['public', 'mgmt']) {
      await this.ip(['-n', sw, 'link', 'add', br, 'type', 'bridge']);
      await this.ip(['-n', sw, 'link', 'set', br, 'up']);
    }
    for (const [i, host] of HOST_NAMES.entries()) {
      const spec = HOSTS[host];
      const ns = this.ns(host);
      await this.ip(['netns', 'add', ns]);
      await this.ip(['-n', ns, 'link', 'set', 'lo', 'up']);
      for (const net of ['mgmt', 'public'] as const) {
        const addr = spec[net];
        if (!addr) continue;
        const port = `${net === 'mgmt' ? 'm' : 'p'}${i}`;
        const ifname = `eth-${net}`;
        await this.ip(['-n', sw, 'link', 'add', port, 'type', 'veth', 'peer', 'name', ifname, 'netns', ns]);
        await this.ip(['-n', sw, 'link', 'set', port, 'master', net, 'up']);
        await this.ip(['-n', ns, 'addr', 'add', `${addr}/24`, 'dev', ifname]);
        await this.ip(['-n', ns, 'link', 'set', ifname, 'up']);
      }
      for (const a of spec.loopback ?? []) await this.ip(['-n', ns, 'addr', 'add', `${a}/32`, 'dev', 'lo']);
    }
    // The gateways reach "the internet" (203.0.113.0/24) through the internet host.
    for (const g of GATEWAYS) await this.ip(['-n', this.ns(g), 'route', 'add', NETWORKS.internet, 'via', HOSTS.internet.public as string]);

    if (!existsSync(WG_RUN_DIR)) {
      mkdirSync(WG_RUN_DIR, { recursive: true });
      this.state.createdRunDir = true;
      this.saveState();
    }
    for (const host of HOST_NAMES.filter((h) => HOSTS[h].wireguard)) await this.startMountHolder(host);
  }

  /**
   * A process holding the host's mount namespace: a slave of the root's (so
   * new /run/netns mounts made by podman show up) with its own tmpfs on
   * /run/wireguard.
   */
  private async startMountHolder(host: HostName): Promise<void> {
    const pid = this.startProcess(`mnt-${host}`, [
      'unshare', '--mount', '--propagation', 'slave',
      'sh', '-c', `mount -t tmpfs -o mode=0700 netwall-lab-${host} ${WG_RUN_DIR} && exec sleep infinity`,
    ]);
    await waitUntil(() => readProcText(`/proc/${pid}/comm`) === 'sleep', 5000, `mount namespace of ${host}`, 20);
    // The pid file's start time is unchanged by exec: it stays valid.
  }

  // ------------------------------------------------------------ coordinator and CLI

  async startCoordinator(): Promise<void> {
    if (this.pidOf('coordinator') !== null) return;
    mkdirSync(this.stateDirOf('coordinator'), { recursive: true, mode: 0o700 });
    this.startProcess('coordinator', [
      ...this.enter('coordinator'),
      process.execPath, this.dist('coordinator/main.js'),
      '--listen', `${HOSTS.coordinator.mgmt}:${COORDINATOR_PORT}`,
      '--db', this.dbPath,
    ]);
    await waitUntil(async () => (await this.curl('GET', '/healthz', undefined, { auth: false })).status === 200, 30_000, 'the coordinator /healthz', 200);
  }

  async stopCoordinator(): Promise<void> {
    await this.stopProcess('coordinator');
  }

  /** The admin token the coordinator generated at first start (admin.token beside the database, 0600). */
  adminToken(): string {
    return readFileSync(join(this.stateDirOf('coordinator'), 'admin.token'), 'utf8').trim();
  }

  /** `netwall ARGS` against the lab coordinator, from the management network (the coordinator's namespace). */
  cli(args: readonly string[], opts: RunOpts = {}): Promise<RunResult> {
    return run([...this.enter('coordinator'), process.execPath, this.dist('cli/main.js'), ...args], {
      ...opts,
      env: { NETWALL_URL: COORDINATOR_URL, NETWALL_TOKEN: this.adminToken(), ...opts.env },
    });
  }

  async cliJson<T = Record<string, unknown>>(args: readonly string[]): Promise<T> {
    const out = await this.cli([...args, '--json']);
    return JSON.parse(out.stdout) as T;
  }

  /** A raw API call with curl from the management network: fast enough for timing (no node start-up). */
  async curl(method: string, path: string, body?: unknown, opts: { auth?: boolean; timeoutMs?: number } = {}): Promise<{ status: number; body: unknown }> {
    const args = ['curl', '-sS', '-m', String(Math.ceil((opts.timeoutMs ?? 10_000) / 1000)), '-X', method, '-o', '-', '-w', '\n%{http_code}'];
    if (opts.auth ?? true) args.push('-H', `authorization: Bearer ${this.adminToken()}`);
    if (body !== undefined) args.push('-H', 'content-type: application/json', '--data-binary', '@-');
    args.push(`${COORDINATOR_URL}${path}`);
    const out = await run([...this.enter('coordinator'), ...args], { allowFailure: true, ...(body !== undefined ? { input: JSON.stringify(body) } : {}) });
    const nl = out.stdout.lastIndexOf('\n');
    const status = Number(out.stdout.slice(nl + 1)) || 0;
    const text = out.stdout.slice(0, Math.max(nl, 0));
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      /* not JSON */
    }
    return { status, body: parsed };
  }

  // ------------------------------------------------------------ agents

  agentArgv(node: NodeName, command: string, args: readonly string[] = []): string[] {
    return [...this.enter(node), process.execPath, this.dist('node-agent/main.js'), command, '--state-dir', this.stateDirOf(node), ...args];
  }

  /** Enroll with a token made by the CLI (skipped when already enrolled). */
  async enrollNode(node: NodeName): Promise<void> {
    if (existsSync(join(this.stateDirOf(node), 'identity.json'))) return;
    const token = await this.cliJson<{ token: string }>(['enroll-token', 'create', '--kind', 'node', '--name', node, '--ttl', '1h']);
    const spec = HOSTS[node];
    await run(
      this.agentArgv(node, 'enroll', [
        '--coordinator', COORDINATOR_URL,
        '--token', token.token,
        '--name', node,
        '--endpoint', spec.public as string,
        '--mgmt-address', spec.mgmt as string,
        '--public-address', spec.public as string,
      ]),
    );
  }

  async startAgent(node: NodeName): Promise<void> {
    if (this.pidOf(node) !== null) return;
    mkdirSync(this.cniConfDirOf(node), { recursive: true });
    mkdirSync(join(this.hostDir(node), 'run'), { recursive: true, mode: 0o750 });
    this.startProcess(node, this.agentArgv(node, 'run', [
      '--socket', this.socketOf(node),
      '--cni-conf-dir', this.cniConfDirOf(node),
      '--cni-bin-dir', this.cniBinDir,
      '--interval', String(this.agentInterval),
      ...this.agentArgs,
    ]));
    await waitUntil(async () => (await this.agentHealthy(node)) || this.pidOf(node) === null, 30_000, `agent ${node} socket`, 100);
    if (this.pidOf(node) === null) throw new Error(`agent ${node} exited; see ${this.logPath(node)}:\n${tail(this.logPath(node))}`);
  }

  async stopAgent(node: NodeName, signal: 'SIGTERM' | 'SIGKILL' = 'SIGTERM'): Promise<void> {
    const pid = this.pidOf(node);
    if (pid !== null && signal === 'SIGKILL') process.kill(pid, 'SIGKILL');
    await this.stopProcess(node);
  }

  async agentHealthy(node: NodeName): Promise<boolean> {
    if (!existsSync(this.socketOf(node))) return false;
    const out = await run(['curl', '-sS', '-m', '2', '--unix-socket', this.socketOf(node), 'http://agent/v1/health'], { allowFailure: true });
    return out.status === 0 && out.stdout.includes('"ok"');
  }

  /** `netwall-agent plan` on the node: what a reconcile of its cached document would change. */
  async agentPlan(node: NodeName): Promise<string[]> {
    const out = await run(this.agentArgv(node, 'plan', ['--json']));
    return (JSON.parse(out.stdout) as unknown[]).map((c) => JSON.stringify(c));
  }

  /** The coordinator's view of a node (`GET /v1/nodes/NAME`): appliedVersion, errors, drops. */
  async nodeView(node: NodeName): Promise<Record<string, unknown>> {
    const r = await this.curl('GET', `/v1/nodes/${node}`);
    if (r.status !== 200) throw new Error(`GET /v1/nodes/${node}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
    return r.body as Record<string, unknown>;
  }

  // ------------------------------------------------------------ gateways

  /** Enroll (once) and run `netwall-gateway` on a gateway host, with the flags a real install uses. */
  async startGateway(g: GatewayName): Promise<void> {
    const spec = HOSTS[g];
    const base = [...this.enter(g), process.execPath, this.dist('gateway/main.js')];
    if (!existsSync(join(this.stateDirOf(g), 'identity.json'))) {
      const token = await this.cliJson<{ token: string }>(['enroll-token', 'create', '--kind', 'gateway', '--name', g, '--ttl', '1h']);
      await run([
        ...base, 'enroll', '--state-dir', this.stateDirOf(g),
        '--coordinator', COORDINATOR_URL, '--token', token.token, '--name', g,
        '--endpoint', spec.public as string, '--mgmt-address', spec.mgmt as string, '--public-address', spec.public as string,
      ]);
    }
    if (this.pidOf(g) === null) this.startProcess(g, [...base, 'run', '--state-dir', this.stateDirOf(g)]);
  }

  // ------------------------------------------------------------ containers

  get rootfs(): string {
    return join(this.dir, 'rootfs');
  }

  /** A busybox root filesystem (no image pulls): sh, httpd, nc, wget, ip. */
  buildRootfs(): void {
    buildBusyboxRootfs(this.rootfs);
  }

  private containersConf(node: NodeName): string {
    return writeContainersConf(join(this.hostDir(node), 'containers.conf'), this.cniBinDir, this.cniConfDirOf(node));
  }

  /** The cgroup (cgroupfs manager) under which a node's containers live. */
  cgroupParent(node: NodeName): string {
    return `/${this.prefix}-${node}`;
  }

  /** podman refuses a runroot longer than 50 characters: keep it short, under /run. */
  get podmanRunRoot(): string {
    return `/run/${this.prefix}-podman`;
  }

  /** podman on a node: its own storage, the node's CNI config directory, in the node's network namespace. */
  podmanArgv(node: NodeName): { argv: string[]; env: Record<string, string> } {
    const conf = this.containersConf(node);
    const base = join(this.hostDir(node), 'podman');
    return {
      argv: [
        'nsenter', `--net=${this.nsPath(node)}`,
        'podman', '--root', join(base, 'root'), '--runroot', join(this.podmanRunRoot, node), '--storage-driver', 'vfs',
        '--network-backend', 'cni', '--network-config-dir', this.cniConfDirOf(node), '--runtime', 'runc',
        '--cgroup-manager', 'cgroupfs', '--events-backend', 'file',
        // Everything podman and runc keep outside the storage, under lab-owned paths too.
        '--tmpdir', join(this.podmanRunRoot, `${node}-tmp`), '--runtime-flag', `root=${join(this.podmanRunRoot, 'runc')}`,
      ],
      env: { CONTAINERS_CONF: conf },
    };
  }

  /** `podman run` a busybox container on the tenant's netwall network; labels go to the CNI plugin via CNI_ARGS. */
  async runContainer(c: ContainerSpec): Promise<ContainerInfo> {
    const existing = this.state.containers[c.name];
    if (existing) return existing;
    const p = this.podmanArgv(c.node);
    await waitUntil(() => existsSync(join(this.cniConfDirOf(c.node), `netwall-${c.tenant}.conflist`)), 30_000, `CNI config netwall-${c.tenant} on ${c.node}`);
    const cniArgs = Object.entries(c.labels).map(([k, v]) => `NETWALL_LABEL_${k}=${v}`).join(';');
    const out = await run(
      [
        ...p.argv, 'run', '-d', '--name', c.name, '--hostname', c.name,
        '--ulimit', 'nofile=1024:1024', '--ulimit', 'nproc=1024:1024', '--cgroup-parent', this.cgroupParent(c.node),
        '--network', `netwall-${c.tenant}`, '--env', `REPLY_TEXT=${c.name} ok`,
        // --rootfs is a switch: the image argument is then a directory.
        '--rootfs', this.rootfs,
        ...c.command,
      ],
      { env: { ...p.env, CNI_ARGS: cniArgs }, timeoutMs: 180_000 },
    );
    const id = out.stdout.trim().split('\n').pop() as string;
    const inspect = JSON.parse((await run([...p.argv, 'inspect', id], { env: p.env })).stdout)[0] as {
      NetworkSettings: { SandboxKey: string; Networks: Record<string, { IPAddress: string }> };
    };
    const info: ContainerInfo = {
      tenant: c.tenant,
      node: c.node,
      ip: inspect.NetworkSettings.Networks[`netwall-${c.tenant}`]?.IPAddress ?? '',
      id,
      netns: inspect.NetworkSettings.SandboxKey,
      labels: c.labels,
      serves: c.serves,
    };
    this.state.containers[c.name] = info;
    if (!this.state.sandboxes.includes(info.netns)) this.state.sandboxes.push(info.netns);
    this.saveState();
    return info;
  }

  async containerRunning(name: string): Promise<boolean> {
    const c = this.state.containers[name];
    if (!c) return false;
    const p = this.podmanArgv(c.node);
    const out = await run([...p.argv, 'inspect', '--format', '{{.State.Running}}', c.id], { env: p.env, allowFailure: true, timeoutMs: 30_000 });
    return out.stdout.trim() === 'true';
  }

  // ------------------------------------------------------------ probes

  /** A TCP/UDP exchange from a network namespace: did the peer answer anything within `seconds`? */
  async reach(netns: string, proto: 'tcp' | 'udp', address: string, port: number, seconds = 2, bind?: string): Promise<boolean> {
    const b = bind ? `,bind=${bind}` : '';
    const target = proto === 'tcp' ? `TCP:${address}:${port},connect-timeout=${seconds}${b}` : `UDP:${address}:${port}${b}`;
    const out = await this.execIn(netns, ['socat', `-T${seconds}`, `-t${seconds}`, '-', target], { input: 'probe\n', allowFailure: true, timeoutMs: (seconds + 3) * 1000 });
    return out.stdout.trim().length > 0;
  }

  async httpGet(netns: string, url: string, seconds = 3): Promise<string | null> {
    const out = await this.execIn(netns, ['curl', '-sS', '-m', String(seconds), url], { allowFailure: true, timeoutMs: (seconds + 3) * 1000 });
    return out.status === 0 ? out.stdout : null;
  }

  // ------------------------------------------------------------ status

  async status(): Promise<Record<string, unknown>> {
    const hosts: Record<string, unknown> = {};
    const nsPresent = new Set(await this.labNamespaces());
    let nodeViews: Record<string, Record<string, unknown>> = {};
    const coordinatorPid = this.pidOf('coordinator');
    let coordinatorHealthy = false;
    if (coordinatorPid !== null) {
      coordinatorHealthy = (await this.curl('GET', '/healthz', undefined, { auth: false, timeoutMs: 3000 })).status === 200;
      if (coordinatorHealthy) {
        for (const n of NODES) {
          const r = await this.curl('GET', `/v1/nodes/${n}`, undefined, { timeoutMs: 3000 });
          if (r.status === 200) nodeViews = { ...nodeViews, [n]: r.body as Record<string, unknown> };
        }
      }
    }
    for (const h of HOST_NAMES) {
      const spec = HOSTS[h];
      const addresses: Record<string, string> = {};
      if (spec.mgmt) addresses.mgmt = spec.mgmt;
      if (spec.public) addresses.public = spec.public;
      if (spec.loopback) addresses.internet = spec.loopback.join(',');
      const programs: Record<string, unknown> = {};
      if (h === 'coordinator') programs['netwall-coordinator'] = { pid: coordinatorPid, healthy: coordinatorHealthy, url: COORDINATOR_URL };
      if (h === 'node1' || h === 'node2') {
        const v = nodeViews[h];
        programs['netwall-agent'] = {
          pid: this.pidOf(h),
          healthy: (await this.agentHealthy(h)) && (v ? (v.appliedVersion as number) === (v.version as number) && ((v.errors as unknown[]) ?? []).length === 0 : false),
          socket: this.socketOf(h),
          ...(v ? { version: v.version, appliedVersion: v.appliedVersion, errors: v.errors, drops: v.drops, lastSeen: v.lastSeen } : {}),
        };
      }
      if (h === 'gateway1' || h === 'gateway2') {
        programs['netwall-gateway'] = { pid: this.pidOf(h), healthy: this.pidOf(h) !== null };
      }
      if (h === 'internet') programs['httpd'] = { pid: this.pidOf('internet-httpd'), healthy: this.pidOf('internet-httpd') !== null, url: `http://${INTERNET_WEB}/` };
      hosts[h] = { namespace: this.ns(h), up: nsPresent.has(this.ns(h)), addresses, programs };
    }
    const containers: Record<string, unknown> = {};
    for (const [name, c] of Object.entries(this.state.containers)) {
      containers[name] = { tenant: c.tenant, node: c.node, ip: c.ip, labels: c.labels, serves: c.serves, running: await this.containerRunning(name) };
    }
    let exposures: unknown[] = [];
    if (coordinatorHealthy) {
      for (const t of ['acme', 'globex']) {
        const r = await this.curl('GET', `/v1/tenants/${t}/exposures`, undefined, { timeoutMs: 3000 });
        if (r.status === 200) exposures = exposures.concat(((r.body as { exposures?: unknown[] }).exposures ?? []).map((e) => ({ tenant: t, ...(e as object) })));
      }
    }
    return {
      prefix: this.prefix,
      phase: this.state.phase,
      startedAt: this.state.startedAt,
      ...(this.state.seconds !== undefined ? { upSeconds: this.state.seconds } : {}),
      networks: NETWORKS,
      hosts,
      containers,
      exposures,
      notes: this.state.notes,
    };
  }

  // ------------------------------------------------------------ teardown

  /**
   * Remove everything: containers (podman rm, while the agents still answer
   * the plugin's DEL), programs by pid, every process left in a lab
   * namespace (by pid, from `ip netns pids`), namespaces, mounts under the
   * state directory, the state directory. Works on a half-made lab.
   */
  async down(opts: { keepDir?: boolean } = {}): Promise<string[]> {
    const problems: string[] = [];
    // 0. processes whose command line names our state directory (router clients the agents
    //    started in container namespaces outlive the agent by design, and podman rm takes the
    //    namespaces that would have found them): by pid, found before anything is removed
    const strays = this.processesUsingDir();
    // 1. containers (podman's DEL reaches the agent while it runs)
    for (const node of NODES) {
      if (!existsSync(join(this.hostDir(node), 'podman'))) continue;
      if (!(await this.namespaceExists(this.ns(node)))) continue;
      const p = this.podmanArgv(node);
      const out = await run([...p.argv, 'rm', '-a', '-f', '-t', '0'], { env: p.env, allowFailure: true, timeoutMs: 120_000 });
      if (out.status !== 0) problems.push(`podman rm on ${node}: ${out.stderr.trim().split('\n').pop()}`);
    }
    // 2. our programs, by pid
    for (const proc of ['internet-httpd', ...GATEWAYS, ...NODES, 'coordinator']) await this.stopProcess(proc);
    // 3. anything else running in a lab namespace or a podman sandbox we made (wireguard-go, conmon, probes)
    const namespaces = await this.labNamespaces();
    const sandboxes = this.state.sandboxes.filter((s) => existsSync(s));
    for (const path of [...namespaces.map((n) => `/run/netns/${n}`), ...sandboxes]) {
      const name = path.replace('/run/netns/', '');
      const pids = await run(['ip', 'netns', 'pids', name], { allowFailure: true });
      const list = pids.stdout.split('\n').map(Number).filter((n) => Number.isInteger(n) && n > 1 && n !== process.pid);
      await Promise.all(list.map((pid) => stopPid(pid, 2000)));
    }
    await Promise.all(strays.filter((pid) => pid !== process.pid).map((pid) => stopPid(pid, 2000)));
    // 4. mount namespace holders
    for (const h of HOST_NAMES) await this.stopProcess(`mnt-${h}`);
    // 5. namespaces
    for (const path of sandboxes) await run(['ip', 'netns', 'del', path.replace('/run/netns/', '')], { allowFailure: true });
    for (const ns of namespaces.reverse()) {
      const r = await run(['ip', 'netns', 'del', ns], { allowFailure: true });
      if (r.status !== 0) problems.push(`ip netns del ${ns}: ${r.stderr.trim()}`);
    }
    // 6. mounts podman may have left under the state directory, then the directory
    const mounts = readProcText('/proc/self/mounts') ?? '';
    const ours = (m: string) => m.startsWith(`${this.dir}/`) || m.startsWith(`${this.podmanRunRoot}/`);
    for (const m of mounts.split('\n').map((l) => l.split(' ')[1] ?? '').filter(ours).reverse()) {
      await run(['umount', '-l', m], { allowFailure: true });
    }
    rmSync(this.podmanRunRoot, { recursive: true, force: true });
    // What a podman that could not remove its containers leaves: CNI result cache entries and cgroups.
    const ids = Object.values(this.state.containers).map((c) => c.id);
    const cache = '/var/lib/cni/results';
    if (existsSync(cache)) {
      for (const f of readdirSync(cache)) if (f.startsWith('netwall-') && ids.some((id) => f.includes(`-${id}-`))) rmSync(join(cache, f), { force: true });
    }
    for (const node of NODES) {
      const out = await run(['find', '/sys/fs/cgroup', '-maxdepth', '3', '-type', 'd', '-path', `*${this.cgroupParent(node)}`], { allowFailure: true });
      for (const cg of out.stdout.split('\n').filter(Boolean)) await run(['find', cg, '-depth', '-type', 'd', '-exec', 'rmdir', '{}', ';'], { allowFailure: true });
    }
    // /run/wireguard stays: removing a directory that is a mount point in other
    // mount namespaces (another lab's hosts) would detach their tmpfs.
    if (!opts.keepDir) rmSync(this.dir, { recursive: true, force: true });
    const left = await this.labNamespaces();
    if (left.length > 0) problems.push(`namespaces left: ${left.join(', ')}`);
    return problems;
  }

  /** Pids of the live processes whose command line names this lab's state directory. */
  processesUsingDir(): number[] {
    return processesWith(`${this.dir}/`).map((p) => p.pid);
  }
}

export function readProcText(path: string): string | null {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return null;
  }
}

export function tail(path: string, lines = 20): string {
  try {
    return readFileSync(path, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/** A busybox root filesystem in `dir` (no image pulls): sh, httpd, nc, wget, ip, and the demo's `reply`. */
export function buildBusyboxRootfs(dir: string): void {
  if (existsSync(join(dir, 'bin', 'busybox'))) return;
  for (const d of ['bin', 'proc', 'sys', 'dev', 'etc', 'tmp', 'run', 'www']) mkdirSync(join(dir, d), { recursive: true });
  const busybox = ['/bin/busybox', '/usr/bin/busybox'].find((p) => existsSync(p));
  if (!busybox) throw new Error('busybox not found (apt-get install busybox-static)');
  copyFileSync(busybox, join(dir, 'bin', 'busybox'));
  runSync(['chmod', '0755', join(dir, 'bin', 'busybox')]);
  for (const applet of runSync([busybox, '--list']).stdout.split('\n').filter(Boolean)) {
    if (applet !== 'busybox' && !existsSync(join(dir, 'bin', applet))) symlinkSync('busybox', join(dir, 'bin', applet));
  }
  writeFileSync(join(dir, 'etc', 'passwd'), 'root:x:0:0:root:/:/bin/sh\n');
  writeFileSync(join(dir, 'etc', 'group'), 'root:x:0:\n');
  writeFileSync(join(dir, 'etc', 'hosts'), '127.0.0.1 localhost\n');
  writeFileSync(join(dir, 'www', 'index.html'), 'hello from netwall\n');
  // A one-line TCP "database": answers every connection with its name.
  writeFileSync(join(dir, 'bin', 'reply'), '#!/bin/sh\necho "$REPLY_TEXT"\n', { mode: 0o755 });
}

/** A containers.conf for podman with the CNI backend, runc, netwall's plugin dir and a CNI config dir. */
export function writeContainersConf(path: string, cniBinDir: string, cniConfDir: string): string {
  writeFileSync(
    path,
    [
      '[network]',
      'network_backend = "cni"',
      `cni_plugin_dirs = ["${cniBinDir}", "/usr/lib/cni"]`,
      `network_config_dir = "${cniConfDir}"`,
      '[engine]',
      'runtime = "runc"',
      'events_logger = "file"',
      'cgroup_manager = "cgroupfs"',
      '',
    ].join('\n'),
  );
  return path;
}

/** Live processes (not zombies, not this one) whose command line contains `text`, e.g. a lab's directory. */
export function processesWith(text: string): { pid: number; cmdline: string }[] {
  const out: { pid: number; cmdline: string }[] = [];
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid <= 1 || pid === process.pid) continue;
    const cmdline = readProcText(`/proc/${pid}/cmdline`);
    const stat = readProcText(`/proc/${pid}/stat`);
    if (cmdline === null || stat === null || stat.slice(stat.lastIndexOf(')') + 2)[0] === 'Z') continue;
    const line = cmdline.split('\0').join(' ');
    if (line.includes(text)) out.push({ pid, cmdline: line });
  }
  return out;
}
