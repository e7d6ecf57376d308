/**
 * Kernel settings the data plane needs. Read and written with `sysctl` through
 * the runner, so they land in the network namespace the runner targets
 * (/proc/sys/net is per namespace; a write from the agent's own process would
 * hit the agent's namespace instead).
 */
import type { ChangeLogger, Runner } from '../runner.js';

/** Containers are routed, not bridged: the host must forward IPv4. */
export const REQUIRED_SYSCTLS: Readonly<Record<string, string>> = {
  'net.ipv4.ip_forward': '1',
};

export interface SysctlChange {
  kind: 'sysctl';
  op: 'update';
  key: string;
  old: string | null;
  new: string;
}

export async function observeSysctls(runner: Runner, keys: readonly string[] = Object.keys(REQUIRED_SYSCTLS)): Promise<Record<string, string | null>> {
  const out: Record<string, string | null> = {};
  for (const key of keys) {
    const res = await runner.run(['sysctl', '-n', key], { allowFailure: true });
    out[key] = res.exitCode === 0 ? res.stdout.trim() : null;
  }
  return out;
}

export function planSysctls(observed: Record<string, string | null>, desired: Readonly<Record<string, string>> = REQUIRED_SYSCTLS): SysctlChange[] {
  return Object.entries(desired)
    .filter(([key, value]) => observed[key] !== value)
    .map(([key, value]) => ({ kind: 'sysctl', op: 'update', key, old: observed[key] ?? null, new: value }));
}

export async function applySysctlChange(change: SysctlChange, runner: Runner, log: ChangeLogger): Promise<void> {
  const argv = ['sysctl', '-w', `${change.key}=${change.new}`];
  log(`[#] ${argv.join(' ')}`);
  await runner.run(argv);
}
