/**
 * Tunnel-mode entry points on this node: for each, a router-client key made
 * here (its private half never leaves the state directory), the credential
 * the coordinator issued for it, and one router-client process running
 * inside the entry point's own network namespace, dialing OUT to every
 * gateway of the exposure. Supervised: started, restarted when its spec
 * changes or it dies, stopped by pid when the entry point goes away
 * (SIGTERM, then SIGKILL after a grace period).
 *
 * Router clients outlive the agent (a restart must not cut the public
 * service): each one's pid, start time and command line are recorded in the
 * state directory, and a new agent adopts a live one with the same command
 * line, and stops the ones no entry point wants any more. The start time
 * guards against a recycled pid.
 */
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { generateSigningKeyPair } from '../shared/crypto.js';
import type { DesiredState, EntryPoint, RouterCredential, RouterGrant } from '../shared/desired.js';
import { writeFileAtomic } from '../shared/fsutil.js';
import type { ChangeLogger } from '../shared/runner.js';
import type { ChildHandle, Spawner } from '../shared/dataplane/wgproc.js';

/** Renew a credential this long before it expires. */
const RENEW_BEFORE_MS = 7 * 86_400_000;

export interface TunnelDeps {
  stateDir: string;
  registerRouterKey(tenant: string, exposure: string, workload: string, publicKey: string): Promise<RouterCredential>;
  /** The network namespace of a local workload, if this agent attached it. */
  netnsOf(tenant: string, workload: string): string | undefined;
  spawner: Spawner;
  log: ChangeLogger;
  /** `node` and the router-client entry point (default: next to this file). */
  nodePath?: string;
  mainPath?: string;
  /** For tests: a process's start time (default /proc/PID/stat) and how to signal a process this agent did not start. */
  startTimeOf?: (pid: number) => string | null;
  signal?: (pid: number, signal: NodeJS.Signals) => void;
}

interface Running {
  spec: string;
  child: ChildHandle;
  done: boolean;
}

/** What the state directory remembers of a running router client. */
interface PidRecord {
  pid: number;
  /** /proc/PID/stat field 22: a recycled pid has another. */
  start: string;
  spec: string;
}

/** How long a router client may take to close its tunnels after SIGTERM. */
const STOP_GRACE_MS = 10_000;

/** The process's start time (clock ticks since boot), or null when it is gone. */
export function processStartTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command (which may hold spaces), in parentheses: state is field 3, starttime field 22.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

/** A handle on a process this agent did not start (adopted): liveness by polling. */
function adoptedHandle(rec: PidRecord, startTimeOf: (pid: number) => string | null, signal: (pid: number, s: NodeJS.Signals) => void): ChildHandle {
  const alive = () => startTimeOf(rec.pid) === rec.start;
  const exited = new Promise<number | string>((resolve) => {
    const timer = setInterval(() => {
      if (alive()) return;
      clearInterval(timer);
      resolve('gone');
    }, 1000);
    timer.unref();
  });
  return {
    pid: rec.pid,
    exited,
    kill: (sig = 'SIGTERM') => {
      if (alive()) signal(rec.pid, sig);
    },
  };
}

export class TunnelSupervisor {
  private readonly running = new Map<string, Running>();
  /** The first sync stops recorded router clients no entry point wants any more. */
  private swept = false;

  private readonly startTimeOf: (pid: number) => string | null;
  private readonly signal: (pid: number, signal: NodeJS.Signals) => void;

  constructor(private readonly d: TunnelDeps) {
    this.startTimeOf = d.startTimeOf ?? processStartTime;
    this.signal = d.signal ?? ((pid, sig) => process.kill(pid, sig));
  }

  private adopted(rec: PidRecord): ChildHandle {
    return adoptedHandle(rec, this.startTimeOf, this.signal);
  }

  private dir(): string {
    return join(this.d.stateDir, 'router');
  }

  /** The router-client key of one entry point, made on first use (0600). */
  private key(id: string): { file: string; publicKey: string } {
    const file = join(this.dir(), `${id}.key`);
    if (!existsSync(file)) writeFileAtomic(file, `${generateSigningKeyPair().secretKey}\n`, 0o600);
    const secret = Buffer.from(readFileSync(file, 'utf8').trim(), 'base64');
    return { file, publicKey: secret.subarray(32).toString('base64') };
  }

  /** Bring router clients in line with the document; returns the errors met (and goes on past them). */
  async sync(doc: DesiredState): Promise<string[]> {
    const errors: string[] = [];
    const wanted = new Set<string>();
    for (const t of doc.tenants) {
      for (const ep of t.entryPoints) {
        if (ep.mode !== 'tunnel' || ep.gateways.length === 0) continue;
        const id = `${t.tenant}.${ep.exposure}.${ep.workload}`;
        wanted.add(id);
        try {
          await this.ensure(id, t.tenant, ep);
        } catch (err) {
          errors.push(`tunnel ${t.tenant}/${ep.exposure}/${ep.workload}: ${(err as Error).message}`);
        }
      }
    }
    for (const [id, r] of this.running) if (!wanted.has(id)) this.stop(id, r, 'entry point removed');
    if (!this.swept) {
      this.swept = true;
      for (const id of this.recordedIds()) {
        if (wanted.has(id) || this.running.has(id)) continue;
        const rec = this.readPid(id);
        if (rec && this.startTimeOf(rec.pid) === rec.start) this.stop(id, { spec: rec.spec, child: this.adopted(rec), done: false }, 'entry point removed while the agent was away');
        else this.forget(id);
      }
    }
    return errors;
  }

  private pidFile(id: string): string {
    return join(this.dir(), `${id}.pid`);
  }

  private readPid(id: string): PidRecord | null {
    try {
      return JSON.parse(readFileSync(this.pidFile(id), 'utf8')) as PidRecord;
    } catch {
      return null;
    }
  }

  private forget(id: string): void {
    rmSync(this.pidFile(id), { force: true });
  }

  private recordedIds(): string[] {
    if (!existsSync(this.dir())) return [];
    return readdirSync(this.dir())
      .filter((f) => f.endsWith('.pid'))
      .map((f) => f.slice(0, -'.pid'.length));
  }

  /** A live router client recorded by an earlier agent, if it runs exactly `spec`. */
  private adopt(id: string, spec: string): Running | null {
    const rec = this.readPid(id);
    if (!rec || this.startTimeOf(rec.pid) !== rec.start) return null;
    if (rec.spec !== spec) {
      this.stop(id, { spec: rec.spec, child: this.adopted(rec), done: false }, 'spec changed while the agent was away');
      return null;
    }
    this.d.log(`[netwall] adopted router client ${id} (pid ${rec.pid})`);
    return this.track(id, spec, this.adopted(rec));
  }

  private track(id: string, spec: string, child: ChildHandle): Running {
    const entry: Running = { spec, child, done: false };
    this.running.set(id, entry);
    void child.exited.then((code) => {
      entry.done = true;
      if (this.readPid(id)?.pid === child.pid) this.forget(id);
      this.d.log(`[netwall] router client ${id} (pid ${child.pid}) exited: ${code}`);
    });
    return entry;
  }

  private async ensure(id: string, tenant: string, ep: EntryPoint): Promise<void> {
    const key = this.key(id);
    const credentialFile = join(this.dir(), `${id}.credential.json`);
    let credential = ep.routerKey === key.publicKey ? ep.credential : null;
    if (!credential || expiresSoon(credential)) {
      credential = await this.d.registerRouterKey(tenant, ep.exposure, ep.workload, key.publicKey);
      this.d.log(`[netwall] router key registered for ${tenant}/${ep.exposure}/${ep.workload}`);
    }
    const text = `${JSON.stringify(credential)}\n`;
    if (!existsSync(credentialFile) || readFileSync(credentialFile, 'utf8') !== text) writeFileAtomic(credentialFile, text, 0o600);

    const netns = this.d.netnsOf(tenant, ep.workload);
    if (!netns) throw new Error('its network namespace is unknown (attach it through this agent)');
    const argv = [
      'nsenter',
      `--net=${netns}`,
      this.d.nodePath ?? process.execPath,
      this.d.mainPath ?? join(dirname(fileURLToPath(import.meta.url)), 'router-client-main.js'),
      ...ep.gateways.flatMap((g) => ['--gateway', `${g.host}@${g.meshAddress}:${g.routerPort}`]),
      '--key',
      key.file,
      '--credential',
      credentialFile,
      '--target',
      `127.0.0.1:${ep.port}`,
    ];
    const spec = argv.join(' ');
    const current = this.running.get(id) ?? this.adopt(id, spec);
    if (current && current.spec === spec && !current.done) return;
    if (current) this.stop(id, current, current.done ? 'exited' : 'spec changed');
    this.d.log(`[#] ${spec}`);
    const child = this.d.spawner.spawn(argv, {});
    const start = this.startTimeOf(child.pid);
    if (start !== null) writeFileAtomic(this.pidFile(id), JSON.stringify({ pid: child.pid, start, spec } satisfies PidRecord), 0o600);
    this.track(id, spec, child);
  }

  /** SIGTERM, then SIGKILL if it is still there after the grace period. */
  private stop(id: string, r: Running, why: string): void {
    if (!r.done) {
      this.d.log(`[netwall] stopping router client ${id} (pid ${r.child.pid}): ${why}`);
      r.child.kill('SIGTERM');
      const timer = setTimeout(() => {
        if (r.done) return;
        this.d.log(`[netwall] router client ${id} (pid ${r.child.pid}) ignored SIGTERM: SIGKILL`);
        r.child.kill('SIGKILL');
      }, STOP_GRACE_MS);
      timer.unref();
      void r.child.exited.then(() => clearTimeout(timer));
    }
    if (this.running.get(id) === r) this.running.delete(id);
    if (this.readPid(id)?.pid === r.child.pid) this.forget(id);
  }

  /** For uninstall and tests: the agent itself leaves router clients running across restarts. */
  stopAll(): void {
    for (const [id, r] of this.running) this.stop(id, r, 'stopping all');
  }

  status(): { id: string; pid: number; running: boolean }[] {
    return [...this.running].map(([id, r]) => ({ id, pid: r.child.pid, running: !r.done }));
  }
}

function expiresSoon(c: RouterCredential): boolean {
  try {
    const g = JSON.parse(c.grant) as RouterGrant;
    return Date.parse(g.expiresAt) - Date.now() < RENEW_BEFORE_MS;
  } catch {
    return true;
  }
}

/**
 * Which network namespace each local workload lives in, as the agent learnt
 * it when attaching; kept on disk so a restarted agent still knows.
 */
export class NetnsRegistry {
  private readonly map: Record<string, string>;

  constructor(private readonly file: string) {
    this.map = existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as Record<string, string>) : {};
  }

  get(tenant: string, workload: string): string | undefined {
    return this.map[`${tenant}/${workload}`];
  }

  set(tenant: string, workload: string, netns: string | undefined): void {
    const k = `${tenant}/${workload}`;
    if (netns === undefined) delete this.map[k];
    else this.map[k] = netns;
    writeFileAtomic(this.file, JSON.stringify(this.map, null, 2), 0o600);
  }
}
