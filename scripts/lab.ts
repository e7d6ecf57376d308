/**
 * `scripts/lab` (the bash entry installs and builds, then runs this):
 *
 *   scripts/lab up                    build the demo world in network namespaces
 *   scripts/lab status [--json]       hosts, addresses, programs' health, containers, exposures
 *   scripts/lab exec HOST|CONTAINER -- CMD…   run a command of this machine in its namespace
 *   scripts/lab netwall -- ARGS…      the netwall CLI against the lab coordinator (admin token)
 *   scripts/lab down                  remove everything
 *
 * The topology and the mechanics are in lab-world.ts. State: .lab/ in the repository.
 */
import { existsSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
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
} from './lab-world.js';

const repo = resolve(fileURLToPath(new URL('..', import.meta.url)));
const PREFIX = process.env.NETWALL_LAB_PREFIX ?? 'nwlab';
const DIR = process.env.NETWALL_LAB_DIR ?? join(repo, '.lab');

const say = (line: string) => console.log(`[lab] ${line}`);

/** The demo: two tenants on two nodes, each node carrying both tenants. */
const DEMO_CONTAINERS: ContainerSpec[] = [
  { name: 'acme-web', tenant: 'acme', node: 'node1', labels: { app: 'web' }, command: ['/bin/httpd', '-f', '-p', '8080', '-h', '/www'], serves: 'http 8080' },
  { name: 'acme-db', tenant: 'acme', node: 'node2', labels: { app: 'db' }, command: ['/bin/nc', '-ll', '-p', '5432', '-e', '/bin/reply'], serves: 'tcp 5432' },
  { name: 'globex-app', tenant: 'globex', node: 'node2', labels: { app: 'app' }, command: ['/bin/httpd', '-f', '-p', '8080', '-h', '/www'], serves: 'http 8080' },
  { name: 'globex-db', tenant: 'globex', node: 'node1', labels: { app: 'db' }, command: ['/bin/nc', '-ll', '-p', '5432', '-e', '/bin/reply'], serves: 'tcp 5432' },
];

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

    say('tenants acme and globex');
    for (const t of ['acme', 'globex']) {
      const r = await w.cli(['tenant', 'create', t], { allowFailure: true });
      if (r.status !== 0 && !/conflict/.test(r.stderr)) throw new Error(r.stderr.trim());
    }

    for (const n of NODES) {
      say(`${n}: enroll with a token from 'netwall enroll-token create', start netwall-agent`);
      await w.enrollNode(n);
      await w.startAgent(n);
    }

    if (w.gatewayProgramAvailable()) {
      try {
        for (const g of GATEWAYS) {
          say(`${g}: enroll and start netwall-gateway`);
          await w.startGateway(g);
        }
        w.state.gateways = true;
      } catch (err) {
        // The gateway's command line is still being written: the rest of the demo does not need it.
        for (const g of GATEWAYS) await w.stopProcess(g);
        w.state.notes.push(`netwall-gateway did not start (${(err as Error).message.split('\n')[0]}); no exposures and no egress rule were created`);
        say('netwall-gateway did not start: continuing without gateways (see status notes)');
      }
    } else {
      w.state.notes.push('netwall-gateway is not built yet: gateway1/gateway2 are bare hosts; no exposures and no egress rule were created');
      say('netwall-gateway not built yet: gateway1/gateway2 stay bare hosts (no exposures, no egress)');
    }

    say(`internet: a web server on ${INTERNET_WEB}:80`);
    w.buildRootfs();
    w.startProcess('internet-httpd', [...w.enter('internet'), '/bin/busybox', 'httpd', '-f', '-p', `${INTERNET_WEB}:80`, '-h', join(w.rootfs, 'www')]);

    say('policies: acme app=web → app=db tcp 5432; globex app=app → app=db tcp 5432');
    await w.cli(['policy', 'set', '--tenant', 'acme', 'web-to-db', '--from', 'app=web', '--to', 'app=db', '--allow', 'tcp:5432']);
    await w.cli(['policy', 'set', '--tenant', 'globex', 'app-to-db', '--from', 'app=app', '--to', 'app=db', '--allow', 'tcp:5432']);

    for (const c of DEMO_CONTAINERS) {
      say(`${c.name}: podman run on ${c.node}, network netwall-${c.tenant}, labels ${Object.entries(c.labels).map(([k, v]) => `${k}=${v}`).join(',')}`);
      const info = await w.runContainer(c);
      say(`${c.name}: ${info.ip}`);
    }

    if (w.state.gateways) {
      say('exposures web.acme.test (tunnel, both gateways) and app.globex.test (mesh); acme egress to the internet web server, port 80 only');
      await w.cli(['exposure', 'set', '--tenant', 'acme', 'web', '--protocol', 'http', '--hostname', 'web.acme.test', '--mode', 'tunnel', '--gateway', 'gateway1', '--gateway', 'gateway2', '--selector', 'app=web', '--port', '8080']);
      await w.cli(['exposure', 'set', '--tenant', 'globex', 'app', '--protocol', 'http', '--hostname', 'app.globex.test', '--mode', 'mesh', '--gateway', 'gateway1', '--gateway', 'gateway2', '--selector', 'app=app', '--port', '8080']);
      await w.cli(['egress', 'set', '--tenant', 'acme', 'internet', '--gateway', 'gateway1', '--allow', `tcp:${INTERNET_WEB}/32:80`]);
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
    for (const p of ['coordinator', ...NODES]) {
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
    "  scripts/lab netwall -- policy set --tenant acme db-to-web --from app=db --to app=web --allow tcp:8080",
    `  scripts/lab exec acme-db -- curl -m 3 http://${ip('acme-web')}:8080/        # now works`,
    '  # a container of your own',
    `  scripts/lab netwall -- tenant create initech`,
    '',
  ];
  if (!w.state.gateways) {
    lines.push('  Gateways: not built yet, so no exposures (web.acme.test, app.globex.test) and no egress rule; they come with the gateway issue.', '');
  }
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

async function down(): Promise<void> {
  const w = world();
  const t0 = Date.now();
  const problems = await w.down();
  for (const p of problems) say(`warning: ${p}`);
  const left = (await run(['ip', 'netns', 'list'])).stdout.split('\n').filter((l) => l.startsWith(`${PREFIX}-`));
  say(`down in ${((Date.now() - t0) / 1000).toFixed(1)} s; ${left.length === 0 && !existsSync(DIR) ? 'nothing left' : `LEFT: ${left.join(', ')} ${existsSync(DIR) ? DIR : ''}`}`);
  if (problems.length > 0 || left.length > 0) process.exitCode = 1;
}

const USAGE = `usage: scripts/lab up | status [--json] | exec HOST|CONTAINER -- CMD… | netwall -- ARGS… | down
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
