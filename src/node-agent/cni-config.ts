/**
 * Per-tenant CNI network configuration files: `<dir>/netwall-<tenant>.conflist`
 * (default dir /etc/cni/net.d), so `podman run --network netwall-acme …` (or
 * nerdctl/containerd) puts a container into tenant acme through the netwall
 * plugin. The agent writes one per tenant this node serves (syncCniConfigs) and
 * removes the ones for tenants it no longer serves. The files hold no secrets
 * (mode 0644): the agent socket is what is protected.
 *
 * Optional extra networks can carry static labels (e.g. `netwall-acme-web`
 * with {app: web}): every container on that network gets those labels.
 */
import { chmodSync, existsSync, readdirSync, readFileSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../shared/fsutil.js';
import { ValidationError } from '../shared/errors.js';
import { NAME_RE, type Labels } from '../shared/names.js';
import { isValidMtu } from './attach.js';
import { validateLabels, DEFAULT_AGENT_SOCKET } from './socket.js';
import { CNI_VERSION, PLUGIN_TYPE } from './cni/types.js';

export const DEFAULT_CNI_CONF_DIR = '/etc/cni/net.d';
export const CNI_NETWORK_PREFIX = 'netwall-';
const NETWORK_NAME_RE = /^netwall-[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;

export interface CniNetworkOptions {
  tenant: string;
  /** Default `netwall-<tenant>`; must start with `netwall-`. */
  networkName?: string;
  /** Default /run/netwall/agent.sock. */
  agentSocket?: string;
  mtu?: number;
  /** Static labels for every container on this network (written as `args.cni.labels`). */
  labels?: Labels;
}

export interface CniConflist {
  cniVersion: string;
  name: string;
  plugins: {
    type: string;
    tenant: string;
    agentSocket: string;
    mtu?: number;
    args?: { cni: { labels: { key: string; value: string }[] } };
  }[];
}

export function cniNetworkName(tenant: string): string {
  return `${CNI_NETWORK_PREFIX}${tenant}`;
}

export function renderCniConfig(opts: CniNetworkOptions): CniConflist {
  if (!NAME_RE.test(opts.tenant ?? '')) throw new ValidationError(`tenant: invalid name ${JSON.stringify(opts.tenant)}`, 'tenant');
  const name = opts.networkName ?? cniNetworkName(opts.tenant);
  if (!NETWORK_NAME_RE.test(name)) throw new ValidationError(`networkName: must look like netwall-<name>, got ${JSON.stringify(name)}`, 'networkName');
  const agentSocket = opts.agentSocket ?? DEFAULT_AGENT_SOCKET;
  if (!agentSocket.startsWith('/')) throw new ValidationError('agentSocket: must be an absolute path', 'agentSocket');
  if (opts.mtu !== undefined && !isValidMtu(opts.mtu)) throw new ValidationError('mtu: must be an integer 576..65535', 'mtu');
  const labels = validateLabels(opts.labels ?? {});
  const keys = Object.keys(labels).sort();
  return {
    cniVersion: CNI_VERSION,
    name,
    plugins: [
      {
        type: PLUGIN_TYPE,
        tenant: opts.tenant,
        agentSocket,
        ...(opts.mtu !== undefined ? { mtu: opts.mtu } : {}),
        ...(keys.length > 0 ? { args: { cni: { labels: keys.map((key) => ({ key, value: labels[key] as string })) } } } : {}),
      },
    ],
  };
}

export function renderCniConfigText(opts: CniNetworkOptions): string {
  return `${JSON.stringify(renderCniConfig(opts), null, 2)}\n`;
}

export function cniConfigPath(networkName: string, dir = DEFAULT_CNI_CONF_DIR): string {
  return join(dir, `${networkName}.conflist`);
}

/** Writes the conflist (atomically, 0644) unless it already has this content. */
export function writeCniConfig(opts: CniNetworkOptions & { dir?: string }): { path: string; changed: boolean } {
  const text = renderCniConfigText(opts);
  const path = cniConfigPath(opts.networkName ?? cniNetworkName(opts.tenant), opts.dir);
  if (existsSync(path) && readFileSync(path, 'utf8') === text) return { path, changed: false };
  writeFileAtomic(path, text, 0o644);
  chmodSync(path, 0o644);
  return { path, changed: true };
}

/** Removes `<dir>/<networkName>.conflist`; absent is fine. */
export function removeCniConfig(networkName: string, dir = DEFAULT_CNI_CONF_DIR): boolean {
  const path = cniConfigPath(networkName, dir);
  if (!existsSync(path)) return false;
  unlinkSync(path);
  return true;
}

/**
 * Makes `dir` hold exactly these netwall networks: writes the wanted ones and
 * removes every other `netwall-*.conflist` (other files are never touched).
 */
export function syncCniConfigs(networks: CniNetworkOptions[], dir = DEFAULT_CNI_CONF_DIR): { written: string[]; removed: string[] } {
  const wanted = new Set<string>();
  const written: string[] = [];
  for (const n of networks) {
    const r = writeCniConfig({ ...n, dir });
    wanted.add(r.path);
    if (r.changed) written.push(r.path);
  }
  const removed: string[] = [];
  if (existsSync(dir)) {
    for (const f of readdirSync(dir).sort()) {
      if (!f.startsWith(CNI_NETWORK_PREFIX) || !f.endsWith('.conflist')) continue;
      const path = join(dir, f);
      if (wanted.has(path)) continue;
      unlinkSync(path);
      removed.push(path);
    }
  }
  return { written, removed };
}
