/**
 * A small lab of network namespaces, after the kernel's WireGuard netns.sh:
 * every name carries the test's pid (`nwt<pid>-…`), every process started is
 * remembered by pid and stopped by pid, and `cleanup()` removes everything.
 *
 * - `host(short)`: a lab host — a network namespace plus a private mount
 *   namespace with its own tmpfs on /run/wireguard, so two hosts can both run
 *   wireguard-go for an interface of the same name (wireguard-go's control
 *   socket is /run/wireguard/IFNAME.sock). Its `runner` and `spawner` enter
 *   both namespaces with nsenter.
 * - `underlay(hosts)`: a bridge in a switch namespace with one `eth0` per host.
 * - `container(host, …)`: a routed veth like the CNI plugin makes: host side
 *   named by containerInterfaceName with 169.254.1.1/32 and a /32 route,
 *   container side eth0 with the /32 and `default via 169.254.1.1 onlink`.
 *
 * Lab safety: namespaces only, documentation address ranges, nothing attached
 * to the root namespace's interfaces.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ExecaRunner, PrefixedRunner, type RunOptions, type RunResult, type Runner } from '../../../src/shared/runner.js';
import { CONTAINER_GATEWAY, containerInterfaceName } from '../../../src/node-agent/names.js';
import { ProcessSpawner, SYSTEM_PATH, type ChildHandle, type Spawner } from '../../../src/shared/dataplane/wgproc.js';

const WG_RUN_DIR = '/run/wireguard';

/** Root, and the commands the lab needs; otherwise the reason to skip. */
export function labUnavailable(tools: readonly string[] = ['ip', 'ss', 'nft', 'wg', 'wireguard-go', 'sysctl', 'nsenter', 'unshare', 'socat', 'ping']): string | null {
  if (process.getuid?.() !== 0) return 'lab tests need root (network namespaces)';
  const path = SYSTEM_PATH.split(':');
  const missing = tools.filter((t) => !path.some((dir) => existsSync(join(dir, t))));
  if (missing.length > 0) return `missing tools: ${missing.join(', ')} (apt-get install -y wireguard-tools wireguard-go nftables socat iputils-ping)`;
  return null;
}

export interface LabHost {
  /** Full namespace name, e.g. `nwt1234-n1`. */
  ns: string;
  /** Runs commands inside the host's network and mount namespaces. */
  runner: Runner;
  /** Starts long-running children (wireguard-go) in the same namespaces. */
  spawner: Spawner;
  /** A private state directory (keys) on the shared filesystem. */
  stateDir: string;
}

export interface LabContainer {
  ns: string;
  hostIf: string;
  address: string;
}

export class NetnsLab {
  readonly prefix: string;
  private readonly namespaces: string[] = [];
  private readonly children: ChildProcess[] = [];
  private readonly handles: ChildHandle[] = [];
  private readonly dirs: string[] = [];
  /** System tools only: under npx, PATH starts with node_modules/.bin (where `nft` is not nftables). */
  private readonly root = new ExecaRunner({ PATH: SYSTEM_PATH });
  private containers = 0;

  constructor(prefix = `nwt${process.pid}`) {
    this.prefix = prefix;
  }

  /** Run a command in the root namespace (only `ip netns …`/`ip -n …` style commands target the lab). */
  run(argv: readonly string[], options?: RunOptions): Promise<RunResult> {
    return this.root.run(argv, options);
  }

  /** Run a command inside a namespace (plain `ip netns exec`: for probes and containers). */
  exec(ns: string, argv: readonly string[], options?: RunOptions): Promise<RunResult> {
    return this.root.run(['ip', 'netns', 'exec', ns, ...argv], options);
  }

  async namespace(short: string): Promise<string> {
    const ns = `${this.prefix}-${short}`;
    await this.run(['ip', 'netns', 'add', ns]);
    this.namespaces.push(ns);
    await this.run(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
    return ns;
  }

  /** Start a long-running process in the background; it is killed (by its pid's group) at cleanup. */
  background(argv: readonly string[], env: Record<string, string> = {}): ChildProcess {
    const [file, ...args] = argv;
    if (!file) throw new Error('background: empty argv');
    // Own process group, so forked helpers (socat fork) are stopped with it.
    const child = spawn(file, args, { stdio: 'ignore', detached: true, env: { ...process.env, PATH: SYSTEM_PATH, LC_ALL: 'C', ...env } });
    this.children.push(child);
    return child;
  }

  /** A lab host with its own network and mount namespaces (see the file comment). */
  async host(short: string): Promise<LabHost> {
    const ns = await this.namespace(short);
    if (!existsSync(WG_RUN_DIR)) {
      mkdirSync(WG_RUN_DIR, { recursive: true });
    }
    const holder = this.background([
      'ip', 'netns', 'exec', ns,
      'unshare', '--mount', '--propagation', 'private',
      'sh', '-c', `mount -t tmpfs -o mode=0700 none ${WG_RUN_DIR} && exec sleep infinity`,
    ]);
    const pid = holder.pid;
    if (pid === undefined) throw new Error('mount namespace holder did not start');
    // ip and unshare exec in place and sh execs sleep: the pid is sleep's once the tmpfs is mounted.
    await waitFor(() => readProc(`/proc/${pid}/comm`) === 'sleep', 5000, `mount namespace of ${ns}`);
    const prefix = ['nsenter', `--net=/run/netns/${ns}`, `--mount=/proc/${pid}/ns/mnt`];
    const stateDir = mkdtempSync(join(tmpdir(), `${ns}-`));
    this.dirs.push(stateDir);
    return { ns, runner: new PrefixedRunner(this.root, prefix), spawner: this.tracking(new ProcessSpawner(prefix)), stateDir };
  }

  /** Children started through this spawner (wireguard-go) are also stopped at cleanup, by pid. */
  private tracking(inner: Spawner): Spawner {
    return {
      spawn: (argv, env) => {
        const handle = inner.spawn(argv, env);
        this.handles.push(handle);
        return handle;
      },
    };
  }

  /**
   * An underlay: a bridge in its own namespace, and for each host an `eth0`
   * with the given address (CIDR).
   */
  async underlay(hosts: { ns: string; address: string }[]): Promise<void> {
    const sw = await this.namespace('sw');
    await this.run(['ip', '-n', sw, 'link', 'add', 'br0', 'type', 'bridge']);
    await this.run(['ip', '-n', sw, 'link', 'set', 'br0', 'up']);
    for (const [i, h] of hosts.entries()) {
      const port = `p${i}`;
      await this.run(['ip', '-n', sw, 'link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', h.ns]);
      await this.run(['ip', '-n', sw, 'link', 'set', port, 'master', 'br0', 'up']);
      await this.run(['ip', '-n', h.ns, 'addr', 'add', h.address, 'dev', 'eth0']);
      await this.run(['ip', '-n', h.ns, 'link', 'set', 'eth0', 'up']);
    }
  }

  /** A container namespace attached to `host` by a routed veth, as the CNI plugin would make it. */
  async container(host: string, tenant: string, workload: string, address: string): Promise<LabContainer> {
    const ns = await this.namespace(`c${++this.containers}`);
    const hostIf = containerInterfaceName(tenant, workload);
    await this.run(['ip', '-n', host, 'link', 'add', hostIf, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    await this.run(['ip', '-n', host, 'addr', 'add', `${CONTAINER_GATEWAY}/32`, 'dev', hostIf]);
    await this.run(['ip', '-n', host, 'link', 'set', hostIf, 'up']);
    await this.run(['ip', '-n', host, 'route', 'add', `${address}/32`, 'dev', hostIf]);
    await this.run(['ip', '-n', ns, 'addr', 'add', `${address}/32`, 'dev', 'eth0']);
    await this.run(['ip', '-n', ns, 'link', 'set', 'eth0', 'up']);
    await this.run(['ip', '-n', ns, 'route', 'add', 'default', 'via', CONTAINER_GATEWAY, 'dev', 'eth0', 'onlink']);
    return { ns, hostIf, address };
  }

  /**
   * Listen on `proto` `port` in `ns` and answer every connection or datagram
   * with `ok`; resolves once the socket is bound. The answer comes after
   * reading the probe's line: closing with unread data would send a RST that
   * can overtake the `ok` and make a working path look broken.
   */
  async listen(ns: string, proto: 'tcp' | 'udp', port: number, bind = '0.0.0.0'): Promise<ChildProcess> {
    const address = proto === 'tcp' ? `TCP-LISTEN:${port},bind=${bind},fork,reuseaddr` : `UDP-RECVFROM:${port},bind=${bind},fork`;
    const child = this.background(['ip', 'netns', 'exec', ns, 'socat', address, 'SYSTEM:read line; echo ok']);
    await this.listening(ns, proto, port);
    return child;
  }

  /** Wait until something listens on `port` in `ns`. */
  async listening(ns: string, proto: 'tcp' | 'udp', port: number): Promise<void> {
    await waitForAsync(async () => {
      const res = await this.exec(ns, ['ss', '-Hln', proto === 'tcp' ? '-t' : '-u', `sport = :${port}`], { allowFailure: true });
      return res.stdout.trim() !== '';
    }, 5000, `${proto} ${port} listening in ${ns}`);
  }

  /** Does a `proto` exchange from `ns` to `address:port` get the listener's `ok` back within `seconds`? */
  async reach(ns: string, proto: 'tcp' | 'udp', address: string, port: number, opts: { seconds?: number; bind?: string } = {}): Promise<boolean> {
    const seconds = opts.seconds ?? 2;
    const bind = opts.bind ? `,bind=${opts.bind}` : '';
    const target = proto === 'tcp' ? `TCP:${address}:${port},connect-timeout=${seconds}${bind}` : `UDP:${address}:${port}${bind}`;
    const res = await this.exec(ns, ['socat', `-T${seconds}`, `-t${seconds}`, '-', target], {
      input: 'probe\n',
      allowFailure: true,
      timeoutMs: (seconds + 3) * 1000,
    });
    return res.stdout.includes('ok');
  }

  async ping(ns: string, address: string, opts: { source?: string } = {}): Promise<boolean> {
    const res = await this.exec(ns, ['ping', '-c1', '-W1', ...(opts.source ? ['-I', opts.source] : []), address], { allowFailure: true, timeoutMs: 5000 });
    return res.exitCode === 0;
  }

  /** Stop every process we started, delete every namespace and directory we made. */
  async cleanup(): Promise<void> {
    for (const handle of this.handles) {
      handle.kill('SIGTERM');
      const timer = new Promise((r) => setTimeout(r, 2000));
      if ((await Promise.race([handle.exited.then(() => 'done'), timer])) !== 'done') handle.kill('SIGKILL');
    }
    for (const child of this.children.reverse()) {
      if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) continue;
      const gone = new Promise((resolve) => child.once('exit', resolve));
      try {
        process.kill(-child.pid, 'SIGTERM');
      } catch {
        /* already gone */
      }
      await Promise.race([gone, new Promise((r) => setTimeout(r, 2000))]);
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        /* exited on SIGTERM */
      }
    }
    for (const ns of this.namespaces.reverse()) await this.run(['ip', 'netns', 'del', ns], { allowFailure: true });
    for (const dir of this.dirs) rmSync(dir, { recursive: true, force: true });
    // Never remove /run/wireguard itself: rmdir of a directory that is a mount
    // point in other mount namespaces detaches those mounts (other live labs).
  }

  /** Namespaces with our prefix that still exist (should be none after cleanup). */
  async leftovers(): Promise<string[]> {
    const res = await this.run(['ip', 'netns', 'list']);
    return res.stdout
      .split('\n')
      .map((l) => l.split(' ')[0] ?? '')
      .filter((n) => n.startsWith(`${this.prefix}-`));
  }
}

function readProc(path: string): string | null {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return null;
  }
}

export async function waitFor(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  return waitForAsync(async () => check(), timeoutMs, what);
}

export async function waitForAsync(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}
