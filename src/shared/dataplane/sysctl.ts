/**
 * Kernel settings the data plane needs. Read and written with `sysctl` through
 * the runner, so they land in the network namespace the runner targets
 * (/proc/sys/net is per namespace; a write from the agent's own process would
 * hit the agent's namespace instead).
 */
import type { ChangeLogger, Runner } from '../runner.js';

export interface SysctlSetting {
  value: string;
  /**
   * Set only once the key exists: it belongs to a module that netwall's own
   * table loads (conntrack), so on a fresh host it appears with the first
   * firewall apply, and the reconciler sets it right after that apply.
   */
  optional?: boolean;
}

export const REQUIRED_SYSCTLS: Readonly<Record<string, SysctlSetting>> = {
  // Containers are routed, not bridged: the host must forward IPv4.
  'net.ipv4.ip_forward': { value: '1' },
  // Conntrack would otherwise sum every TCP/UDP payload it tracks (a packet from
  // wireguard-go's TUN device arrives with no checksum state), and the receiving
  // stack sums it again (docs/benchmarks.md, data-plane: a few tenths of a percent
  // of the receiving node's CPU). A checksum authenticates nothing — anyone who can
  // forge a packet can sum it — and WireGuard authenticates every mesh packet;
  // the endpoints still verify. OpenWrt ships the same default.
  'net.netfilter.nf_conntrack_checksum': { value: '0', optional: true },
};

export interface SysctlChange {
  kind: 'sysctl';
  op: 'update';
  key: string;
  old: string | null;
  new: string;
}

/** All keys in one `sysctl` call; a key the kernel does not have (yet) is null. */
export async function observeSysctls(runner: Runner): Promise<Record<string, string | null>> {
  const keys = Object.keys(REQUIRED_SYSCTLS);
  // Without -n each line names its key, so a missing key (reported on stderr) shifts nothing.
  const res = await runner.run(['sysctl', ...keys], { allowFailure: true });
  const out: Record<string, string | null> = Object.fromEntries(keys.map((k) => [k, null]));
  for (const line of res.stdout.split('\n')) {
    const eq = line.indexOf(' = ');
    if (eq > 0 && line.slice(0, eq) in out) out[line.slice(0, eq)] = line.slice(eq + 3).trim();
  }
  return out;
}

export function planSysctls(observed: Record<string, string | null>, desired: Readonly<Record<string, SysctlSetting>> = REQUIRED_SYSCTLS): SysctlChange[] {
  return Object.entries(desired)
    .filter(([key, s]) => observed[key] !== s.value && !(s.optional && (observed[key] ?? null) === null))
    .map(([key, s]) => ({ kind: 'sysctl', op: 'update', key, old: observed[key] ?? null, new: s.value }));
}

/** Optional keys the kernel does not have yet (their module is not loaded). */
export function waitingSysctls(observed: Record<string, string | null>): boolean {
  return Object.entries(REQUIRED_SYSCTLS).some(([key, s]) => s.optional && (observed[key] ?? null) === null);
}

export async function applySysctlChange(change: SysctlChange, runner: Runner, log: ChangeLogger): Promise<void> {
  const argv = ['sysctl', '-w', `${change.key}=${change.new}`];
  log(`[#] ${argv.join(' ')}`);
  await runner.run(argv);
}
