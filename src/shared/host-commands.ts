/** The commands the node agent and the gateway share: `enroll` and `plan`. */
import { join } from 'node:path';
import { describeChange, Reconciler, type FirewallSpec } from './dataplane/reconcile.js';
import { ensureTenantKey } from './dataplane/wireguard.js';
import type { HostKind } from './desired.js';
import { NetwallError } from './errors.js';
import { enrollHost, loadCachedDocument, loadIdentity } from './host-state.js';
import { required } from './program.js';
import { ExecaRunner } from './runner.js';

/** parseArgs options of `enroll`. */
export const ENROLL_OPTIONS = {
  coordinator: { type: 'string' },
  token: { type: 'string' },
  name: { type: 'string' },
  endpoint: { type: 'string' },
  'mgmt-address': { type: 'string' },
  'public-address': { type: 'string' },
} as const;

type EnrollValues = { [K in keyof typeof ENROLL_OPTIONS]?: string | undefined };

export async function enrollCommand(kind: HostKind, stateDir: string, v: EnrollValues, env: NodeJS.ProcessEnv): Promise<void> {
  const id = await enrollHost(stateDir, kind, {
    coordinatorUrl: required(v.coordinator ?? env.NETWALL_COORDINATOR, '--coordinator'),
    token: required(v.token ?? env.NETWALL_ENROLL_TOKEN, '--token'),
    name: required(v.name, '--name'),
    ...(v.endpoint ? { endpoint: v.endpoint } : {}),
    ...(v['mgmt-address'] ? { mgmtAddress: v['mgmt-address'] } : {}),
    ...(v['public-address'] ? { publicAddress: v['public-address'] } : {}),
  });
  console.log(`enrolled ${kind} ${id.name} with ${id.coordinatorUrl}; identity in ${stateDir}`);
}

/** Print what a reconcile of the cached document would change (nothing is changed). */
export async function planCommand(stateDir: string, firewall: FirewallSpec, firewallMemoryFile: string, json: boolean): Promise<void> {
  const id = loadIdentity(stateDir);
  const cached = loadCachedDocument(stateDir, id.coordinatorKey);
  if (!cached) throw new NetwallError(`no cached desired state in ${stateDir}`);
  const rec = new Reconciler({
    runner: new ExecaRunner(),
    log: () => {},
    keyFileFor: (t) => ensureTenantKey(stateDir, t).privateKeyFile,
    firewall,
    firewallMemoryFile: join(stateDir, firewallMemoryFile),
  });
  const changes = await rec.plan(cached.state);
  if (json) console.log(JSON.stringify(changes, null, 2));
  else if (changes.length === 0) console.log(`up to date with version ${cached.state.version}`);
  else for (const c of changes) console.log(describeChange(c));
}
