/**
 * scripts/bench gateway — what netwall's gateway costs per request, against
 * nginx as a reverse proxy on the same path and against no proxy at all.
 * Root only; runs entirely in network namespaces named `nwg<pid>-…` and
 * removes them, and every process it started (by pid), on exit or Ctrl-C.
 *
 *   client (192.0.2.2) ──veth── gw (192.0.2.1 | 198.51.100.1) ──veth── app (198.51.100.2)
 *
 * The app is nginx in the app namespace (`return 200` of a fixed 19-byte body,
 * listening on 0.0.0.0:8080, so the router client reaches it on 127.0.0.1 too);
 * nginx answers faster than a Node server, so the app is not what limits the
 * proxies. Modes, all driven by the same wrk settings in one run:
 *   direct   client → app:8080, routed through gw (ip_forward)
 *   nginx    nginx in gw (192.0.2.1:8081, upstream keepalive) → app:8080
 *   relay    a blind Node.js byte relay in gw (192.0.2.1:8082): each client
 *            connection piped to its own connection from 198.51.100.1 to
 *            app:8080. Not a proxy (no Host routing, no forwarded headers, no
 *            limits): the floor of Node's socket plumbing, which any proxy
 *            written for Node pays on this path
 *   relay2   two such relays chained where tunnel mode's two Node processes
 *            sit: one in gw (192.0.2.1:8083) → one in the app namespace
 *            (198.51.100.2:8084) → 127.0.0.1:8080. The floor of any design
 *            with a Node process at each end (a gateway and a router client
 *            in the container), before any multiplexing or HTTP
 *   mesh     netwall's PublicGateway in gw (192.0.2.1:80, Host mesh.bench) with
 *            MeshUpstream: a TCP connection from 198.51.100.1 to app:8080
 *   tunnel   the same gateway process, Host tunnel.bench, RouterServer on
 *            198.51.100.1:7400; a RouterClient in the app namespace dialled it
 *            (grant signed by a coordinator key made by this run) and joins
 *            each HTTP/2 CONNECT stream to 127.0.0.1:8080
 * Then: 5,000 req/s at a fixed rate through the one tunnel (an open-loop
 * raw-socket generator in the client namespace; latency counted from each
 * request's scheduled time, so a stall is not hidden), and memory per idle tunneled connection (N idle TCP
 * connections through a `tcp` exposure over a second tunnel to an app port that
 * accepts and stays silent; RSS and JS heap+external of the gateway and of that
 * router client, after GC, before and after).
 *
 * The "mesh" link here is a plain veth: this measures the gateway's own cost,
 * not WireGuard's (scripts/bench data-plane measures that, and it is the same
 * for every mode that crosses the mesh).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { generateSigningKeyPair, type SigningKeyPair } from '../src/shared/crypto.js';
import type { GatewayExposure, RouterCredential, RouterGrant } from '../src/shared/desired.js';
import { signGrant } from '../src/shared/router-protocol.js';
import { SYSTEM_PATH } from '../src/shared/runner.js';
import { NetnsLab, labUnavailable, waitForAsync } from '../test/lab/helpers/netns.js';
import type { ChildCommand, FixedRateResult, Memory } from './bench-gateway-child.js';
import { deadline, median } from './bench-data-plane.js';
import { recordBenchmark } from './bench-record.js';

// ---------------------------------------------------------------- settings

/** wrk: one thread, this many keep-alive connections, this long per run. */
const CONNECTIONS = 32;
const SECONDS = 8;
/** Unloaded latency: one connection, one request at a time. */
const LOW_SECONDS = 3;
const WARMUP_SECONDS = 2;
/** Saturated runs in the order d n r r2 m t, then back (drift shows as a difference between rounds). */
const ROUNDS = 2;
const FIXED_RATE = 5000;
const FIXED_SECONDS = 10;
const FIXED_CONNECTIONS = 64;
const FIXED_OTHER_SECONDS = 5;
const IDLE_CONNECTIONS = 2000;
const BUDGET_SECONDS = 200;

const CLIENT_ADDR = '192.0.2.2';
const GW_PUBLIC = '192.0.2.1';
const GW_MESH = '198.51.100.1';
const APP_ADDR = '198.51.100.2';
const APP_PORT = 8080;
const SILENT_PORT = 9000;
const NGINX_PORT = 8081;
const RELAY_PORT = 8082;
const RELAY2_PORT = 8083;
const RELAY2_INNER_PORT = 8084;
const GATEWAY_HTTP = 80;
const IDLE_PUBLIC_PORT = 9000;
const ROUTER_PORT = 7400;
const TENANT = 'bench';
const APP_BODY = 'hello from the app\n';

const CHILD = fileURLToPath(new URL('./bench-gateway-child.ts', import.meta.url));
const REPO = fileURLToPath(new URL('..', import.meta.url));

type Mode = 'direct' | 'nginx' | 'relay' | 'relay2' | 'mesh' | 'tunnel';
const MODES: Mode[] = ['direct', 'nginx', 'relay', 'relay2', 'mesh', 'tunnel'];

// ---------------------------------------------------------------- load generators

export interface WrkResult {
  rps: number;
  requests: number;
  p50: number;
  p99: number;
  /** Socket errors (connect, read, write, timeout) plus non-2xx/3xx responses. */
  errors: number;
}

/** Milliseconds from a wrk duration (`512.00us`, `1.02ms`, `1.10s`). */
function wrkMs(text: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(text.trim());
  if (!m) return NaN;
  const v = Number(m[1]);
  return m[2] === 'us' ? v / 1000 : m[2] === 'ms' ? v : m[2] === 's' ? v * 1000 : v * 60_000;
}

export function parseWrk(out: string): WrkResult {
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]);
  const requests = Number(/(\d+) requests in /.exec(out)?.[1]);
  const p50 = wrkMs(/^\s+50%\s+(\S+)/m.exec(out)?.[1] ?? '');
  const p99 = wrkMs(/^\s+99%\s+(\S+)/m.exec(out)?.[1] ?? '');
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
  const errors = (sock ? sock.slice(1, 5).reduce((a, x) => a + Number(x), 0) : 0) + non2xx;
  if (!Number.isFinite(rps) || !Number.isFinite(p50)) throw new Error(`cannot parse wrk output:\n${out}`);
  return { rps, requests, p50, p99, errors };
}

// ---------------------------------------------------------------- child processes

interface Reply {
  ok: boolean;
  reply?: unknown;
  error?: string;
}

/** A Node child (scripts/bench-gateway-child.ts) in a namespace; one reply per command. */
class Child {
  private readonly queue: Reply[] = [];
  private readonly waiters: ((r: Reply) => void)[] = [];
  exited = false;

  constructor(
    readonly name: string,
    readonly proc: ChildProcess,
  ) {
    proc.on('message', (m: Reply) => (this.waiters.length ? this.waiters.shift()!(m) : this.queue.push(m)));
    proc.once('exit', (code, signal) => {
      this.exited = true;
      for (const w of this.waiters.splice(0)) w({ ok: false, error: `${name} exited (${signal ?? code})` });
    });
  }

  /** Registered in `all` before it is ready, so a cleanup meanwhile stops it too. */
  static async start(all: Child[], ns: string, role: string, name: string): Promise<Child> {
    // `ip netns exec` execs node in place, so the pid is node's and the IPC channel is inherited.
    // BENCH_PROFILE_DIR=/tmp/prof: each child writes a .cpuprofile there when it exits.
    const profile = process.env.BENCH_PROFILE_DIR ? ['--cpu-prof', `--cpu-prof-dir=${join(process.env.BENCH_PROFILE_DIR, name.replace(/\W+/g, '-'))}`] : [];
    const proc = spawn('ip', ['netns', 'exec', ns, process.execPath, '--expose-gc', ...profile, '--import', 'tsx', CHILD, role], {
      cwd: REPO,
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      detached: true,
      env: { ...process.env, PATH: `${SYSTEM_PATH}:${process.env.PATH ?? ''}` },
    });
    const child = new Child(name, proc);
    all.push(child);
    const ready = await child.next();
    if (!ready.ok) throw new Error(`${name}: ${ready.error}`);
    return child;
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  private next(): Promise<Reply> {
    if (this.exited) return Promise.resolve({ ok: false, error: `${this.name} has exited` });
    return new Promise((r) => (this.queue.length ? r(this.queue.shift()!) : this.waiters.push(r)));
  }

  async request<T>(cmd: ChildCommand): Promise<T> {
    if (this.exited || !this.proc.connected) throw new Error(`${this.name} is not running`);
    this.proc.send(cmd);
    const r = await this.next();
    if (!r.ok) throw new Error(`${this.name}: ${r.error}`);
    return r.reply as T;
  }

  /** `exit`, then SIGKILL to its process group if it has not gone within 3 s. */
  async stop(): Promise<void> {
    if (this.exited || this.proc.pid === undefined) return;
    const gone = new Promise((r) => this.proc.once('exit', r));
    if (this.proc.connected) this.proc.send({ cmd: 'exit' } satisfies ChildCommand);
    else this.kill('SIGTERM');
    await Promise.race([gone, new Promise((r) => setTimeout(r, 3000))]);
    if (!this.exited) this.kill('SIGKILL');
  }

  private kill(signal: NodeJS.Signals): void {
    try {
      process.kill(-this.proc.pid!, signal);
    } catch {
      /* gone */
    }
  }
}

// ---------------------------------------------------------------- CPU accounting

/** CPU time of processes in clock ticks (USER_HZ 100 on Linux): user space and kernel apart. */
interface Ticks {
  user: number;
  sys: number;
}

/** utime and stime of a process. */
function cpuTicks(pid: number): Ticks {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { user: Number(f[11]), sys: Number(f[12]) };
  } catch {
    return { user: 0, sys: 0 };
  }
}

/** A process and its direct children (nginx master + workers), found by parent pid. */
function withChildren(pid: number): number[] {
  const out = [pid];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(name));
    } catch {
      /* gone */
    }
  }
  return out;
}

const ticksOf = (pids: number[]): Ticks =>
  pids.map(cpuTicks).reduce((a, t) => ({ user: a.user + t.user, sys: a.sys + t.sys }), { user: 0, sys: 0 });

// ---------------------------------------------------------------- nginx

function nginxConf(dir: string, name: string, server: string, extraHttp = ''): string {
  const tmp = join(dir, `${name}-tmp`);
  mkdirSync(tmp, { recursive: true });
  return `# written by scripts/bench-gateway.ts
worker_processes 1;
pid ${join(dir, `${name}.pid`)};
error_log ${join(dir, `${name}-error.log`)} warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path ${tmp}/body;
  proxy_temp_path ${tmp}/proxy;
  fastcgi_temp_path ${tmp}/fastcgi;
  uwsgi_temp_path ${tmp}/uwsgi;
  scgi_temp_path ${tmp}/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 75s;
${extraHttp}
  server {
${server}
  }
}
`;
}

// ---------------------------------------------------------------- the run

function credential(coordinator: SigningKeyPair, exposure: string, workload: string): { keys: SigningKeyPair; credential: RouterCredential } {
  const keys = generateSigningKeyPair();
  const now = Date.now();
  const grant: RouterGrant = {
    v: 1,
    tenant: TENANT,
    exposure,
    workload,
    node: 'app',
    publicKey: keys.publicKey,
    issuedAt: new Date(now - 60_000).toISOString(),
    expiresAt: new Date(now + 3600_000).toISOString(),
  };
  return { keys, credential: signGrant(grant, coordinator.secretKey) };
}

function exposure(p: Partial<GatewayExposure> & Pick<GatewayExposure, 'name' | 'mode'>): GatewayExposure {
  return {
    tenant: TENANT,
    protocol: 'http',
    hostnames: [],
    publicPort: null,
    tls: null,
    proxyProtocol: false,
    targets: [{ workload: 'app', node: 'app', address: APP_ADDR, port: APP_PORT }],
    routerClients: [],
    ...p,
  };
}

async function main(): Promise<void> {
  const unavailable = labUnavailable(['ip', 'sysctl', 'ss', 'wrk', 'nginx', 'curl']);
  if (unavailable) {
    console.error(`bench gateway: ${unavailable} (wrk, nginx, curl: apt-get install -y wrk nginx-light curl)`);
    process.exit(2);
  }
  if (!(globalThis as { gc?: unknown }).gc) {
    console.error('bench gateway: run with node --expose-gc (scripts/bench gateway)');
    process.exit(2);
  }
  const started = performance.now();
  const load = loadavg();
  const cpus = availableParallelism();
  const dir = mkdtempSync(join(tmpdir(), 'nwg-bench-'));
  chmodSync(dir, 0o755); // nginx workers run as nobody
  const lab = new NetnsLab(`nwg${process.pid}`);
  const children: Child[] = [];
  // One cleanup, whoever asks first (a signal, the deadline, main's finally): every caller waits for it,
  // so main failing because a signal already stopped its children cannot exit the process mid-cleanup.
  let cleaning: Promise<void> | null = null;
  const cleanup = (): Promise<void> =>
    (cleaning ??= (async () => {
      for (const c of [...children].reverse()) await c.stop();
      await lab.cleanup();
      rmSync(dir, { recursive: true, force: true });
      const left = await lab.leftovers();
      if (left.length > 0) console.error(`bench gateway: namespaces left behind: ${left.join(' ')}`);
    })());
  // process.on, not once: execa's signal-exit re-raises a signal when it sees no other listener left,
  // which with a once-listener kills this process in the middle of its cleanup.
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      console.error(`\n${sig}: cleaning up`);
      void cleanup().finally(() => process.exit(130));
    });
  }
  deadline(BUDGET_SECONDS, cleanup);

  const lines: string[] = [];
  const out = (s: string): void => {
    console.log(s);
    lines.push(s);
  };
  const progress = (s: string): void => console.error(`[${((performance.now() - started) / 1000).toFixed(0)} s] ${s}`);

  try {
    // ---- topology
    const ns = { client: await lab.namespace('client'), gw: await lab.namespace('gw'), app: await lab.namespace('app') };
    await lab.run(['ip', '-n', ns.client, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'pub0', 'netns', ns.gw]);
    await lab.run(['ip', '-n', ns.app, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'mesh0', 'netns', ns.gw]);
    const addr = async (n: string, dev: string, cidr: string): Promise<void> => {
      await lab.run(['ip', '-n', n, 'addr', 'add', cidr, 'dev', dev]);
      await lab.run(['ip', '-n', n, 'link', 'set', dev, 'up']);
    };
    await addr(ns.client, 'eth0', `${CLIENT_ADDR}/24`);
    await addr(ns.gw, 'pub0', `${GW_PUBLIC}/24`);
    await addr(ns.gw, 'mesh0', `${GW_MESH}/24`);
    await addr(ns.app, 'eth0', `${APP_ADDR}/24`);
    await lab.run(['ip', '-n', ns.client, 'route', 'add', 'default', 'via', GW_PUBLIC]);
    await lab.run(['ip', '-n', ns.app, 'route', 'add', 'default', 'via', GW_MESH]);
    await lab.exec(ns.gw, ['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    for (const n of Object.values(ns)) await lab.exec(n, ['sysctl', '-qw', 'net.core.somaxconn=4096']);

    // ---- the app (nginx) and the reference proxy (nginx)
    const appConf = join(dir, 'app.conf');
    writeFileSync(
      appConf,
      nginxConf(dir, 'app', `    listen ${APP_PORT} backlog=4096;\n    location / { default_type text/plain; return 200 '${APP_BODY.trim()}\\n'; }`),
    );
    const proxyConf = join(dir, 'proxy.conf');
    writeFileSync(
      proxyConf,
      nginxConf(
        dir,
        'proxy',
        `    listen ${GW_PUBLIC}:${NGINX_PORT} backlog=4096;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
    }`,
        `  upstream app { server ${APP_ADDR}:${APP_PORT}; keepalive 128; keepalive_requests 10000000; keepalive_timeout 75s; }`,
      ),
    );
    const nginx = (n: string, conf: string, name: string): ChildProcess =>
      lab.background(['ip', 'netns', 'exec', n, 'nginx', '-p', dir, '-e', join(dir, `${name}-error.log`), '-c', conf, '-g', 'daemon off;']);
    const appNginx = nginx(ns.app, appConf, 'app');
    const proxyNginx = nginx(ns.gw, proxyConf, 'proxy');
    await lab.listening(ns.app, 'tcp', APP_PORT);
    await lab.listening(ns.gw, 'tcp', NGINX_PORT);

    // ---- netwall: keys, grants, exposures, the gateway, two router clients, the silent app
    const coordinator = generateSigningKeyPair();
    const web = credential(coordinator, 'tunnel', 'app');
    const idle = credential(coordinator, 'idle', 'idle');
    const exposures: GatewayExposure[] = [
      exposure({ name: 'mesh', mode: 'mesh', hostnames: ['mesh.bench'] }),
      exposure({ name: 'tunnel', mode: 'tunnel', hostnames: ['tunnel.bench'], routerClients: [{ workload: 'app', node: 'app', publicKey: web.keys.publicKey }] }),
      exposure({
        name: 'idle',
        mode: 'tunnel',
        protocol: 'tcp',
        publicPort: IDLE_PUBLIC_PORT,
        targets: [{ workload: 'idle', node: 'app', address: APP_ADDR, port: SILENT_PORT }],
        routerClients: [{ workload: 'idle', node: 'app', publicKey: idle.keys.publicKey }],
      }),
    ];
    const gateway = await Child.start(children, ns.gw, 'gateway', 'gateway');
    await gateway.request({
      cmd: 'start-gateway',
      name: 'gw1',
      coordinatorKey: coordinator.publicKey,
      exposures,
      publicAddress: GW_PUBLIC,
      httpPort: GATEWAY_HTTP,
      routerAddress: GW_MESH,
      routerPort: ROUTER_PORT,
      tenant: TENANT,
      meshSource: GW_MESH,
    });
    const relay = await Child.start(children, ns.gw, 'relay', 'relay');
    await relay.request({ cmd: 'start-relay', listen: { host: GW_PUBLIC, port: RELAY_PORT }, source: GW_MESH, target: { host: APP_ADDR, port: APP_PORT } });
    const relayOuter = await Child.start(children, ns.gw, 'relay', 'relay2 (gw)');
    await relayOuter.request({ cmd: 'start-relay', listen: { host: GW_PUBLIC, port: RELAY2_PORT }, source: GW_MESH, target: { host: APP_ADDR, port: RELAY2_INNER_PORT } });
    const relayInner = await Child.start(children, ns.app, 'relay', 'relay2 (app)');
    await relayInner.request({ cmd: 'start-relay', listen: { host: APP_ADDR, port: RELAY2_INNER_PORT }, source: '127.0.0.1', target: { host: '127.0.0.1', port: APP_PORT } });
    const silent = await Child.start(children, ns.app, 'silent', 'silent app');
    await silent.request({ cmd: 'start-silent', port: SILENT_PORT });
    const gwTarget = { host: 'gw1', meshAddress: GW_MESH, routerPort: ROUTER_PORT };
    const rcWeb = await Child.start(children, ns.app, 'router-client', 'router client (web)');
    await rcWeb.request({
      cmd: 'start-router-client',
      gateway: gwTarget,
      credential: web.credential,
      secretKey: web.keys.secretKey,
      target: { host: '127.0.0.1', port: APP_PORT },
      maxConcurrentStreams: 1000,
    });
    const rcIdle = await Child.start(children, ns.app, 'router-client', 'router client (idle)');
    await rcIdle.request({
      cmd: 'start-router-client',
      gateway: gwTarget,
      credential: idle.credential,
      secretKey: idle.keys.secretKey,
      target: { host: '127.0.0.1', port: SILENT_PORT },
      // The default (1000 concurrent streams per session) is below the idle connections measured here.
      maxConcurrentStreams: IDLE_CONNECTIONS + 100,
    });
    progress('topology up');

    // ---- each mode answers with the app's body (and only through its own path)
    const urls: Record<Mode, { url: string; host?: string }> = {
      direct: { url: `http://${APP_ADDR}:${APP_PORT}/` },
      nginx: { url: `http://${GW_PUBLIC}:${NGINX_PORT}/` },
      relay: { url: `http://${GW_PUBLIC}:${RELAY_PORT}/` },
      relay2: { url: `http://${GW_PUBLIC}:${RELAY2_PORT}/` },
      mesh: { url: `http://${GW_PUBLIC}:${GATEWAY_HTTP}/`, host: 'mesh.bench' },
      tunnel: { url: `http://${GW_PUBLIC}:${GATEWAY_HTTP}/`, host: 'tunnel.bench' },
    };
    for (const m of MODES) {
      const u = urls[m];
      const res = await lab.exec(ns.client, ['curl', '-sS', '--max-time', '5', ...(u.host ? ['-H', `Host: ${u.host}`] : []), u.url], { allowFailure: true });
      if (res.stdout !== APP_BODY) throw new Error(`${m}: expected the app's body, got ${JSON.stringify(res.stdout)} ${res.stderr.trim()}`);
    }
    const unknown = await lab.exec(ns.client, ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '-H', 'Host: nope.bench', urls.mesh.url], { allowFailure: true });
    if (unknown.stdout !== '404') throw new Error(`gateway answered ${unknown.stdout} for an unknown Host (expected 404)`);

    const wrk = async (m: Mode, connections: number, seconds: number): Promise<WrkResult> => {
      const u = urls[m];
      const res = await lab.exec(
        ns.client,
        ['wrk', '-t1', `-c${connections}`, `-d${seconds}s`, '--timeout', '5s', '--latency', ...(u.host ? ['-H', `Host: ${u.host}`] : []), u.url],
        { timeoutMs: (seconds + 20) * 1000 },
      );
      return parseWrk(res.stdout);
    };
    const proxyPids: Record<Mode, () => number[]> = {
      direct: () => [],
      nginx: () => withChildren(proxyNginx.pid!),
      relay: () => [relay.pid],
      relay2: () => [relayOuter.pid, relayInner.pid],
      mesh: () => [gateway.pid],
      tunnel: () => [gateway.pid, rcWeb.pid],
    };
    const appPids = withChildren(appNginx.pid!);

    // ---- warm-up (JIT, connection pools), then the measured rounds
    for (const m of MODES) await wrk(m, CONNECTIONS, WARMUP_SECONDS);
    progress('warm-up done');
    const runs: Record<Mode, (WrkResult & { cpuUs: number; userUs: number; appCpuUs: number })[]> = { direct: [], nginx: [], relay: [], relay2: [], mesh: [], tunnel: [] };
    const low: Record<Mode, WrkResult[]> = { direct: [], nginx: [], relay: [], relay2: [], mesh: [], tunnel: [] };
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 === 0 ? MODES : [...MODES].reverse();
      for (const m of order) {
        const pids = proxyPids[m]();
        const t0 = ticksOf(pids);
        const a0 = ticksOf(appPids);
        const r = await wrk(m, CONNECTIONS, SECONDS);
        const perReq = (ticks: number): number => (r.requests > 0 ? (ticks * 10_000) / r.requests : NaN); // 1 tick = 10 ms
        const t1 = ticksOf(pids);
        const a1 = ticksOf(appPids);
        runs[m].push({
          ...r,
          cpuUs: perReq(t1.user + t1.sys - t0.user - t0.sys),
          userUs: perReq(t1.user - t0.user),
          appCpuUs: perReq(a1.user + a1.sys - a0.user - a0.sys),
        });
        low[m].push(await wrk(m, 1, LOW_SECONDS));
        progress(`round ${round + 1} ${m}: ${Math.round(r.rps)} req/s`);
      }
    }

    // ---- a fixed 5,000 req/s through the one tunnel (and, for scale, straight to the app)
    const loader = await Child.start(children, ns.client, 'load', 'fixed-rate load');
    const fixedRun = (m: Mode, seconds: number): Promise<FixedRateResult> => {
      const u = new URL(urls[m].url);
      return loader.request<FixedRateResult>({
        cmd: 'rate',
        host: u.hostname,
        port: Number(u.port || 80),
        hostHeader: urls[m].host ?? u.host,
        rate: FIXED_RATE,
        seconds,
        connections: FIXED_CONNECTIONS,
      });
    };
    // The other modes at the same rate (shorter), for the latency each path adds below saturation.
    const fixedAt: Partial<Record<Mode, FixedRateResult>> = {};
    for (const m of ['direct', 'nginx', 'mesh'] as const) fixedAt[m] = await fixedRun(m, FIXED_OTHER_SECONDS);
    const fixed = await fixedRun('tunnel', FIXED_SECONDS);
    fixedAt.tunnel = fixed;
    await loader.stop();
    progress('fixed rate done');

    // ---- memory per idle tunneled connection
    type RouterStats = { sessionsTotal: number; streamsActive: number; streamsTotal: number; streamsFailed: number; streamsReset: number; openRejected: number };
    type GwStats = { router: RouterStats; mesh: Record<string, number>; public: { rejections: Record<string, number>; activeConnections: number } };
    // Let the kept upstream streams of the load runs expire (upstreamKeepAliveMs, 1.5 s) first.
    await waitForAsync(async () => (await gateway.request<GwStats>({ cmd: 'stats' })).router.streamsActive === 0, 10_000, 'tunnel streams of the load runs to close');
    const idleClients = await Child.start(children, ns.client, 'idle-clients', 'idle clients');
    const g0 = await gateway.request<Memory>({ cmd: 'memory' });
    const r0 = await rcIdle.request<Memory>({ cmd: 'memory' });
    const opened = await idleClients.request<{ opened: number; errors: number; firstError: string }>({ cmd: 'open', host: GW_PUBLIC, port: IDLE_PUBLIC_PORT, count: IDLE_CONNECTIONS });
    if (opened.opened !== IDLE_CONNECTIONS) throw new Error(`idle connections: ${opened.opened} opened, ${opened.errors} errors (${opened.firstError})`);
    await waitForAsync(
      async () => (await silent.request<{ connections: number }>({ cmd: 'stats' })).connections === IDLE_CONNECTIONS,
      20_000,
      `${IDLE_CONNECTIONS} tunneled connections to reach the silent app`,
    );
    const rcIdleStats = await rcIdle.request<{ streamsActive: number }>({ cmd: 'stats' });
    const gwIdleStats = await gateway.request<GwStats>({ cmd: 'stats' });
    const g1 = await gateway.request<Memory>({ cmd: 'memory' });
    const r1 = await rcIdle.request<Memory>({ cmd: 'memory' });
    const stillOpen = await idleClients.request<{ open: number }>({ cmd: 'stats' });
    if (stillOpen.open !== IDLE_CONNECTIONS || rcIdleStats.streamsActive !== IDLE_CONNECTIONS || gwIdleStats.router.streamsActive !== IDLE_CONNECTIONS) {
      throw new Error(`idle: client ${stillOpen.open} open, gateway ${gwIdleStats.router.streamsActive} streams, router client ${rcIdleStats.streamsActive} streams`);
    }
    await idleClients.stop();
    progress('idle memory done');

    const final = await gateway.request<GwStats>({ cmd: 'stats' });
    const rcWebStats = await rcWeb.request<{ streamsTotal: number; targetErrors: number; aborted: number }>({ cmd: 'stats' });

    // ---- report
    const mean = (xs: number[]): number => xs.reduce((a, x) => a + x, 0) / xs.length;
    const rps = (m: Mode): number => mean(runs[m].map((r) => r.rps));
    const p50 = (m: Mode): number => median(runs[m].map((r) => r.p50));
    const p99 = (m: Mode): number => median(runs[m].map((r) => r.p99));
    const lowP50 = (m: Mode): number => median(low[m].map((r) => r.p50));
    const lowP99 = (m: Mode): number => median(low[m].map((r) => r.p99));
    const errs = (m: Mode): number => runs[m].reduce((a, r) => a + r.errors, 0) + low[m].reduce((a, r) => a + r.errors, 0);
    const f1 = (x: number): string => x.toFixed(1);
    const f2 = (x: number): string => x.toFixed(2);
    const ms = (x: number): string => `${x.toFixed(2)} ms`;
    const kb = (bytes: number): string => `${(bytes / 1024).toFixed(1)} KB`;
    const pad = (s: string, n: number): string => s.padEnd(n);
    const padL = (s: string, n: number): string => s.padStart(n);

    out(`load average at start ${load.map((x) => x.toFixed(2)).join(' ')} (${cpus} CPUs, shared by wrk, the proxy, the app and the router client; shared machine, other jobs may run alongside)`);
    out(`topology: client ${CLIENT_ADDR} —veth— gw ${GW_PUBLIC} | ${GW_MESH} —veth— app ${APP_ADDR}; app = nginx (1 worker, return 200, ${APP_BODY.length}-byte body); reference proxy = nginx (1 worker, upstream keepalive); relay = a blind Node.js byte relay, one upstream connection per client connection (no HTTP at all: the floor of a Node proxy); relay2 = two of them chained, in gw and in the app namespace (the floor of tunnel mode's two Node processes)`);
    out(`load: wrk -t1 -c${CONNECTIONS} -d${SECONDS}s keep-alive, ${ROUNDS} rounds (d n r r2 m t, then t m r2 r n d) after a ${WARMUP_SECONDS} s warm-up each; unloaded latency: wrk -c1 -d${LOW_SECONDS}s after each run`);
    out('');
    out(`${pad('mode', 8)} ${padL('req/s', 8)} ${padL('(runs)', 16)} ${padL('p50', 9)} ${padL('p99', 9)} ${padL('c1 p50', 9)} ${padL('c1 p99', 9)} ${padL('errors', 6)} ${padL('proxy CPU/req (user)', 22)} ${padL('app CPU/req', 11)}`);
    for (const m of MODES) {
      const cpu = m === 'direct' ? '—' : `${f1(mean(runs[m].map((r) => r.cpuUs)))} µs (${f1(mean(runs[m].map((r) => r.userUs)))})`;
      out(
        `${pad(m, 8)} ${padL(String(Math.round(rps(m))), 8)} ${padL(`(${runs[m].map((r) => Math.round(r.rps)).join(', ')})`, 16)} ${padL(ms(p50(m)), 9)} ${padL(ms(p99(m)), 9)} ${padL(ms(lowP50(m)), 9)} ${padL(ms(lowP99(m)), 9)} ${padL(String(errs(m)), 6)} ${padL(cpu, 22)} ${padL(`${f1(mean(runs[m].map((r) => r.appCpuUs)))} µs`, 11)}`,
      );
    }
    out('');
    const verdict = (ok: boolean): string => (ok ? 'met' : 'NOT met');
    for (const m of ['mesh', 'tunnel'] as const) {
      const ratio = rps(m) / rps('nginx');
      const over = p50(m) - p50('direct');
      const overLow = lowP50(m) - lowP50('direct');
      out(
        `${m}: req/s ${f2(ratio)} x nginx (target >= 0.8: ${verdict(ratio >= 0.8)}); p50 overhead vs direct ${ms(over)} at ${CONNECTIONS} connections (target <= 1 ms: ${verdict(over <= 1)}), ${ms(overLow)} unloaded (1 connection); nginx's own: ${ms(p50('nginx') - p50('direct'))} / ${ms(lowP50('nginx') - lowP50('direct'))}`,
      );
    }
    out(
      `relay (Node.js floor, no HTTP work): req/s ${f2(rps('relay') / rps('nginx'))} x nginx, ${f1(mean(runs.relay.map((r) => r.cpuUs)))} µs CPU/req (${f1(mean(runs.relay.map((r) => r.userUs)))} user); mesh ${f2(rps('mesh') / rps('relay'))} x relay, tunnel ${f2(rps('tunnel') / rps('relay'))} x relay`,
    );
    out(
      `relay2 (two Node.js relays chained, where the gateway and the router client run): req/s ${f2(rps('relay2') / rps('nginx'))} x nginx, ${f1(mean(runs.relay2.map((r) => r.cpuUs)))} µs CPU/req in both; tunnel ${f2(rps('tunnel') / rps('relay2'))} x relay2`,
    );
    out('');
    out(`fixed ${FIXED_RATE} req/s, open loop over ${FIXED_CONNECTIONS} keep-alive connections (tunnel ${FIXED_SECONDS} s, the others ${FIXED_OTHER_SECONDS} s); latency from each request's scheduled time (from its write in brackets):`);
    out(`${pad('mode', 8)} ${padL('answered/s', 10)} ${padL('answered', 14)} ${padL('last at', 8)} ${padL('p50', 10)} ${padL('p99', 10)} ${padL('max', 10)} ${padL('[p50', 10)} ${padL('p99]', 10)} ${padL('errors', 6)} ${padL('non-200', 7)}`);
    for (const m of MODES) {
      const r = fixedAt[m];
      if (!r) continue;
      out(
        `${pad(m, 8)} ${padL(String(Math.round(r.achieved)), 10)} ${padL(`${r.ok}/${r.scheduled}`, 14)} ${padL(`${r.elapsed.toFixed(1)} s`, 8)} ${padL(ms(r.p50), 10)} ${padL(ms(r.p99), 10)} ${padL(ms(r.max), 10)} ${padL(`[${ms(r.p50Sent)}`, 10)} ${padL(`${ms(r.p99Sent)}]`, 10)} ${padL(String(r.errors), 6)} ${padL(String(r.non200), 7)}`,
      );
    }
    // Kept up: every request answered 200, and the rate held (not caught up after the schedule ended).
    const fixedOk = fixed.errors === 0 && fixed.non200 === 0 && fixed.ok === fixed.scheduled && fixed.achieved >= FIXED_RATE * 0.98;
    out(`tunnel: ${FIXED_RATE} req/s through one tunnel with 0 errors, kept up with (>= 98 % of the rate over the time to the last answer): ${verdict(fixedOk)}`);
    for (const m of ['mesh', 'tunnel'] as const) {
      const over = fixedAt[m]!.p50 - fixedAt.direct!.p50;
      out(`${m}: p50 overhead vs direct at ${FIXED_RATE} req/s ${ms(over)} (target <= 1 ms: ${verdict(over <= 1)}); nginx's own: ${ms(fixedAt.nginx!.p50 - fixedAt.direct!.p50)}`);
    }
    out('');
    const gwPer = (g1.rss - g0.rss) / IDLE_CONNECTIONS;
    const rcPer = (r1.rss - r0.rss) / IDLE_CONNECTIONS;
    out(
      `idle tunneled connections (${IDLE_CONNECTIONS}, tcp exposure over one tunnel, app silent): gateway ${kb(gwPer)} RSS (${kb((g1.js - g0.js) / IDLE_CONNECTIONS)} JS heap+external), router client ${kb(rcPer)} RSS (${kb((r1.js - r0.js) / IDLE_CONNECTIONS)} JS heap+external) per connection; both ends ${kb(gwPer + rcPer)}   (target <= 64 KB: ${verdict(gwPer + rcPer <= 64 * 1024)}; kernel socket buffers not included)`,
    );
    out(
      `tunnel sessions opened in the whole run: ${final.router.sessionsTotal} (web + idle: 2 = no reconnect); streams ${final.router.streamsTotal} (failed ${final.router.streamsFailed}, reset by the gateway ${final.router.streamsReset}, open rejected ${final.router.openRejected}); router client (web): ${rcWebStats.streamsTotal} streams, ${rcWebStats.targetErrors} app errors; mesh: ${final.mesh.opens} connections, ${final.mesh.connectFailures} connect failures; gateway rejections: ${JSON.stringify(Object.fromEntries(Object.entries(final.public.rejections).filter(([, v]) => v > 0)))}`,
    );
    out(`bench wall time: ${((performance.now() - started) / 1000).toFixed(0)} s   (budget < 180 s)`);
  } finally {
    await cleanup();
  }
  recordBenchmark('gateway', lines);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err: Error) => {
    console.error(`bench gateway: ${err.stack ?? err.message}`);
    process.exit(1);
  });
}
