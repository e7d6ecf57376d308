/**
 * Supervision of userspace WireGuard (`wireguard-go`), used where the kernel
 * has no WireGuard module. Each interface gets one foreground child whose pid
 * we keep: it is stopped by that pid (never by name), and when it dies on its
 * own the interface disappears, the next reconcile sees the link missing and
 * starts it again (`onExit` lets the agent run that reconcile at once).
 */
import { spawn } from 'node:child_process';
// Host tools are looked up on the system PATH, never node_modules/.bin (see runner.ts).
import { SYSTEM_PATH } from '../runner.js';

export { SYSTEM_PATH };

/** A long-running child process. */
export interface ChildHandle {
  readonly pid: number;
  /** Resolves with the exit code (or signal name) when the child ends. */
  readonly exited: Promise<number | string>;
  kill(signal?: NodeJS.Signals): void;
}

/** Starts long-running children; the runner only runs commands to completion. */
export interface Spawner {
  spawn(argv: readonly string[], env: Record<string, string>): ChildHandle;
}

/**
 * Spawns with node's child_process. `prefix` is prepended to every argv, e.g.
 * `['nsenter', '--net=/run/netns/X', '--mount=/proc/N/ns/mnt']` in the lab,
 * matching the PrefixedRunner used for the same host.
 */
export class ProcessSpawner implements Spawner {
  /**
   * Without `onOutput` the child's output goes nowhere: a pipe would break
   * when the agent restarts, and wireguard-go dies of SIGPIPE on its next log
   * line, taking the tenant's interface with it.
   */
  constructor(
    private readonly prefix: readonly string[] = [],
    private readonly onOutput?: (line: string) => void,
  ) {}

  spawn(argv: readonly string[], env: Record<string, string>): ChildHandle {
    const [file, ...args] = [...this.prefix, ...argv];
    if (!file) throw new Error('spawn: empty argv');
    const out = this.onOutput;
    const child = spawn(file, args, { env: { ...process.env, PATH: SYSTEM_PATH, LC_ALL: 'C', ...env }, stdio: ['ignore', out ? 'pipe' : 'ignore', out ? 'pipe' : 'ignore'] });
    if (out) {
      const forward = (chunk: Buffer): void => {
        for (const line of chunk.toString().split('\n')) if (line.trim()) out(line);
      };
      child.stdout?.on('data', forward);
      child.stderr?.on('data', forward);
    }
    const exited = new Promise<number | string>((resolve) => {
      child.on('exit', (code, signal) => resolve(code ?? signal ?? -1));
      child.on('error', (err) => resolve(`error: ${err.message}`));
    });
    if (child.pid === undefined) throw new Error(`spawn ${file}: no pid`);
    return { pid: child.pid, exited, kill: (signal = 'SIGTERM') => child.kill(signal) };
  }
}

export interface WireguardGoOptions {
  spawner?: Spawner;
  /** Binary name or path. */
  binary?: string;
  /** Called when a child we did not stop exits (the agent may reconcile early). */
  onExit?: (iface: string, code: number | string) => void;
  log?: (line: string) => void;
}

/** One wireguard-go child per interface, by pid. */
export class WireguardGoSupervisor {
  private readonly children = new Map<string, ChildHandle>();
  private readonly spawner: Spawner;
  private readonly binary: string;

  constructor(private readonly options: WireguardGoOptions = {}) {
    this.spawner = options.spawner ?? new ProcessSpawner();
    this.binary = options.binary ?? 'wireguard-go';
  }

  /** Start `wireguard-go IFACE` in the foreground (as our child); replaces a dead handle. */
  start(iface: string): ChildHandle {
    const existing = this.children.get(iface);
    if (existing) return existing;
    // Foreground: the process stays our child, so we hold its pid and learn when it dies.
    const child = this.spawner.spawn([this.binary, iface], { WG_PROCESS_FOREGROUND: '1' });
    this.children.set(iface, child);
    void child.exited.then((code) => {
      if (this.children.get(iface) !== child) return; // stopped on purpose or replaced
      this.children.delete(iface);
      this.options.log?.(`wireguard-go for ${iface} (pid ${child.pid}) exited: ${code}`);
      this.options.onExit?.(iface, code);
    });
    return child;
  }

  /** Stop the child for `iface` by its pid: SIGTERM, then SIGKILL after `graceMs`. */
  async stop(iface: string, graceMs = 2000): Promise<void> {
    const child = this.children.get(iface);
    if (!child) return;
    this.children.delete(iface);
    child.kill('SIGTERM');
    const timer = new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), graceMs).unref());
    if ((await Promise.race([child.exited, timer])) === 'timeout') {
      child.kill('SIGKILL');
      await child.exited;
    }
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.children.keys()].map((iface) => this.stop(iface)));
  }

  pid(iface: string): number | undefined {
    return this.children.get(iface)?.pid;
  }

  has(iface: string): boolean {
    return this.children.has(iface);
  }
}
