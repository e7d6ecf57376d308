/**
 * Tunnel-mode entry points on this node: for each, a router-client key made
 * here (its private half never leaves the state directory), the credential
 * the coordinator issued for it, and one router-client process running
 * inside the entry point's own network namespace, dialing OUT to every
 * gateway of the exposure. Supervised: started, restarted when its spec
 * changes or it dies, stopped by pid when the entry point goes away.
 */
import { existsSync, readFileSync } from 'node:fs';
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
}

interface Running {
  spec: string;
  child: ChildHandle;
  done: boolean;
}

export class TunnelSupervisor {
  private readonly running = new Map<string, Running>();

  constructor(private readonly d: TunnelDeps) {}

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
    return errors;
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
    const current = this.running.get(id);
    if (current && current.spec === spec && !current.done) return;
    if (current) this.stop(id, current, current.done ? 'exited' : 'spec changed');
    this.d.log(`[#] ${spec}`);
    const child = this.d.spawner.spawn(argv, {});
    const entry: Running = { spec, child, done: false };
    this.running.set(id, entry);
    void child.exited.then((code) => {
      entry.done = true;
      this.d.log(`[netwall] router client ${id} (pid ${child.pid}) exited: ${code}`);
    });
  }

  private stop(id: string, r: Running, why: string): void {
    if (!r.done) {
      this.d.log(`[netwall] stopping router client ${id} (pid ${r.child.pid}): ${why}`);
      r.child.kill('SIGTERM');
    }
    this.running.delete(id);
  }

  stopAll(): void {
    for (const [id, r] of this.running) this.stop(id, r, 'agent stopping');
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
