/**
 * Container plumbing: one routed veth per workload, shared by the CNI plugin
 * and attach-by-netns. No bridge, no shared L2:
 *
 *   host netns                               container netns (any path: /run/netns/X, /proc/PID/ns/net)
 *   nwc<hash>  169.254.1.1/32 scope link ── eth0  A/32
 *   route A/32 dev nwc<hash>                 route 169.254.1.1 dev eth0 scope link
 *                                            route default via 169.254.1.1 dev eth0
 *
 * IPv6 is disabled on both ends (before they come up, so no link-local address
 * ever appears). The host end carries an ifalias `netwall:<tenant>/<name>[/<containerId>]`
 * so the agent can map live links back to workloads and a DEL from one
 * container never removes another container's veth.
 *
 * Shape (DESIGN.md): observe → plan (pure) → apply → observe again. An empty
 * plan is "already attached"; CHECK is observe + plan and reports what is off.
 * Every command goes through the injected Runner; container-side commands run
 * as `nsenter --net=PATH …` (iproute2's `-n` only takes names under /run/netns).
 */
import type { ChangeLogger, Runner } from '../shared/runner.js';
import { CommandError, ConflictError, NetwallError, ValidationError } from '../shared/errors.js';
import { NAME_RE } from '../shared/names.js';
import { isIpv4 } from '../shared/ipv4.js';
import { CONTAINER_IF_PREFIX } from '../shared/desired.js';
import { CONTAINER_GATEWAY, containerInterfaceName } from './names.js';

export const DEFAULT_IFNAME = 'eth0';
export const DEFAULT_MTU = 1420;
const ALIAS_PREFIX = 'netwall:';
const GATEWAY_CIDR = `${CONTAINER_GATEWAY}/32`;

export interface AttachSpec {
  /** Path of the container's network namespace (nsfs file). */
  netns: string;
  tenant: string;
  /** Workload name (NAME_PATTERN). */
  name: string;
  /** The workload's mesh address (IPv4, no prefix). */
  address: string;
  mtu: number;
  /** Interface name inside the container; default eth0. */
  ifname?: string;
  /** Recorded in the host veth's ifalias; a detach naming another container id leaves the veth alone. */
  containerId?: string;
}

export interface DetachSpec {
  tenant: string;
  name: string;
  /** When set, only a veth attached for this container id (or for none) is removed. */
  containerId?: string;
}

export interface InterfaceInfo {
  name: string;
  mac: string;
  ifindex: number;
}

export interface AttachResult {
  tenant: string;
  name: string;
  address: string;
  gateway: string;
  mtu: number;
  hostInterface: InterfaceInfo;
  containerInterface: InterfaceInfo & { sandbox: string };
  /** Routes installed inside the container (CNI result shape). */
  routes: { dst: string; gw?: string }[];
  /** The commands that were run to get here (empty: it was already attached). */
  changes: string[];
}

export interface AttachedLink {
  ifname: string;
  ifindex: number;
  up: boolean;
  /** From the ifalias; null when the link carries no netwall alias. */
  tenant: string | null;
  name: string | null;
  containerId: string | null;
}

export interface AttachOptions {
  /** Prints every change made to the system (`[#] ip link add …`). */
  log?: ChangeLogger;
}

/** A planned command and why it is needed (the "why" is what CHECK reports). */
export interface AttachChange {
  argv: string[];
  why: string;
  /** Tolerated when the target does not exist (disabling IPv6 on a kernel without IPv6). */
  ifPresent?: boolean;
}

// ---------------------------------------------------------------- validation

/** Container ids as the CNI spec's reference implementation accepts them. */
export const CONTAINER_ID_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

export function isIPv4(s: unknown): s is string {
  return typeof s === 'string' && isIpv4(s);
}

/** Linux interface names: 1..15 bytes, not `.`/`..`, no `/`, `:` or whitespace. */
export function isValidIfname(s: unknown): s is string {
  return (
    typeof s === 'string' &&
    s.length > 0 &&
    Buffer.byteLength(s) <= 15 &&
    s !== '.' &&
    s !== '..' &&
    !/[/:\s]/.test(s)
  );
}

export function isValidMtu(n: unknown): n is number {
  return typeof n === 'number' && Number.isInteger(n) && n >= 576 && n <= 65535;
}

type ValidSpec = Required<Omit<AttachSpec, 'containerId'>> & { containerId?: string };

function validateSpec(spec: AttachSpec): ValidSpec {
  if (typeof spec.netns !== 'string' || !spec.netns.startsWith('/')) throw new ValidationError('netns: must be an absolute path', 'netns');
  if (!NAME_RE.test(spec.tenant ?? '')) throw new ValidationError(`tenant: invalid name ${JSON.stringify(spec.tenant)}`, 'tenant');
  if (!NAME_RE.test(spec.name ?? '')) throw new ValidationError(`name: invalid name ${JSON.stringify(spec.name)}`, 'name');
  if (!isIPv4(spec.address)) throw new ValidationError(`address: not an IPv4 address: ${JSON.stringify(spec.address)}`, 'address');
  if (!isValidMtu(spec.mtu)) throw new ValidationError(`mtu: must be an integer 576..65535`, 'mtu');
  const ifname = spec.ifname ?? DEFAULT_IFNAME;
  if (!isValidIfname(ifname)) throw new ValidationError(`ifname: invalid interface name ${JSON.stringify(ifname)}`, 'ifname');
  if (spec.containerId !== undefined && !CONTAINER_ID_RE.test(spec.containerId)) {
    throw new ValidationError('containerId: invalid container id', 'containerId');
  }
  return { ...spec, ifname };
}

// ---------------------------------------------------------------- alias

export function attachmentAlias(tenant: string, name: string, containerId?: string): string {
  return `${ALIAS_PREFIX}${tenant}/${name}${containerId ? `/${containerId}` : ''}`;
}

export function parseAttachmentAlias(alias: string | undefined): { tenant: string; name: string; containerId: string | null } | null {
  if (!alias?.startsWith(ALIAS_PREFIX)) return null;
  const parts = alias.slice(ALIAS_PREFIX.length).split('/');
  if (parts.length < 2 || parts.length > 3) return null;
  const [tenant, name, containerId] = parts as [string, string, string | undefined];
  if (!NAME_RE.test(tenant) || !NAME_RE.test(name)) return null;
  return { tenant, name, containerId: containerId ?? null };
}

// ---------------------------------------------------------------- observation

/** What `ip -j -d addr show` prints per link (the parts we read). */
export interface IpLink {
  ifindex: number;
  ifname: string;
  link_index?: number;
  flags?: string[];
  mtu?: number;
  address?: string;
  ifalias?: string;
  linkinfo?: { info_kind?: string };
  addr_info?: { family: string; local: string; prefixlen: number; scope?: string }[];
}

export interface IpRoute {
  dst: string;
  gateway?: string;
  dev?: string;
  scope?: string;
}

export interface ObservedSide {
  link: IpLink | null;
  /** `net.ipv6.conf.IF.disable_ipv6`: true/false, or null when the kernel has no IPv6 (nothing to disable). */
  ipv6Disabled: boolean | null;
  routes: IpRoute[];
}

export interface ObservedAttach {
  host: ObservedSide;
  container: ObservedSide & { lo: IpLink | null };
}

function inNetns(netns: string, argv: string[]): string[] {
  return ['nsenter', `--net=${netns}`, ...argv];
}

function isMissing(stderr: string): boolean {
  return /does not exist|Cannot find device|No such device|cannot stat|No such file or directory/i.test(stderr);
}

function parseJson<T>(argv: readonly string[], text: string): T {
  try {
    return JSON.parse(text || '[]') as T;
  } catch {
    throw new NetwallError(`${argv.join(' ')}: unparseable JSON output: ${text.slice(0, 200)}`);
  }
}

async function showLinks(runner: Runner, prefix: string[], dev?: string): Promise<IpLink[]> {
  const argv = [...prefix, 'ip', '-j', '-d', 'addr', 'show', ...(dev ? ['dev', dev] : [])];
  const res = await runner.run(argv, { allowFailure: true });
  if (res.exitCode !== 0) {
    if (dev && isMissing(res.stderr)) return [];
    throw new CommandError(argv, res.exitCode, res.stderr);
  }
  return parseJson<IpLink[]>(argv, res.stdout);
}

async function readIpv6Disabled(runner: Runner, prefix: string[], dev: string): Promise<boolean | null> {
  const argv = [...prefix, 'sysctl', '-n', `net/ipv6/conf/${dev}/disable_ipv6`];
  const res = await runner.run(argv, { allowFailure: true });
  if (res.exitCode !== 0) {
    if (isMissing(res.stderr)) return null;
    throw new CommandError(argv, res.exitCode, res.stderr);
  }
  return res.stdout.trim() === '1';
}

async function showRoutes(runner: Runner, prefix: string[], selector: string[]): Promise<IpRoute[]> {
  const argv = [...prefix, 'ip', '-j', 'route', 'show', ...selector];
  const res = await runner.run(argv);
  return parseJson<IpRoute[]>(argv, res.stdout);
}

/** Read the live state of one attachment (host veth, container side, routes). Read-only. */
export async function observeAttachment(runner: Runner, spec: AttachSpec): Promise<ObservedAttach> {
  const s = validateSpec(spec);
  const hostIf = containerInterfaceName(s.tenant, s.name);
  const ns = inNetns(s.netns, []);
  const [hostLink] = await showLinks(runner, [], hostIf);
  const host: ObservedSide = {
    link: hostLink ?? null,
    ipv6Disabled: hostLink ? await readIpv6Disabled(runner, [], hostIf) : null,
    routes: await showRoutes(runner, [], [`${s.address}/32`]),
  };
  const links = await showLinks(runner, ns);
  const cLink = links.find((l) => l.ifname === s.ifname) ?? null;
  const container = {
    link: cLink,
    lo: links.find((l) => l.ifname === 'lo') ?? null,
    ipv6Disabled: cLink ? await readIpv6Disabled(runner, ns, s.ifname) : null,
    routes: cLink ? await showRoutes(runner, ns, []) : [],
  };
  return { host, container };
}

// ---------------------------------------------------------------- plan (pure)

const isUp = (l: IpLink | null): boolean => !!l?.flags?.includes('UP');
const inetAddrs = (l: IpLink | null): string[] =>
  (l?.addr_info ?? []).filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`);

/**
 * The commands that take `observed` to the attached state. Pure. Throws
 * ConflictError when the host veth belongs to another namespace or the
 * container already has a foreign interface of that name: netwall never steals.
 */
export function planAttach(spec: AttachSpec, observed: ObservedAttach): AttachChange[] {
  const s = validateSpec(spec);
  const hostIf = containerInterfaceName(s.tenant, s.name);
  const alias = attachmentAlias(s.tenant, s.name, s.containerId);
  const ns = (argv: string[]) => inNetns(s.netns, argv);
  const changes: AttachChange[] = [];
  let { link: hostLink } = observed.host;
  let cLink = observed.container.link;
  let hostV6 = observed.host.ipv6Disabled;
  let cV6 = observed.container.ipv6Disabled;

  if (hostLink && (!cLink || cLink.link_index !== hostLink.ifindex)) {
    const owner = parseAttachmentAlias(hostLink.ifalias);
    throw new ConflictError(
      `workload ${s.tenant}/${s.name} is already attached to another network namespace (host veth ${hostIf}` +
        `${owner?.containerId ? `, container ${owner.containerId}` : ''}); detach it first`,
    );
  }
  if (!hostLink && cLink) {
    throw new ConflictError(`interface ${s.ifname} already exists in ${s.netns} and is not netwall's veth for ${s.tenant}/${s.name}`);
  }
  if (!hostLink) {
    changes.push({
      argv: ['ip', 'link', 'add', hostIf, 'mtu', String(s.mtu), 'type', 'veth', 'peer', 'name', s.ifname, 'mtu', String(s.mtu), 'netns', s.netns],
      why: `veth ${hostIf} <-> ${s.ifname} is missing`,
    });
    // A fresh veth pair: down, no addresses, IPv6 at the kernel default (we cannot
    // read the sysctl before the link exists; writing it is harmless when IPv6 is absent).
    hostLink = { ifindex: -1, ifname: hostIf, mtu: s.mtu, flags: [], addr_info: [] };
    cLink = { ifindex: -1, ifname: s.ifname, mtu: s.mtu, flags: [], addr_info: [] };
    hostV6 = false;
    cV6 = false;
  }
  const cl = cLink as IpLink;

  // IPv6 off before anything comes up.
  if (hostV6 === false) {
    changes.push({ argv: ['sysctl', '-q', '-w', `net/ipv6/conf/${hostIf}/disable_ipv6=1`], why: `IPv6 is enabled on ${hostIf}`, ifPresent: true });
  }
  if (cV6 === false) {
    changes.push({
      argv: ns(['sysctl', '-q', '-w', `net/ipv6/conf/${s.ifname}/disable_ipv6=1`]),
      why: `IPv6 is enabled on ${s.ifname} in the container`,
      ifPresent: true,
    });
  }

  // Host side.
  if (hostLink.ifalias !== alias) {
    changes.push({ argv: ['ip', 'link', 'set', 'dev', hostIf, 'alias', alias], why: `${hostIf} alias is not ${alias}` });
  }
  if (hostLink.mtu !== s.mtu) {
    changes.push({ argv: ['ip', 'link', 'set', 'dev', hostIf, 'mtu', String(s.mtu)], why: `${hostIf} mtu ${hostLink.mtu} != ${s.mtu}` });
  }
  const hostAddrs = inetAddrs(hostLink);
  for (const a of hostAddrs.filter((x) => x !== GATEWAY_CIDR)) {
    changes.push({ argv: ['ip', 'addr', 'del', a, 'dev', hostIf], why: `${hostIf} has a stray address ${a}` });
  }
  const gw = hostLink.addr_info?.find((a) => a.family === 'inet' && `${a.local}/${a.prefixlen}` === GATEWAY_CIDR);
  if (!gw || gw.scope !== 'link') {
    changes.push({ argv: ['ip', 'addr', 'replace', GATEWAY_CIDR, 'dev', hostIf, 'scope', 'link'], why: `${hostIf} lacks ${GATEWAY_CIDR} scope link` });
  }
  if (!isUp(hostLink)) changes.push({ argv: ['ip', 'link', 'set', 'dev', hostIf, 'up'], why: `${hostIf} is down` });

  // Container side.
  if (cl.mtu !== s.mtu) {
    changes.push({ argv: ns(['ip', 'link', 'set', 'dev', s.ifname, 'mtu', String(s.mtu)]), why: `${s.ifname} mtu ${cl.mtu} != ${s.mtu}` });
  }
  const want = `${s.address}/32`;
  for (const a of inetAddrs(cl).filter((x) => x !== want)) {
    changes.push({ argv: ns(['ip', 'addr', 'del', a, 'dev', s.ifname]), why: `${s.ifname} has a stray address ${a}` });
  }
  if (!inetAddrs(cl).includes(want)) {
    changes.push({ argv: ns(['ip', 'addr', 'replace', want, 'dev', s.ifname]), why: `${s.ifname} lacks ${want}` });
  }
  if (!isUp(cl)) changes.push({ argv: ns(['ip', 'link', 'set', 'dev', s.ifname, 'up']), why: `${s.ifname} is down` });
  if (!isUp(observed.container.lo)) changes.push({ argv: ns(['ip', 'link', 'set', 'dev', 'lo', 'up']), why: 'lo is down in the container' });
  const cRoutes = observed.container.link ? observed.container.routes : [];
  if (!cRoutes.some((r) => r.dst === CONTAINER_GATEWAY && r.dev === s.ifname && r.scope === 'link' && !r.gateway)) {
    changes.push({
      argv: ns(['ip', 'route', 'replace', CONTAINER_GATEWAY, 'dev', s.ifname, 'scope', 'link']),
      why: `container has no route ${CONTAINER_GATEWAY} dev ${s.ifname} scope link`,
    });
  }
  const defaults = cRoutes.filter((r) => r.dst === 'default');
  if (defaults.length !== 1 || defaults[0]?.gateway !== CONTAINER_GATEWAY || defaults[0]?.dev !== s.ifname) {
    changes.push({
      argv: ns(['ip', 'route', 'replace', 'default', 'via', CONTAINER_GATEWAY, 'dev', s.ifname]),
      why: `container default route is not via ${CONTAINER_GATEWAY} dev ${s.ifname}`,
    });
  }

  // The host's /32 towards the workload.
  const hostRoutes = observed.host.routes.filter((r) => r.dst === s.address || r.dst === want);
  if (hostRoutes.length !== 1 || hostRoutes[0]?.dev !== hostIf || hostRoutes[0]?.gateway) {
    changes.push({ argv: ['ip', 'route', 'replace', want, 'dev', hostIf, 'scope', 'link'], why: `host has no route ${want} dev ${hostIf}` });
  }
  return changes;
}

// ---------------------------------------------------------------- apply

function resultFrom(s: ValidSpec, o: ObservedAttach, changes: string[]): AttachResult {
  const h = o.host.link;
  const c = o.container.link;
  if (!h || !c) throw new NetwallError(`attach ${s.tenant}/${s.name}: veth vanished while attaching`);
  return {
    tenant: s.tenant,
    name: s.name,
    address: s.address,
    gateway: CONTAINER_GATEWAY,
    mtu: s.mtu,
    hostInterface: { name: h.ifname, mac: h.address ?? '', ifindex: h.ifindex },
    containerInterface: { name: c.ifname, mac: c.address ?? '', ifindex: c.ifindex, sandbox: s.netns },
    routes: [{ dst: GATEWAY_CIDR }, { dst: '0.0.0.0/0', gw: CONTAINER_GATEWAY }],
    changes,
  };
}

/**
 * Attach (or converge) a workload's veth in `spec.netns`. Idempotent: a second
 * call on an attached workload runs only read commands. A failure while
 * creating a new veth removes it again, so a failed attach leaves nothing behind.
 */
export async function attachWorkload(runner: Runner, spec: AttachSpec, options: AttachOptions = {}): Promise<AttachResult> {
  const s = validateSpec(spec);
  const before = await observeAttachment(runner, s);
  const plan = planAttach(s, before);
  const created = !before.host.link;
  const done: string[] = [];
  try {
    for (const change of plan) {
      options.log?.(`[#] ${change.argv.join(' ')}`);
      const res = await runner.run(change.argv, { allowFailure: true });
      if (res.exitCode !== 0 && !(change.ifPresent && isMissing(res.stderr))) throw new CommandError(change.argv, res.exitCode, res.stderr);
      done.push(change.argv.join(' '));
    }
  } catch (err) {
    if (created && done.length > 0) await removeLink(runner, containerInterfaceName(s.tenant, s.name), options).catch(() => undefined);
    throw err;
  }
  const after = plan.length === 0 ? before : await observeAttachment(runner, s);
  const left = plan.length === 0 ? [] : planAttach(s, after);
  if (left.length > 0) {
    throw new NetwallError(`attach ${s.tenant}/${s.name}: did not converge: ${left.map((c) => c.why).join('; ')}`);
  }
  return resultFrom(s, after, done);
}

/**
 * CHECK: what is wrong with an attachment (empty = all good). Read-only.
 * Without `mtu` the MTU is not judged (the agent may have chosen it).
 */
export async function checkWorkload(runner: Runner, spec: Omit<AttachSpec, 'mtu'> & { mtu?: number }): Promise<string[]> {
  const probe = { ...spec, mtu: spec.mtu ?? DEFAULT_MTU };
  const observed = await observeAttachment(runner, probe);
  const hostLink = observed.host.link;
  if (!hostLink) return [`host veth ${containerInterfaceName(spec.tenant, spec.name)} does not exist`];
  if (!observed.container.link) return [`interface ${probe.ifname ?? DEFAULT_IFNAME} does not exist in ${spec.netns}`];
  try {
    return planAttach({ ...probe, mtu: spec.mtu ?? hostLink.mtu ?? DEFAULT_MTU }, observed).map((c) => c.why);
  } catch (err) {
    return [(err as Error).message];
  }
}

async function removeLink(runner: Runner, ifname: string, options: AttachOptions): Promise<boolean> {
  const argv = ['ip', 'link', 'del', 'dev', ifname];
  options.log?.(`[#] ${argv.join(' ')}`);
  const res = await runner.run(argv, { allowFailure: true });
  if (res.exitCode === 0) return true;
  if (isMissing(res.stderr)) return false;
  throw new CommandError(argv, res.exitCode, res.stderr);
}

/**
 * Remove a workload's veth (its peer, addresses and the host /32 go with it).
 * Idempotent: an absent veth is success. With `containerId`, a veth that the
 * alias says belongs to a different container is left alone (`removed: false,
 * foreign: true`).
 */
export async function detachWorkload(runner: Runner, spec: DetachSpec, options: AttachOptions = {}): Promise<{ removed: boolean; foreign: boolean }> {
  if (!NAME_RE.test(spec.tenant ?? '')) throw new ValidationError(`tenant: invalid name ${JSON.stringify(spec.tenant)}`, 'tenant');
  if (!NAME_RE.test(spec.name ?? '')) throw new ValidationError(`name: invalid name ${JSON.stringify(spec.name)}`, 'name');
  const hostIf = containerInterfaceName(spec.tenant, spec.name);
  const [link] = await showLinks(runner, [], hostIf);
  if (!link) return { removed: false, foreign: false };
  if (spec.containerId) {
    // Attached for another container (or by hand, without a container id): not ours to remove.
    const owner = parseAttachmentAlias(link.ifalias);
    if (owner && owner.containerId !== spec.containerId) return { removed: false, foreign: true };
  }
  return { removed: await removeLink(runner, hostIf, options), foreign: false };
}

/** Every `nwc*` link on the host, with the workload its alias names (for garbage collection). */
export async function listAttached(runner: Runner): Promise<AttachedLink[]> {
  const argv = ['ip', '-j', '-d', 'link', 'show'];
  const res = await runner.run(argv);
  return parseJson<IpLink[]>(argv, res.stdout)
    .filter((l) => l.ifname?.startsWith(CONTAINER_IF_PREFIX))
    .map((l) => {
      const owner = parseAttachmentAlias(l.ifalias);
      return {
        ifname: l.ifname,
        ifindex: l.ifindex,
        up: isUp(l),
        tenant: owner?.tenant ?? null,
        name: owner?.name ?? null,
        containerId: owner?.containerId ?? null,
      };
    })
    .sort((a, b) => a.ifname.localeCompare(b.ifname));
}
