/**
 * `scripts/lab` (the bash entry installs and builds, then runs this):
 *
 *   scripts/lab up                    build the demo world in network namespaces
 *   scripts/lab status [--json]       hosts, addresses, programs' health, containers, exposures
 *   scripts/lab exec HOST|CONTAINER -- CMD…   run a command of this machine in its namespace
 *   scripts/lab netwall -- ARGS…      the netwall CLI against the lab coordinator (admin token)
 *   scripts/lab check [--json]        probe the demo's intent (DEMO_INTENT below); exit 1 on any mismatch
 *   scripts/lab down                  remove everything
 *
 * The topology and the mechanics are in lab-world.ts. State: .lab/ in the repository.
 */
import { existsSync, readFileSync } from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ROUTER_PORT } from '../src/shared/desired.js';
import {
  COORDINATOR_PORT,
  COORDINATOR_URL,
  GATEWAYS,
  HOSTS,
  HOST_NAMES,
  INTERNET_WEB,
  LabWorld,
  NETWORKS,
  NODES,
  SYSTEM_PATH,
  run,
  tail,
  waitUntil,
  type ContainerSpec,
  type HostName,
  type HostSpec,
} from './lab-world.js';

const repo = resolve(fileURLToPath(new URL('..', import.meta.url)));
const PREFIX = process.env.NETWALL_LAB_PREFIX ?? 'nwlab';
const DIR = process.env.NETWALL_LAB_DIR ?? join(repo, '.lab');

const say = (line: string) => console.log(`[lab] ${line}`);

/** The demo (scripts/demo.json, shared with the Vagrant lab): two tenants on two nodes, each node carrying both tenants. */
const DEMO_CONTAINERS = (JSON.parse(readFileSync(join(repo, 'scripts', 'demo.json'), 'utf8')) as { containers: ContainerSpec[] }).containers;

function world(): LabWorld {
  return new LabWorld({ prefix: PREFIX, dir: DIR, repo, log: say });
}

async function isUp(w: LabWorld): Promise<boolean> {
  if (w.state.phase !== 'ready') return false;
  if (w.pidOf('coordinator') === null) return false;
  for (const n of NODES) if (w.pidOf(n) === null) return false;
  for (const name of Object.keys(w.state.containers)) if (!(await w.containerRunning(name))) return false;
  return true;
}

async function up(): Promise<void> {
  const t0 = Date.now();
  let w = world();
  if (await isUp(w)) {
    say(`already up (since ${w.state.readyAt}); 'scripts/lab status' shows it, 'scripts/lab down' removes it`);
    printTry(w);
    return;
  }
  if (existsSync(DIR) || (await w.labNamespaces()).length > 0) {
    say('a previous lab is incomplete or stopped: removing it first');
    const problems = await w.down();
    for (const p of problems) say(`warning: ${p}`);
    w = world();
  }
  for (const f of ['coordinator/main.js', 'node-agent/main.js', 'cli/main.js', 'node-agent/cni/main.js']) {
    if (!existsSync(w.dist(f))) throw new Error(`dist/${f} missing: run npm run build`);
  }
  w.saveState();
  try {
    say(`network: namespaces ${PREFIX}-*, mgmt ${NETWORKS.mgmt}, public ${NETWORKS.public}, internet ${NETWORKS.internet}`);
    await w.createNetwork();

    say(`coordinator on ${COORDINATOR_URL} (state ${w.stateDirOf('coordinator')})`);
    await w.startCoordinator();

    for (const n of NODES) {
      say(`${n}: enroll with a token from 'netwall enroll-token create', start netwall-agent`);
      await w.enrollNode(n);
      await w.startAgent(n);
    }

    for (const g of GATEWAYS) {
      say(`${g}: enroll with a token, start netwall-gateway (public HTTP on ${HOSTS[g].public}:80, HTTPS :443)`);
      await w.startGateway(g);
    }

    say(`internet: a web server on ${INTERNET_WEB}:80`);
    w.buildRootfs();
    w.startProcess('internet-httpd', [...w.enter('internet'), '/bin/busybox', 'httpd', '-f', '-p', `${INTERNET_WEB}:80`, '-h', join(w.rootfs, 'www')]);

    say('the demo\'s tenants, policies, exposures and egress: scripts/demo-setup (the Vagrant lab runs it too)');
    const demo = await run([join(repo, 'scripts', 'demo-setup')], {
      env: {
        NETWALL_URL: COORDINATOR_URL,
        NETWALL_TOKEN: w.adminToken(),
        NETWALL_GATEWAYS: GATEWAYS.join(' '),
        NETWALL_INTERNET_WEB: INTERNET_WEB,
        NETWALL_CLI: [...w.enter('coordinator'), process.execPath, w.dist('cli/main.js')].join(' '),
      },
    });
    say(demo.stdout.trim());

    for (const c of DEMO_CONTAINERS) {
      say(`${c.name}: podman run on ${c.node}, network netwall-${c.tenant}, labels ${Object.entries(c.labels).map(([k, v]) => `${k}=${v}`).join(',')}`);
      const info = await w.runContainer(c);
      say(`${c.name}: ${info.ip}`);
    }

    say('waiting for both agents to apply the latest version');
    await waitUntil(
      async () => {
        for (const n of NODES) {
          const v = await w.nodeView(n);
          if (v.appliedVersion !== v.version) return false;
        }
        return true;
      },
      60_000,
      'agents to apply their desired state',
      250,
    );
    // The demo's first flow, as a smoke test (the first packets also bring the WireGuard sessions up).
    const web = w.state.containers['acme-web']!;
    const db = w.state.containers['acme-db']!;
    await waitUntil(() => w.reach(web.netns, 'tcp', db.ip, 5432, 1), 30_000, 'acme-web → acme-db:5432 across the mesh', 200);

    w.state.phase = 'ready';
    w.state.readyAt = new Date().toISOString();
    w.state.seconds = Math.round((Date.now() - t0) / 100) / 10;
    w.saveState();
    printTry(w);
    say(`up in ${w.state.seconds} s`);
  } catch (err) {
    w.state.phase = 'failed';
    w.saveState();
    say(`up failed: ${(err as Error).message}`);
    for (const p of ['coordinator', ...NODES, ...GATEWAYS]) {
      const t = tail(w.logPath(p), 8);
      if (t) say(`last lines of ${w.logPath(p)}:\n${t}`);
    }
    say("'scripts/lab down' removes what was made");
    process.exitCode = 1;
  }
}

function printTry(w: LabWorld): void {
  const c = w.state.containers;
  const ip = (n: string) => c[n]?.ip ?? '?';
  const lines = [
    '',
    'What to try (ready to paste):',
    '',
    '  scripts/lab status                                       # hosts, addresses, programs, containers',
    '  scripts/lab check                                        # probes every flow the demo allows and denies (table; exit 1 on a mismatch)',
    '',
    '  # allowed: acme app=web → app=db tcp 5432, across nodes (node1 → node2)',
    `  scripts/lab exec acme-web -- socat -T2 - TCP:${ip('acme-db')}:5432,connect-timeout=2 </dev/null`,
    `  scripts/lab exec globex-app -- socat -T2 - TCP:${ip('globex-db')}:5432,connect-timeout=2 </dev/null`,
    '  # denied: no policy db → web; another tenant; the coordinator; the node itself',
    `  scripts/lab exec acme-db -- curl -m 3 http://${ip('acme-web')}:8080/        # policy: fails`,
    `  scripts/lab exec globex-app -- socat -T2 - TCP:${ip('acme-db')}:5432,connect-timeout=2 </dev/null   # cross-tenant: fails`,
    `  scripts/lab exec acme-web -- curl -m 3 ${COORDINATOR_URL}/healthz          # container → coordinator: fails`,
    `  scripts/lab exec acme-web -- ping -c 2 -W 1 ${HOSTS.node1.mgmt}                 # container → its host: fails`,
    '  # the internet cannot reach a container, even with a route through the node (NAT-only):',
    `  scripts/lab exec internet -- ip route add 10.240.0.0/12 via ${HOSTS.node1.public}`,
    `  scripts/lab exec internet -- curl -m 3 http://${ip('acme-web')}:8080/        # fails`,
    `  scripts/lab exec internet -- ip route del 10.240.0.0/12 via ${HOSTS.node1.public}`,
    '  # look inside',
    '  scripts/lab exec node1 -- wg show',
    '  scripts/lab exec node1 -- nft list table inet netwall',
    '  scripts/lab netwall -- node show node1                  # versions and drop counters reported by the agent',
    '  scripts/lab netwall -- workload list --tenant acme',
    '  # change the policy and watch it apply within a second',
    `  scripts/lab exec globex-db -- curl -m 3 http://${ip('globex-app')}:8080/     # no policy: fails`,
    "  scripts/lab netwall -- policy set --tenant globex db-to-app --from app=db --to app=app --allow tcp:8080",
    `  scripts/lab exec globex-db -- curl -m 3 http://${ip('globex-app')}:8080/     # now works`,
    '  # …but no policy opens a tunnel-mode entry point: acme-web accepts no connection at all',
    "  scripts/lab netwall -- policy set --tenant acme db-to-web --from app=db --to app=web --allow tcp:8080",
    `  scripts/lab exec acme-db -- curl -m 3 http://${ip('acme-web')}:8080/        # still fails (drop reason tunnel_entry)`,
    '  # the public side: through either gateway (web.acme.test: tunnel mode, app.globex.test: mesh mode)',
    `  scripts/lab exec internet -- curl -m 3 -H 'Host: web.acme.test' http://${HOSTS.gateway1.public}/`,
    `  scripts/lab exec internet -- curl -m 3 -H 'Host: app.globex.test' http://${HOSTS.gateway2.public}/`,
    `  scripts/lab exec internet -- curl -m 3 -H 'Host: nobody.test' http://${HOSTS.gateway1.public}/     # 404: nothing forwarded`,
    `  scripts/lab exec gateway1 -- curl -m 3 http://${ip('acme-web')}:8080/       # tunnel mode: the entry point accepts no connection, not even from a gateway`,
    '  scripts/lab exec gateway1 -- curl -s http://127.0.0.1:7401/healthz   # router sessions, applied version (admin endpoint: loopback only)',
    '  # egress: acme reaches the internet web server on port 80 only, through gateway1 (masqueraded)',
    `  scripts/lab exec acme-web -- curl -m 3 http://${INTERNET_WEB}/            # works`,
    `  scripts/lab exec globex-app -- curl -m 3 http://${INTERNET_WEB}/          # no egress rule: fails`,
    '  # a container of your own',
    `  scripts/lab netwall -- tenant create initech`,
    '',
  ];
  lines.push('  scripts/lab down                                         # remove everything', '');
  console.log(lines.join('\n'));
}

async function status(json: boolean): Promise<void> {
  const w = world();
  if (!existsSync(DIR)) {
    if (json) console.log(JSON.stringify({ phase: 'down', hosts: {}, containers: {} }));
    else say('the lab is down (scripts/lab up)');
    return;
  }
  const s = (await w.status()) as {
    phase: string;
    upSeconds?: number;
    hosts: Record<string, { namespace: string; up: boolean; addresses: Record<string, string>; programs: Record<string, { pid: number | null; healthy: boolean; appliedVersion?: number; version?: number; drops?: Record<string, number>; note?: string }> }>;
    containers: Record<string, { tenant: string; node: string; ip: string; labels: Record<string, string>; serves: string; running: boolean }>;
    exposures: { tenant: string; name: string; hostnames?: string[] }[];
    notes: string[];
  };
  if (json) {
    console.log(JSON.stringify(s, null, 2));
    return;
  }
  console.log(`lab ${PREFIX}: ${s.phase}${s.upSeconds !== undefined ? ` (up took ${s.upSeconds} s)` : ''}`);
  console.log('\nHOST         MGMT            PUBLIC          PROGRAM              HEALTH');
  for (const [name, h] of Object.entries(s.hosts)) {
    const progs = Object.entries(h.programs);
    const p = progs[0];
    const health = p ? (p[1].note ? p[1].note : `${p[1].healthy ? 'ok' : 'DOWN'}${p[1].pid ? ` (pid ${p[1].pid})` : ''}${p[1].version !== undefined ? ` v${p[1].appliedVersion}/${p[1].version}` : ''}`) : '-';
    console.log(`${name.padEnd(12)} ${(h.addresses.mgmt ?? '-').padEnd(15)} ${(h.addresses.public ?? '-').padEnd(15)} ${(p?.[0] ?? '-').padEnd(20)} ${h.up ? health : 'namespace missing'}`);
  }
  console.log('\nCONTAINER    TENANT   NODE    IP              LABELS     SERVES     STATE');
  for (const [name, c] of Object.entries(s.containers)) {
    const labels = Object.entries(c.labels).map(([k, v]) => `${k}=${v}`).join(',');
    console.log(`${name.padEnd(12)} ${c.tenant.padEnd(8)} ${c.node.padEnd(7)} ${c.ip.padEnd(15)} ${labels.padEnd(10)} ${c.serves.padEnd(10)} ${c.running ? 'running' : 'STOPPED'}`);
  }
  console.log(`\nEXPOSURES: ${s.exposures.length === 0 ? 'none' : s.exposures.map((e) => `${e.tenant}/${e.name} ${(e.hostnames ?? []).join(',')}`).join('; ')}`);
  for (const n of s.notes) console.log(`note: ${n}`);
}

async function execCmd(target: string, argv: string[]): Promise<void> {
  const w = world();
  if (argv.length === 0) throw new Error('usage: scripts/lab exec HOST|CONTAINER -- CMD…');
  let prefix: string[];
  if ((HOST_NAMES as string[]).includes(target)) prefix = w.enter(target as HostName);
  else if (w.state.containers[target]) prefix = ['nsenter', `--net=${w.state.containers[target]!.netns}`];
  else throw new Error(`unknown host or container "${target}"; hosts: ${HOST_NAMES.join(', ')}; containers: ${Object.keys(w.state.containers).join(', ') || 'none'}`);
  await passthrough([...prefix, ...argv], {});
}

async function netwallCmd(argv: string[]): Promise<void> {
  const w = world();
  if (w.pidOf('coordinator') === null) throw new Error('the lab coordinator is not running (scripts/lab up)');
  await passthrough([...w.enter('coordinator'), process.execPath, w.dist('cli/main.js'), ...argv], { NETWALL_URL: COORDINATOR_URL, NETWALL_TOKEN: w.adminToken() });
}

function passthrough(argv: string[], env: Record<string, string>): Promise<void> {
  return new Promise((res) => {
    const [file, ...args] = argv;
    const child = spawn(file as string, args, { stdio: 'inherit', env: { ...process.env, PATH: `${SYSTEM_PATH}:${process.env.PATH ?? ''}`, ...env } });
    child.on('error', (err) => {
      console.error(`scripts/lab: ${err.message}`);
      process.exitCode = 127;
      res();
    });
    child.on('close', (code, signal) => {
      process.exitCode = code ?? (signal ? 128 : 1);
      res();
    });
  });
}

// ------------------------------------------------------------ check: the demo's intent, probed

type Verdict = 'allowed' | 'denied';
/** What a probe saw. `refused` means the target's TCP stack answered: for a denied flow that is a leak (netwall drops, it never rejects). */
type Got = 'answered' | 'refused' | 'timeout' | 'unreachable' | 'error';

interface IntentRow {
  /** Container or lab host the probe runs from (inside its network namespace). */
  from: string;
  /** A container, `host:mgmt` / `host:public`, or an address. */
  to: string;
  probe: 'tcp' | 'http' | 'ping';
  port?: number;
  /** HTTP: path, and a Host name resolved to the target address (gateway probes). */
  path?: string;
  hostname?: string;
  expect: Verdict;
  why: string;
  /**
   * Only for a probe from a lab host to a container: for the probe's duration,
   * a /32 route to the container via its node's address on this network, in
   * the prober's namespace (added and removed by the probe).
   */
  routeVia?: 'mgmt' | 'public';
}

const serviceOf = (c: ContainerSpec) => ({ probe: c.serves.startsWith('http') ? ('http' as const) : ('tcp' as const), port: Number(c.serves.split(' ')[1]) });
const containerOf = (name: string) => DEMO_CONTAINERS.find((c) => c.name === name) as ContainerSpec;
const svc = (name: string) => ({ to: name, ...serviceOf(containerOf(name)) });

/**
 * The demo's intent, in one table: what `scripts/lab up` sets up (policies
 * web-to-db and app-to-db, acme's egress rule, the exposures, NAT-only containers,
 * --underlay-restrict) and therefore what must work and what must not.
 * Controls (allowed) show that each denied probe had something to reach.
 */
const DEMO_INTENT: IntentRow[] = [
  // controls: the services answer, the networks carry traffic
  ...DEMO_CONTAINERS.map((c): IntentRow => ({ from: c.name, to: '127.0.0.1', ...serviceOf(c), expect: 'allowed', why: 'control: the service answers inside its container' })),
  { from: 'node1', to: 'coordinator:mgmt', probe: 'http', port: COORDINATOR_PORT, path: '/healthz', expect: 'allowed', why: 'control: nodes reach the coordinator on mgmt' },
  { from: 'coordinator', to: 'node2:mgmt', probe: 'ping', expect: 'allowed', why: 'control: mgmt carries traffic (icmp open under --underlay-restrict)' },
  { from: 'internet', to: 'node1:public', probe: 'ping', expect: 'allowed', why: 'control: public carries traffic to the nodes' },
  { from: 'gateway1', to: INTERNET_WEB, probe: 'http', port: 80, expect: 'allowed', why: 'control: the internet web server answers' },
  // tenant policies
  { from: 'acme-web', ...svc('acme-db'), expect: 'allowed', why: 'acme policy web-to-db (app=web → app=db tcp 5432), node1 → node2' },
  { from: 'globex-app', ...svc('globex-db'), expect: 'allowed', why: 'globex policy app-to-db (app=app → app=db tcp 5432), node2 → node1' },
  { from: 'acme-db', ...svc('acme-web'), expect: 'denied', why: 'no acme policy db → web' },
  { from: 'globex-db', ...svc('globex-app'), expect: 'denied', why: 'no globex policy db → app' },
  // tenants never meet
  { from: 'acme-web', ...svc('globex-app'), expect: 'denied', why: 'cross-tenant, node1 → node2' },
  { from: 'acme-web', ...svc('globex-db'), expect: 'denied', why: 'cross-tenant, same node (node1)' },
  { from: 'globex-app', ...svc('acme-db'), expect: 'denied', why: 'cross-tenant, same node (node2), allowed port of the other tenant' },
  { from: 'globex-app', ...svc('acme-web'), expect: 'denied', why: 'cross-tenant, node2 → node1' },
  // containers reach no host: coordinator, their node's gateway address and underlay addresses
  ...DEMO_CONTAINERS.flatMap((c): IntentRow[] => [
    { from: c.name, to: 'coordinator:mgmt', probe: 'http', port: COORDINATOR_PORT, path: '/healthz', expect: 'denied', why: 'containers never reach the coordinator' },
    { from: c.name, to: '169.254.1.1', probe: 'ping', expect: 'denied', why: `its gateway address on ${c.node}: containers → host dropped` },
    { from: c.name, to: `${c.node}:mgmt`, probe: 'ping', expect: 'denied', why: `its node's mgmt address` },
    { from: c.name, to: `${c.node}:public`, probe: 'ping', expect: 'denied', why: `its node's public address` },
  ]),
  // egress: only acme, only to the internet web server on port 80, only through a gateway
  { from: 'acme-web', to: INTERNET_WEB, probe: 'http', port: 80, expect: 'allowed', why: 'acme egress rule: tcp 80, through gateway1 (masqueraded there)' },
  { from: 'acme-web', to: INTERNET_WEB, probe: 'tcp', port: 8080, expect: 'denied', why: 'egress allows port 80 only' },
  { from: 'acme-web', to: INTERNET_WEB, probe: 'ping', expect: 'denied', why: 'egress allows tcp 80 only' },
  { from: 'globex-app', to: INTERNET_WEB, probe: 'http', port: 80, expect: 'denied', why: 'globex has no egress rule' },
  // other nodes' hosts reach no container, over the mesh or over the underlay
  { from: 'node1', ...svc('acme-db'), expect: 'denied', why: 'a node is no workload: its mesh address reaches no container' },
  { from: 'node2', ...svc('acme-web'), expect: 'denied', why: 'a node is no workload: its mesh address reaches no container' },
  { from: 'node1', ...svc('acme-db'), routeVia: 'mgmt', expect: 'denied', why: 'underlay → containers dropped (route injected on node1 for the probe)' },
  { from: 'node2', ...svc('globex-db'), routeVia: 'public', expect: 'denied', why: 'underlay → containers dropped (route injected on node2 for the probe)' },
  // the internet and the mgmt network reach no container, even with a route through its node
  ...DEMO_CONTAINERS.flatMap((c): IntentRow[] => [
    { from: 'internet', ...svc(c.name), routeVia: 'public', expect: 'denied', why: 'NAT-only: no inbound from the internet, even routed via its node' },
    { from: 'coordinator', ...svc(c.name), routeVia: 'mgmt', expect: 'denied', why: 'NAT-only: no inbound from mgmt, even routed via its node' },
  ]),
];

/** The public side: requests through gateway1 and gateway2; what the gateways themselves may and may not reach. */
const GATEWAY_INTENT: IntentRow[] = [
  ...(['gateway1', 'gateway2'] as const).flatMap((g): IntentRow[] => [
    { from: 'internet', to: `${g}:public`, probe: 'http', port: 80, hostname: 'web.acme.test', expect: 'allowed', why: `exposure acme/web (tunnel mode) on ${g}` },
    { from: 'internet', to: `${g}:public`, probe: 'http', port: 80, hostname: 'app.globex.test', expect: 'allowed', why: `exposure globex/app (mesh mode) on ${g}` },
    { from: 'internet', to: `${g}:public`, probe: 'tcp', port: ROUTER_PORT, expect: 'denied', why: 'the router server listens on mesh addresses only; the public side admits the listeners only' },
  ]),
  { from: 'gateway1', ...svc('acme-web'), expect: 'denied', why: 'tunnel mode: the entry point accepts no connection, not even from its gateway' },
  { from: 'gateway1', ...svc('globex-app'), expect: 'allowed', why: "mesh mode: its node admits the gateway's mesh address to the exposed port" },
  { from: 'gateway1', ...svc('globex-db'), expect: 'denied', why: 'mesh mode admits the exposed workload and port only' },
];

interface ProbeResult {
  probe: string;
  from: string;
  to: string;
  address: string;
  expected: Verdict;
  got: Got;
  detail: string;
  ok: boolean;
  why: string;
  ms: number;
}

const PROBE_SECONDS = 2;

function probeName(r: IntentRow): string {
  const what = r.probe === 'ping' ? 'icmp' : `${r.probe} ${r.port}`;
  const host = r.hostname ? ` Host ${r.hostname}` : '';
  const route = r.routeVia ? ` (route via ${containerOf(r.to).node} ${r.routeVia})` : '';
  return `${r.from} → ${r.to} ${what}${host}${route}`;
}

/** Routes a probe added and has not removed yet: removed on SIGINT/SIGTERM too. */
const pendingRoutes = new Set<string>();
function removePendingRoutesAndExit(signal: NodeJS.Signals): void {
  for (const key of pendingRoutes) {
    const [ns, dst, via] = key.split(' ') as [string, string, string];
    spawnSync('ip', ['-n', ns, 'route', 'del', dst, 'via', via], { env: { ...process.env, PATH: SYSTEM_PATH } });
  }
  process.exit(signal === 'SIGINT' ? 130 : 143);
}

function classify(stderr: string, status: number): Got {
  if (/refused/i.test(stderr)) return 'refused';
  if (/unreachable|no route to host/i.test(stderr)) return 'unreachable';
  if (/timed out|timeout/i.test(stderr) || status === 28 || status === 128) return 'timeout';
  return 'error';
}

async function runProbe(r: IntentRow, address: string, netns: string): Promise<{ got: Got; detail: string; answer?: string }> {
  const enter = ['nsenter', `--net=${netns}`];
  const opts = { allowFailure: true, timeoutMs: (PROBE_SECONDS + 3) * 1000 };
  if (r.probe === 'ping') {
    const out = await run([...enter, 'ping', '-n', '-c', '1', '-W', String(PROBE_SECONDS), address], opts);
    if (out.status === 0) return { got: 'answered', detail: 'echo reply' };
    if (/unreachable/i.test(out.stdout + out.stderr)) return { got: 'unreachable', detail: 'unreachable' };
    return out.status === 1 ? { got: 'timeout', detail: 'no reply' } : { got: 'error', detail: (out.stderr.trim() || `exit ${out.status}`).split('\n')[0] as string };
  }
  if (r.probe === 'http') {
    const host = r.hostname ?? address;
    // -v: curl's own message is "Couldn't connect" for a refusal and for no route alike; the verbose line tells them apart.
    const args = ['curl', '-sS', '-v', '-m', String(PROBE_SECONDS), '-o', '-', '-w', '\n%{http_code}'];
    if (r.hostname) args.push('--resolve', `${r.hostname}:${r.port}:${address}`);
    args.push(`http://${host}:${r.port}${r.path ?? '/'}`);
    const out = await run([...enter, ...args], opts);
    if (out.status === 0) {
      const nl = out.stdout.lastIndexOf('\n');
      const code = out.stdout.slice(nl + 1);
      return { got: 'answered', detail: `HTTP ${code}`, answer: `${code} ${out.stdout.slice(0, Math.max(nl, 0)).trim()}` };
    }
    const got = classify(out.stderr, out.status);
    return { got, detail: got === 'error' ? (out.stderr.trim() || `exit ${out.status}`).split('\n').pop() as string : got };
  }
  const out = await run([...enter, 'socat', `-T${PROBE_SECONDS}`, `-t${PROBE_SECONDS}`, '-', `TCP:${address}:${r.port},connect-timeout=${PROBE_SECONDS}`], { ...opts, input: 'probe\n' });
  const answer = out.stdout.trim();
  if (answer) return { got: 'answered', detail: `reply "${answer.split('\n')[0]}"`, answer };
  // Connected but nothing said: the target's stack answered.
  if (out.status === 0) return { got: 'refused', detail: 'connected, no reply' };
  const got = classify(out.stderr, out.status);
  return { got, detail: got === 'error' ? (out.stderr.trim() || `exit ${out.status}`).split('\n').pop() as string : got };
}

/** One probe: resolve names, inject its route if asked (and always remove it), judge the outcome. */
async function probeRow(w: LabWorld, r: IntentRow, expected: Verdict): Promise<ProbeResult> {
  const t0 = Date.now();
  const containers = w.state.containers;
  const resolveAddress = (to: string): string => {
    if (containers[to]) return containers[to].ip;
    const m = /^(\w+):(mgmt|public)$/.exec(to);
    if (m) return (HOSTS[m[1] as HostName] as HostSpec)[m[2] as 'mgmt' | 'public'] as string;
    return to;
  };
  const address = resolveAddress(r.to);
  const netns = containers[r.from]?.netns ?? w.nsPath(r.from as HostName);
  const base = { probe: probeName(r), from: r.from, to: r.to, address, expected, why: r.why };
  const finish = (got: Got, detail: string, ok: boolean): ProbeResult => ({ ...base, got, detail, ok, ms: Date.now() - t0 });

  let route: string | null = null;
  if (r.routeVia) {
    const via = HOSTS[containerOf(r.to).node][r.routeVia] as string;
    const ns = w.ns(r.from as HostName);
    const add = await run(['ip', '-n', ns, 'route', 'add', `${address}/32`, 'via', via], { allowFailure: true });
    if (add.status === 0) {
      route = `${ns} ${address}/32 ${via}`;
      pendingRoutes.add(route);
    } else if (!/File exists/.test(add.stderr)) {
      return finish('error', `ip route add ${address}/32 via ${via}: ${add.stderr.trim()}`, false);
    }
    // An existing identical /32 (someone's own experiment) is used as it is, and left alone.
  }
  try {
    // An allowed flow gets a second chance: the first packet may wait for a WireGuard handshake.
    let res = await runProbe(r, address, netns);
    if (expected === 'allowed' && res.got !== 'answered') res = await runProbe(r, address, netns);
    if (expected === 'denied') {
      const ok = res.got === 'timeout' || res.got === 'unreachable';
      return finish(res.got, res.got === 'refused' ? `${res.detail} (reached the target's stack: not dropped)` : res.detail, ok);
    }
    let ok = res.got === 'answered';
    let detail = res.detail;
    if (ok && r.probe === 'http' && !/^2\d\d /.test(res.answer ?? '')) {
      ok = false;
      detail = `${detail} (expected 2xx)`;
    }
    // A container's demo service says who it is: the probe reached the right container.
    const c = containers[r.to];
    if (ok && r.probe === 'tcp' && c && !(res.answer ?? '').includes(`${r.to} ok`)) {
      ok = false;
      detail = `${detail} (expected "${r.to} ok")`;
    }
    return finish(res.got, detail, ok);
  } finally {
    if (route) {
      const [ns, dst, via] = route.split(' ') as [string, string, string];
      await run(['ip', '-n', ns, 'route', 'del', dst, 'via', via], { allowFailure: true });
      pendingRoutes.delete(route);
    }
  }
}

/** Runs tasks with at most `limit` at a time, results in order. */
async function pool<T, R>(items: readonly T[], limit: number, f: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < items.length; i = next++) out[i] = await f(items[i] as T);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

async function check(json: boolean): Promise<void> {
  const t0 = Date.now();
  const w = world();
  if (!existsSync(DIR) || !(await isUp(w))) {
    const error = existsSync(DIR) ? `the lab is not ready (phase ${w.state.phase}, or a program or container stopped): scripts/lab status` : 'the lab is down: scripts/lab up';
    if (json) console.log(JSON.stringify({ ok: false, error, probes: [] }, null, 2));
    else say(error);
    process.exitCode = 2;
    return;
  }
  process.once('SIGINT', removePendingRoutesAndExit);
  process.once('SIGTERM', removePendingRoutesAndExit);

  const rows = [...DEMO_INTENT, ...GATEWAY_INTENT].map((r) => ({ r, expected: r.expect }));
  // Injected routes change the prober's routing (a node's, too): those probes run after the others, never beside them.
  const plain = await pool(rows.filter((x) => !x.r.routeVia), 8, (x) => probeRow(w, x.r, x.expected));
  const routed = await pool(rows.filter((x) => x.r.routeVia), 8, (x) => probeRow(w, x.r, x.expected));
  const probes = [...plain, ...routed];
  const ok = probes.every((p) => p.ok);
  const seconds = Math.round((Date.now() - t0) / 100) / 10;

  if (json) {
    console.log(JSON.stringify({ ok, lab: PREFIX, seconds, probes }, null, 2));
  } else {
    const width = Math.max(...probes.map((p) => p.probe.length)) + 2;
    console.log(`${'PROBE'.padEnd(width)}${'EXPECTED'.padEnd(10)}${'GOT'.padEnd(34)}OK    WHY`);
    for (const p of probes) {
      const got = p.got === 'answered' ? p.detail : p.detail === p.got ? p.got : `${p.got}: ${p.detail}`;
      console.log(`${p.probe.padEnd(width)}${p.expected.padEnd(10)}${got.slice(0, 32).padEnd(34)}${(p.ok ? 'ok' : 'FAIL').padEnd(6)}${p.why}`);
    }
    const failed = probes.filter((p) => !p.ok);
    console.log(`\n${probes.length - failed.length}/${probes.length} probes as expected${failed.length ? `; MISMATCH: ${failed.map((p) => p.probe).join('; ')}` : ''} (${seconds} s)`);
  }
  process.removeListener('SIGINT', removePendingRoutesAndExit);
  process.removeListener('SIGTERM', removePendingRoutesAndExit);
  if (!ok) process.exitCode = 1;
}

async function down(): Promise<void> {
  const w = world();
  const t0 = Date.now();
  const problems = await w.down();
  for (const p of problems) say(`warning: ${p}`);
  const left = (await run(['ip', 'netns', 'list'])).stdout.split('\n').filter((l) => l.startsWith(`${PREFIX}-`));
  say(`down in ${((Date.now() - t0) / 1000).toFixed(1)} s; ${left.length === 0 && !existsSync(DIR) ? 'nothing left' : `LEFT: ${left.join(', ')} ${existsSync(DIR) ? DIR : ''}`}`);
  if (problems.length > 0 || left.length > 0) process.exitCode = 1;
}

const USAGE = `usage: scripts/lab up | status [--json] | check [--json] | exec HOST|CONTAINER -- CMD… | netwall -- ARGS… | down
hosts: ${HOST_NAMES.join(', ')}; containers after up: ${DEMO_CONTAINERS.map((c) => c.name).join(', ')}`;

async function main(args: string[]): Promise<void> {
  const [cmd, ...rest] = args;
  const afterDashes = (a: string[]) => (a[0] === '--' ? a.slice(1) : a);
  switch (cmd) {
    case 'up':
      return up();
    case 'status':
      return status(rest.includes('--json'));
    case 'exec': {
      const [target, ...more] = rest;
      if (!target) throw new Error(USAGE);
      return execCmd(target, afterDashes(more));
    }
    case 'netwall':
      return netwallCmd(afterDashes(rest));
    case 'check':
      return check(rest.includes('--json'));
    case 'down':
      return down();
    default:
      console.error(USAGE);
      process.exitCode = 2;
  }
}

main(process.argv.slice(2)).catch((err: Error) => {
  console.error(`scripts/lab: ${err.message}`);
  process.exitCode = 1;
});
