/**
 * Lab (issue 5 §5): the README's demo exactly as a user runs it —
 * `scripts/lab up`, `scripts/lab check --json` (every probe of the demo's
 * intent: allowed flows work, denied flows fail), `scripts/lab status --json`
 * (the shape of issue 5 §1), `scripts/lab up` again (harmless), then
 * `scripts/lab down` — and nothing is left: no lab namespaces, processes,
 * podman containers, mounts, cgroups, state directory, root-namespace links or
 * addresses, and the root namespace's nftables ruleset is unchanged.
 *
 *   npx ava --config ava.lab.config.js test/lab/lab-demo.test.ts
 *
 * Unlike the other lab tests this one uses the real `scripts/lab` names
 * (`nwlab-*`, `.lab/`): it refuses to run (skips) when a lab is already there,
 * so it never removes a user's lab, and it always runs `scripts/lab down` at
 * the end when it started one. Root only; skipped otherwise.
 */
import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HOSTS, HOST_NAMES, NODES, SYSTEM_PATH } from '../../scripts/lab-world.js';
import { labUnavailable } from './helpers/netns.js';

const repo = resolve(fileURLToPath(new URL('../..', import.meta.url)));
const PREFIX = 'nwlab';
const DIR = join(repo, '.lab');
const PODMAN_RUNROOT = `/run/${PREFIX}-podman`;

function labNamespaces(): string[] {
  const out = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  return (out.stdout ?? '')
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter((n) => n.startsWith(`${PREFIX}-`));
}

function alreadyThere(): string | null {
  if (existsSync(DIR)) return `${DIR} exists: a lab is up or half-made (scripts/lab down first); this test never touches a user's lab`;
  const ns = labNamespaces();
  if (ns.length > 0) return `lab namespaces exist (${ns.join(', ')}): scripts/lab down first`;
  if (existsSync(PODMAN_RUNROOT)) return `${PODMAN_RUNROOT} exists: scripts/lab down first`;
  return null;
}

const skip =
  labUnavailable(['ip', 'nft', 'wg', 'wireguard-go', 'nsenter', 'unshare', 'socat', 'ping', 'curl']) ??
  (spawnSync('podman', ['--version']).status === 0 && spawnSync('runc', ['--version']).status === 0 ? null : 'podman/runc not installed (scripts/install-deps)') ??
  alreadyThere();
const labTest = skip ? test.skip : test.serial;
if (skip) console.log(`SKIP test/lab/lab-demo.test.ts: ${skip}`);

/** `scripts/lab ARGS` as a user runs it (their PATH, no lab overrides), bounded in time. */
function lab(args: string[], timeoutMs: number): Promise<{ status: number; stdout: string; stderr: string; ms: number }> {
  const t0 = Date.now();
  const env: Record<string, string | undefined> = { ...process.env, PATH: `${process.env.PATH ?? ''}:${SYSTEM_PATH}` };
  delete env.NETWALL_LAB_DIR;
  delete env.NETWALL_LAB_PREFIX;
  return new Promise((res) => {
    const child = spawn(join(repo, 'scripts', 'lab'), args, { cwd: repo, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    // SIGINT first: `check` removes a route it injected; then SIGKILL.
    const timer = setTimeout(() => {
      child.kill('SIGINT');
      setTimeout(() => child.kill('SIGKILL'), 5000).unref();
    }, timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      res({ status: code ?? (signal ? 128 : -1), stdout, stderr, ms: Date.now() - t0 });
    });
  });
}

const sh = (argv: string[]) => {
  const r = spawnSync(argv[0] as string, argv.slice(1), { encoding: 'utf8', env: { ...process.env, PATH: SYSTEM_PATH, LC_ALL: 'C' } });
  return r.status === 0 ? r.stdout : `(${argv.join(' ')} failed: ${r.stderr})`;
};

/** What the lab must leave as it found it in the root namespace. */
function rootSnapshot() {
  return {
    links: sh(['ip', '-o', 'link', 'show']).split('\n').map((l) => l.split(': ')[1]?.split('@')[0] ?? '').filter(Boolean).sort(),
    addresses: sh(['ip', '-o', 'addr', 'show']).split('\n').map((l) => l.split(/\s+/).slice(1, 4).join(' ')).filter(Boolean).sort(),
    // -s: stateless (no counters), so the same rules compare equal.
    nft: sh(['nft', '-s', 'list', 'ruleset']),
    wireguardRunDir: existsSync('/run/wireguard'),
  };
}

/** Start time of a live process (a zombie counts as gone: this machine's init reaps late). */
function startTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[0] === 'Z' ? null : (fields[19] ?? null);
  } catch {
    return null;
  }
}

/** Every process of the lab, as pid + start time: the recorded ones and everything inside its namespaces. */
function labProcesses(sandboxes: string[]): Map<number, string> {
  const procs = new Map<number, string>();
  const pidDir = join(DIR, 'pids');
  for (const f of existsSync(pidDir) ? readdirSync(pidDir) : []) {
    const [pid, start] = readFileSync(join(pidDir, f), 'utf8').trim().split(' ');
    if (Number(pid) > 1 && start) procs.set(Number(pid), start);
  }
  for (const ns of [...labNamespaces(), ...sandboxes.map((s) => s.replace('/run/netns/', ''))]) {
    for (const pid of sh(['ip', 'netns', 'pids', ns]).split('\n').map(Number).filter((n) => Number.isInteger(n) && n > 1)) {
      const st = startTime(pid);
      if (st) procs.set(pid, st);
    }
  }
  return procs;
}

/** Processes whose command line names the lab (its directory, runroot, namespaces or a container id). */
function processesMentioning(needles: string[]): string[] {
  const found: string[] = [];
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    let cmd: string;
    try {
      cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
    } catch {
      continue;
    }
    if (needles.some((n) => cmd.includes(n))) found.push(`${pid}: ${cmd.trim().slice(0, 160)}`);
  }
  return found;
}

interface Probe {
  probe: string;
  from: string;
  to: string;
  expected: 'allowed' | 'denied';
  got: string;
  detail: string;
  ok: boolean;
}

let before: ReturnType<typeof rootSnapshot> | null = null;
let started = false;
let downDone = false;
/** What `up` recorded, read before `down` removes it. */
let recorded: { state: { containers: Record<string, { id: string; netns: string }>; sandboxes: string[]; readyAt?: string }; pids: Map<number, string> } | null = null;

test.before(() => {
  if (skip) return;
  before = rootSnapshot();
});

test.after.always('scripts/lab down, whatever happened', async (t) => {
  if (skip || !started || downDone) return;
  const r = await lab(['down'], 180_000);
  t.log(`cleanup: scripts/lab down → exit ${r.status}: ${r.stdout.trim().split('\n').pop()}`);
});

labTest('scripts/lab up builds the demo', async (t) => {
  t.timeout(240_000);
  // Re-checked here: a lab may have appeared since the file was loaded.
  const there = alreadyThere();
  if (there) return t.fail(`refusing: ${there}`);
  started = true;
  const r = await lab(['up'], 230_000);
  t.log(`scripts/lab up: exit ${r.status} in ${(r.ms / 1000).toFixed(1)} s; ${r.stdout.trim().split('\n').pop()}`);
  t.is(r.status, 0, `${r.stdout.slice(-3000)}\n${r.stderr.slice(-2000)}`);
  t.regex(r.stdout, /What to try/);
  t.regex(r.stdout, /\[lab\] up in [\d.]+ s/);
});

labTest('scripts/lab check --json: every probe of the demo as expected, allowed and denied', async (t) => {
  t.timeout(120_000);
  const r = await lab(['check', '--json'], 110_000);
  const out = JSON.parse(r.stdout) as { ok: boolean; seconds: number; probes: Probe[] };
  const failed = out.probes.filter((p) => !p.ok);
  t.log(`scripts/lab check: ${out.probes.length - failed.length}/${out.probes.length} as expected in ${out.seconds} s`);
  for (const p of failed) t.log(`MISMATCH ${p.probe}: expected ${p.expected}, got ${p.got} (${p.detail})`);
  t.true(out.ok, 'check reports ok');
  t.is(r.status, 0, r.stderr);
  t.deepEqual(failed, []);
  // The intent table covers both directions and every kind of promise.
  const find = (from: string, to: string, expected: 'allowed' | 'denied', extra = '') =>
    out.probes.find((p) => p.from === from && p.to === to && p.expected === expected && p.probe.includes(extra));
  t.truthy(find('acme-web', 'acme-db', 'allowed'), 'acme-web → acme-db 5432 allowed');
  t.truthy(find('globex-app', 'globex-db', 'allowed'), 'globex-app → globex-db 5432 allowed');
  t.truthy(find('acme-db', 'acme-web', 'denied'), 'acme-db → acme-web 8080 denied');
  t.truthy(find('acme-web', 'globex-app', 'denied'), 'cross-tenant denied');
  for (const c of ['acme-web', 'acme-db', 'globex-app', 'globex-db']) {
    t.truthy(find(c, 'coordinator:mgmt', 'denied'), `${c} → coordinator denied`);
    t.truthy(find(c, '169.254.1.1', 'denied'), `${c} → 169.254.1.1 denied`);
    t.truthy(find('internet', c, 'denied', 'route via'), `internet → ${c} with an injected route denied`);
  }
  t.truthy(out.probes.find((p) => /^node\d$/.test(p.from) && p.expected === 'denied' && p.probe.includes('route via')), 'a node → another node\'s container over the underlay denied');
  t.true(out.probes.filter((p) => p.expected === 'allowed').length >= 6, 'positive probes');
  t.true(out.probes.filter((p) => p.expected === 'denied').length >= 25, 'negative probes');
  // Gateways: probed when they run, otherwise skipped with a note.
  for (const g of ['gateway1', 'gateway2']) {
    for (const host of ['web.acme.test', 'app.globex.test']) {
      t.true(
        out.probes.some((p) => p.from === 'internet' && p.to === `${g}:public` && p.probe.includes(host) && p.expected === 'allowed' && p.ok),
        `public request for ${host} through ${g}`,
      );
    }
  }
  // No route a probe injected is left behind.
  for (const h of ['internet', 'coordinator', ...NODES]) {
    const routes = sh(['ip', '-n', `${PREFIX}-${h}`, 'route', 'show']);
    t.notRegex(routes, /^10\.\S+ via /m, `${h}: no injected route left: ${routes}`);
  }
});

labTest('scripts/lab status --json: hosts with addresses, containers, exposures, programs\' health', async (t) => {
  const r = await lab(['status', '--json'], 60_000);
  t.is(r.status, 0, r.stderr);
  const s = JSON.parse(r.stdout) as {
    phase: string;
    hosts: Record<string, { addresses: { public?: string; mgmt?: string }; programs: Record<string, { healthy: boolean; note?: string }> }>;
    containers: Record<string, { tenant: string; node: string; ip: string; running: boolean }>;
    exposures: unknown[];
    notes: string[];
  };
  t.is(s.phase, 'ready');
  t.deepEqual(Object.keys(s.hosts).sort(), [...HOST_NAMES].sort());
  for (const h of HOST_NAMES) {
    const want = HOSTS[h];
    t.is(s.hosts[h]?.addresses.mgmt, want.mgmt, `${h} mgmt`);
    t.is(s.hosts[h]?.addresses.public, want.public, `${h} public`);
  }
  t.true(s.hosts.coordinator?.programs['netwall-coordinator']?.healthy, 'coordinator healthy');
  for (const n of NODES) t.true(s.hosts[n]?.programs['netwall-agent']?.healthy, `${n} agent healthy`);
  t.true(s.hosts.internet?.programs.httpd?.healthy, 'internet web server healthy');
  const want = { 'acme-web': ['acme', 'node1'], 'acme-db': ['acme', 'node2'], 'globex-app': ['globex', 'node2'], 'globex-db': ['globex', 'node1'] };
  t.deepEqual(Object.keys(s.containers).sort(), Object.keys(want).sort());
  for (const [name, [tenant, node]] of Object.entries(want)) {
    const c = s.containers[name];
    t.is(c?.tenant, tenant);
    t.is(c?.node, node);
    t.regex(c?.ip ?? '', /^\d+\.\d+\.\d+\.\d+$/);
    t.true(c?.running, `${name} running`);
  }
  t.true(Array.isArray(s.exposures));
  for (const g of ['gateway1', 'gateway2']) t.truthy(s.hosts[g]?.programs['netwall-gateway'], `${g}: gateway program listed (healthy or with a note)`);
});

labTest('scripts/lab up again is harmless: same programs, same containers, still as expected', async (t) => {
  t.timeout(120_000);
  const stateBefore = JSON.parse(readFileSync(join(DIR, 'state.json'), 'utf8')) as { readyAt: string; containers: Record<string, { id: string }> };
  const pidsBefore = labProcesses([]);
  const r = await lab(['up'], 110_000);
  t.is(r.status, 0, `${r.stdout.slice(-2000)}\n${r.stderr}`);
  t.regex(r.stdout, /already up/);
  const stateAfter = JSON.parse(readFileSync(join(DIR, 'state.json'), 'utf8')) as typeof stateBefore;
  t.is(stateAfter.readyAt, stateBefore.readyAt);
  t.deepEqual(Object.values(stateAfter.containers).map((c) => c.id), Object.values(stateBefore.containers).map((c) => c.id));
  for (const f of readdirSync(join(DIR, 'pids'))) {
    const [pid, start] = readFileSync(join(DIR, 'pids', f), 'utf8').trim().split(' ');
    t.is(pidsBefore.get(Number(pid)), start, `${f}: the same process`);
  }
  const c = await lab(['check', '--json'], 110_000);
  t.is(c.status, 0, 'check still passes');
});

labTest('scripts/lab down leaves nothing: namespaces, processes, containers, mounts, state, root links, addresses, nftables', async (t) => {
  t.timeout(240_000);
  const state = JSON.parse(readFileSync(join(DIR, 'state.json'), 'utf8')) as NonNullable<typeof recorded>['state'];
  recorded = { state, pids: labProcesses(state.sandboxes) };
  const ids = Object.values(state.containers).map((c) => c.id);
  t.true(recorded.pids.size >= 8, `found the lab's processes (${recorded.pids.size})`);

  const r = await lab(['down'], 230_000);
  downDone = true;
  t.log(`scripts/lab down: exit ${r.status} in ${(r.ms / 1000).toFixed(1)} s; ${r.stdout.trim().split('\n').pop()}`);
  t.is(r.status, 0, `${r.stdout}\n${r.stderr}`);
  t.regex(r.stdout, /nothing left/);

  t.deepEqual(labNamespaces(), [], 'no lab namespaces');
  t.deepEqual(state.sandboxes.filter((s) => existsSync(s)), [], 'no podman sandbox namespaces');
  t.false(existsSync(DIR), 'no .lab directory');
  t.false(existsSync(PODMAN_RUNROOT), 'no podman runroot');
  const alive = [...recorded.pids].filter(([pid, start]) => startTime(pid) === start).map(([pid]) => `${pid}: ${sh(['ps', '-o', 'args=', '-p', String(pid)]).trim()}`);
  t.deepEqual(alive, [], 'no process of the lab alive (pids from its state directory and namespaces)');
  t.deepEqual(processesMentioning([`${DIR}/`, PODMAN_RUNROOT, `/run/netns/${PREFIX}-`, ...ids]), [], 'no process mentions the lab or a container id (conmon, runc, programs)');
  const mounts = readFileSync('/proc/self/mounts', 'utf8').split('\n').map((l) => l.split(' ')[1] ?? '');
  t.deepEqual(mounts.filter((m) => m.startsWith(`${DIR}/`) || m.startsWith(PODMAN_RUNROOT) || m.startsWith(`/run/netns/${PREFIX}-`) || state.sandboxes.includes(m)), [], 'no mounts');
  const cgroups = sh(['find', '/sys/fs/cgroup', '-maxdepth', '4', '-type', 'd', '-name', `${PREFIX}-*`]).trim();
  t.is(cgroups, '', 'no container cgroups');
  const cache = '/var/lib/cni/results';
  t.deepEqual(existsSync(cache) ? readdirSync(cache).filter((f) => ids.some((id) => f.includes(id))) : [], [], 'no CNI result cache entries');

  const after = rootSnapshot();
  t.deepEqual(after.links, before!.links, 'root namespace: the same links (no veth or bridge left)');
  t.deepEqual(after.addresses, before!.addresses, 'root namespace: the same addresses');
  t.is(after.nft, before!.nft, 'root namespace: the same nftables ruleset');
  if (before!.wireguardRunDir) t.true(after.wireguardRunDir, '/run/wireguard is never removed');
});
