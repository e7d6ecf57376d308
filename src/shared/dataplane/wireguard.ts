/**
 * One WireGuard interface per tenant: link, key and port, MTU, the host's mesh
 * address, and peers. Observed from the kernel (`ip -j link/addr`, `wg show
 * IF dump`), diffed against the document, applied with `wg set` and `ip`.
 * Interfaces are never recreated to apply a change and unchanged peers are
 * never touched, so their sessions (latest handshake) survive.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { generateWireguardKeyPair, sha256hex, wireguardPublicKey } from '../crypto.js';
import type { DesiredState, PeerState, TenantState } from '../desired.js';
import { writeFileAtomic } from '../fsutil.js';
import type { ChangeLogger, Runner } from '../runner.js';
import { TENANT_IF_PREFIX } from '../desired.js';
import { normalizeCidr } from './routes.js';
import type { WireguardGoSupervisor } from './wgproc.js';

// ---------------------------------------------------------------- keys

export interface TenantKey {
  privateKeyFile: string;
  publicKey: string;
}

/**
 * The tenant's private key file in `dir` (mode 0600), generated on first use.
 * The key never appears on a command line: `wg set … private-key FILE`.
 */
export function ensureTenantKey(dir: string, tenant: string): TenantKey {
  const privateKeyFile = join(dir, `wg-${tenant}.key`);
  if (!existsSync(privateKeyFile)) writeFileAtomic(privateKeyFile, `${generateWireguardKeyPair().privateKey}\n`, 0o600);
  return { privateKeyFile, publicKey: publicKeyOfFile(privateKeyFile) };
}

/**
 * x25519 in JavaScript costs milliseconds per tick and tenant: derive each
 * key's public half once, remembered by a hash of the private key (a rotated
 * file is a new entry; no private key is kept).
 */
const publicKeys = new Map<string, string>();

export function publicKeyOfFile(privateKeyFile: string): string {
  const privateKey = readFileSync(privateKeyFile, 'utf8').trim();
  const id = sha256hex(privateKey);
  let pub = publicKeys.get(id);
  if (pub === undefined) {
    pub = wireguardPublicKey(privateKey);
    if (publicKeys.size > 1000) publicKeys.clear();
    publicKeys.set(id, pub);
  }
  return pub;
}

// ---------------------------------------------------------------- model

export interface DesiredPeer {
  host: string;
  publicKey: string;
  /** null: leave whatever endpoint the peer roamed to. */
  endpoint: string | null;
  /** Canonical CIDRs, sorted. */
  allowedIps: string[];
  /** null = off. */
  keepalive: number | null;
}

export interface DesiredInterface {
  tenant: string;
  iface: string;
  listenPort: number;
  mtu: number;
  /** `address/32`. */
  address: string;
  privateKeyFile: string;
  publicKey: string;
  peers: DesiredPeer[];
}

export interface ObservedPeer {
  publicKey: string;
  endpoint: string | null;
  allowedIps: string[];
  /** Unix seconds, 0 = never. */
  latestHandshake: number;
  rxBytes: number;
  txBytes: number;
  keepalive: number | null;
}

/** `wg show IF dump`, minus the private key (we never keep it in memory longer than parsing). */
export interface WgDump {
  publicKey: string | null;
  listenPort: number;
  fwmark: string;
  peers: ObservedPeer[];
}

export interface ObservedInterface {
  iface: string;
  /** `wireguard` (kernel) or `tun` (wireguard-go). */
  linkKind: string;
  mtu: number;
  up: boolean;
  /** IPv4 addresses as canonical `a.b.c.d/n`. */
  addresses: string[];
  /** null when `wg` cannot talk to it (no kernel module config, no wireguard-go socket). */
  wg: WgDump | null;
}

type IfChange<K extends string, Op, O, N> = { kind: K; op: Op; iface: string; old: O; new: N };

export type WireguardChange =
  | IfChange<'link-add', 'add', ObservedInterface | null, { iface: string }>
  | IfChange<'link-del', 'delete', ObservedInterface, null>
  | IfChange<'wg-config', 'update', { publicKey: string | null; listenPort: number } | null, { publicKey: string; listenPort: number; privateKeyFile: string }>
  | IfChange<'mtu', 'update', number | null, number>
  | IfChange<'addr-add', 'add', null, string>
  | IfChange<'link-up', 'update', boolean, true>
  | IfChange<'peer-set', 'add' | 'update', ObservedPeer | null, DesiredPeer>
  | IfChange<'peer-del', 'delete', ObservedPeer, null>
  | IfChange<'addr-del', 'delete', string, null>;

/**
 * The tenant's peers as this host sees them: the shared member list minus this
 * host itself (by name, and by key in case the list is stale).
 */
export function remotePeers(doc: DesiredState, tenant: TenantState, ownPublicKey?: string): PeerState[] {
  return tenant.peers.filter((p) => p.host !== doc.host && p.publicKey !== ownPublicKey);
}

/** What the document asks for, with each tenant's local key (pure). */
export function desiredWireguard(doc: DesiredState, keyFor: (tenant: string) => TenantKey): DesiredInterface[] {
  const keepalive = doc.settings.keepaliveSeconds ? doc.settings.keepaliveSeconds : null;
  return doc.tenants.map((t) => {
    const key = keyFor(t.tenant);
    const peers = new Map<string, DesiredPeer>();
    for (const p of remotePeers(doc, t, key.publicKey)) {
      peers.set(p.publicKey, {
        host: p.host,
        publicKey: p.publicKey,
        endpoint: p.endpoint,
        allowedIps: [...new Set(p.allowedIps.map(normalizeCidr))].sort(),
        // Behind NAT we keep the mapping open towards peers we can dial; the others dial us.
        keepalive: p.endpoint !== null ? keepalive : null,
      });
    }
    return {
      tenant: t.tenant,
      iface: t.iface,
      listenPort: t.listenPort,
      mtu: doc.settings.mtu,
      address: normalizeCidr(`${t.address.split('/')[0]}/32`),
      privateKeyFile: key.privateKeyFile,
      publicKey: key.publicKey,
      peers: [...peers.values()],
    };
  });
}

// ---------------------------------------------------------------- observe

/** Parse `wg show IF dump`: one interface line, then one line per peer, tab-separated. */
export function parseWgDump(text: string): WgDump {
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  const head = (lines.shift() ?? '').split('\t');
  const [, publicKey, listenPort, fwmark] = head;
  const peers = lines.map((line): ObservedPeer => {
    const [key = '', , endpoint = '(none)', allowed = '(none)', handshake = '0', rx = '0', tx = '0', keepalive = 'off'] = line.split('\t');
    return {
      publicKey: key,
      endpoint: endpoint === '(none)' ? null : endpoint,
      allowedIps: allowed === '(none)' ? [] : allowed.split(',').filter(Boolean).map(normalizeCidr).sort(),
      latestHandshake: Number(handshake) || 0,
      rxBytes: Number(rx) || 0,
      txBytes: Number(tx) || 0,
      keepalive: keepalive === 'off' || keepalive === '0' ? null : Number(keepalive),
    };
  });
  return {
    publicKey: publicKey && publicKey !== '(none)' ? publicKey : null,
    listenPort: Number(listenPort) || 0,
    fwmark: fwmark ?? 'off',
    peers,
  };
}

interface IpLinkJson {
  ifname: string;
  mtu?: number;
  flags?: string[];
  linkinfo?: { info_kind?: string };
}

interface IpAddrJson {
  ifname: string;
  addr_info?: { family?: string; local?: string; prefixlen?: number }[];
}

/** Every `nw-*` interface on the host, with its WireGuard configuration. */
export async function observeWireguard(runner: Runner): Promise<ObservedInterface[]> {
  const links = JSON.parse((await runner.run(['ip', '-j', '-d', 'link', 'show'])).stdout || '[]') as IpLinkJson[];
  const addrs = JSON.parse((await runner.run(['ip', '-j', '-4', 'addr', 'show'])).stdout || '[]') as IpAddrJson[];
  const addrsOf = new Map(
    addrs.map((a) => [
      a.ifname,
      (a.addr_info ?? []).filter((i) => i.family === 'inet' && i.local).map((i) => normalizeCidr(`${i.local}/32`)),
    ]),
  );
  const out: ObservedInterface[] = [];
  for (const link of links) {
    if (!link.ifname.startsWith(TENANT_IF_PREFIX)) continue;
    const dump = await runner.run(['wg', 'show', link.ifname, 'dump'], { allowFailure: true });
    out.push({
      iface: link.ifname,
      linkKind: link.linkinfo?.info_kind ?? 'unknown',
      mtu: link.mtu ?? 0,
      up: (link.flags ?? []).includes('UP'),
      addresses: addrsOf.get(link.ifname) ?? [],
      wg: dump.exitCode === 0 ? parseWgDump(dump.stdout) : null,
    });
  }
  return out;
}

// ---------------------------------------------------------------- plan

const sameList = (a: readonly string[], b: readonly string[]): boolean => a.length === b.length && a.every((x, i) => x === b[i]);

/** Does the observed peer already match what we want? A null desired endpoint accepts any (roamed) endpoint. */
export function peerMatches(want: DesiredPeer, have: ObservedPeer): boolean {
  return (
    sameList(want.allowedIps, have.allowedIps) &&
    (want.endpoint === null || want.endpoint === have.endpoint) &&
    want.keepalive === have.keepalive
  );
}

/** diff(desired, observed) for peers of one interface. */
export function planPeers(iface: string, desired: readonly DesiredPeer[], observed: readonly ObservedPeer[]): WireguardChange[] {
  const changes: WireguardChange[] = [];
  const have = new Map(observed.map((p) => [p.publicKey, p]));
  const want = new Set(desired.map((p) => p.publicKey));
  for (const p of desired) {
    const old = have.get(p.publicKey) ?? null;
    if (old && peerMatches(p, old)) continue;
    changes.push({ kind: 'peer-set', op: old ? 'update' : 'add', iface, old, new: p });
  }
  for (const p of observed) if (!want.has(p.publicKey)) changes.push({ kind: 'peer-del', op: 'delete', iface, old: p, new: null });
  return changes;
}

/**
 * diff(desired, observed) for all tenant interfaces. An interface that exists
 * but that `wg` cannot configure (a stale tun without its wireguard-go) is
 * recreated; anything else is changed in place.
 */
export function planWireguard(desired: readonly DesiredInterface[], observed: readonly ObservedInterface[]): WireguardChange[] {
  const changes: WireguardChange[] = [];
  const have = new Map(observed.map((o) => [o.iface, o]));
  for (const d of desired) {
    let o = have.get(d.iface) ?? null;
    if (!o || !o.wg) {
      changes.push({ kind: 'link-add', op: 'add', iface: d.iface, old: o, new: { iface: d.iface } });
      o = null;
    }
    const wg = o?.wg ?? null;
    if (!wg || wg.publicKey !== d.publicKey || wg.listenPort !== d.listenPort) {
      changes.push({
        kind: 'wg-config',
        op: 'update',
        iface: d.iface,
        old: wg ? { publicKey: wg.publicKey, listenPort: wg.listenPort } : null,
        new: { publicKey: d.publicKey, listenPort: d.listenPort, privateKeyFile: d.privateKeyFile },
      });
    }
    if (!o || o.mtu !== d.mtu) changes.push({ kind: 'mtu', op: 'update', iface: d.iface, old: o?.mtu ?? null, new: d.mtu });
    const addresses = o?.addresses ?? [];
    if (!addresses.includes(d.address)) changes.push({ kind: 'addr-add', op: 'add', iface: d.iface, old: null, new: d.address });
    if (!o?.up) changes.push({ kind: 'link-up', op: 'update', iface: d.iface, old: false, new: true });
    changes.push(...planPeers(d.iface, d.peers, wg?.peers ?? []));
    for (const a of addresses) if (a !== d.address) changes.push({ kind: 'addr-del', op: 'delete', iface: d.iface, old: a, new: null });
  }
  const wanted = new Set(desired.map((d) => d.iface));
  for (const o of observed) if (!wanted.has(o.iface)) changes.push({ kind: 'link-del', op: 'delete', iface: o.iface, old: o, new: null });
  return changes;
}

// ---------------------------------------------------------------- apply

export type WireguardMode = 'auto' | 'kernel' | 'userspace';

/**
 * Creates and removes tenant interfaces: kernel WireGuard when the module is
 * there, else a supervised wireguard-go (`auto` remembers which one worked).
 */
export class WireguardLinks {
  private kernelWorks: boolean | undefined;

  constructor(
    private readonly runner: Runner,
    private readonly log: ChangeLogger,
    private readonly supervisor: WireguardGoSupervisor,
    private readonly mode: WireguardMode = 'auto',
  ) {
    if (mode === 'userspace') this.kernelWorks = false;
  }

  async create(iface: string): Promise<void> {
    if (this.kernelWorks !== false) {
      const argv = ['ip', 'link', 'add', iface, 'type', 'wireguard'];
      this.log(`[#] ${argv.join(' ')}`);
      const res = await this.runner.run(argv, { allowFailure: this.mode === 'auto' });
      if (res.exitCode === 0) {
        this.kernelWorks = true;
        return;
      }
      this.kernelWorks = false;
    }
    this.log(`[#] wireguard-go ${iface}`);
    await this.supervisor.stop(iface); // a handle left from a link that vanished
    const child = this.supervisor.start(iface);
    await this.waitForUserspace(iface, child.exited);
  }

  /** wireguard-go creates the tun, then its control socket; `wg set` needs both. */
  private async waitForUserspace(iface: string, exited: Promise<number | string>, timeoutMs = 5000): Promise<void> {
    let gone: number | string | undefined;
    void exited.then((code) => (gone = code));
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (gone !== undefined) throw new Error(`wireguard-go ${iface} exited (${gone}) before it was ready`);
      const res = await this.runner.run(['wg', 'show', iface, 'listen-port'], { allowFailure: true });
      if (res.exitCode === 0) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`wireguard-go ${iface}: not ready after ${timeoutMs} ms`);
  }

  async remove(iface: string): Promise<void> {
    if (this.supervisor.has(iface)) {
      this.log(`[#] kill ${this.supervisor.pid(iface)} (wireguard-go ${iface})`);
      await this.supervisor.stop(iface);
    }
    // wireguard-go removes its tun when it exits; one we did not start exits when its link is deleted.
    const argv = ['ip', 'link', 'del', 'dev', iface];
    const still = await this.runner.run(['ip', 'link', 'show', 'dev', iface], { allowFailure: true });
    if (still.exitCode !== 0) return;
    this.log(`[#] ${argv.join(' ')}`);
    await this.runner.run(argv);
  }
}

export function peerCommand(change: Extract<WireguardChange, { kind: 'peer-set' }>): string[] {
  const { new: want, old } = change;
  const argv = ['wg', 'set', change.iface, 'peer', want.publicKey];
  // Only what differs, so the log says what changed and nothing else is disturbed.
  if (want.endpoint !== null && want.endpoint !== old?.endpoint) argv.push('endpoint', want.endpoint);
  if (!old || want.keepalive !== old.keepalive) argv.push('persistent-keepalive', want.keepalive === null ? 'off' : String(want.keepalive));
  if (!old || !sameList(want.allowedIps, old.allowedIps)) argv.push('allowed-ips', want.allowedIps.join(','));
  return argv;
}

/**
 * Handshakes to start at once after a plan was applied (pure): towards every
 * peer of an interface whose own key changed (rotation: `wg set private-key`
 * expired its sessions), and towards every peer just added (a new member, or
 * a peer's rotated key). Without this, a side whose first initiation went out
 * before the other side knew the new key waits for WireGuard's 5 s retry.
 * In a rotation the rotating side's kick is the one that fails (its peers do
 * not know the key yet: key-rotation.ts); what it buys is WireGuard's 5 s
 * hold on that side's own initiations, so that the peers' kicks, once they
 * have the key, are the only initiations in flight and cannot cross one.
 *
 * The kick turns persistent keepalive off → on (which sends a keepalive, and
 * with no session a handshake initiation) and back to the desired value, in
 * one `wg set` per interface; only peers with an endpoint (desired or
 * roamed-to) can be dialled.
 */
export function handshakeKicks(changes: readonly WireguardChange[], desired: readonly DesiredInterface[], observed: readonly ObservedInterface[]): string[][] {
  const rotated = new Set<string>();
  const added = new Set<string>();
  for (const c of changes) {
    if (c.kind === 'wg-config' && c.old !== null && c.old.publicKey !== null && c.old.publicKey !== c.new.publicKey) rotated.add(c.iface);
    if (c.kind === 'peer-set' && c.op === 'add') added.add(`${c.iface} ${c.new.publicKey}`);
  }
  const out: string[][] = [];
  for (const d of desired) {
    const seen = new Map((observed.find((o) => o.iface === d.iface)?.wg?.peers ?? []).map((p) => [p.publicKey, p]));
    const peers = d.peers.filter(
      (p) => (rotated.has(d.iface) || added.has(`${d.iface} ${p.publicKey}`)) && (p.endpoint !== null || seen.get(p.publicKey)?.endpoint),
    );
    if (peers.length === 0) continue;
    const argv = ['wg', 'set', d.iface];
    for (const p of peers) {
      // Off → on sends the keepalive; the second clause leaves the desired value.
      const [first, second] = p.keepalive === null ? ['1', 'off'] : ['off', String(p.keepalive)];
      argv.push('peer', p.publicKey, 'persistent-keepalive', first, 'peer', p.publicKey, 'persistent-keepalive', second);
    }
    out.push(argv);
  }
  return out;
}

export function wireguardCommand(change: WireguardChange): string[] | null {
  switch (change.kind) {
    case 'link-add':
    case 'link-del':
      return null; // WireguardLinks
    case 'wg-config': {
      // Only what changed: wireguard-go closes and reopens its UDP socket whenever it is given a
      // listen port, even the same one, and drops whatever arrives meanwhile; during a key rotation
      // that was the peer's handshake initiation (then a 5 s wait for WireGuard's retry).
      const argv = ['wg', 'set', change.iface];
      if (change.old?.listenPort !== change.new.listenPort) argv.push('listen-port', String(change.new.listenPort));
      if (change.old?.publicKey !== change.new.publicKey) argv.push('private-key', change.new.privateKeyFile);
      return argv;
    }
    case 'mtu':
      return ['ip', 'link', 'set', 'dev', change.iface, 'mtu', String(change.new)];
    case 'addr-add':
      return ['ip', '-4', 'address', 'add', change.new, 'dev', change.iface];
    case 'addr-del':
      return ['ip', '-4', 'address', 'del', change.old, 'dev', change.iface];
    case 'link-up':
      return ['ip', 'link', 'set', 'dev', change.iface, 'up'];
    case 'peer-set':
      return peerCommand(change);
    case 'peer-del':
      return ['wg', 'set', change.iface, 'peer', change.old.publicKey, 'remove'];
  }
}

export async function applyWireguardChange(change: WireguardChange, runner: Runner, log: ChangeLogger, links: WireguardLinks): Promise<void> {
  if (change.kind === 'link-add') {
    if (change.old) await links.remove(change.iface);
    await links.create(change.iface);
    return;
  }
  if (change.kind === 'link-del') {
    await links.remove(change.iface);
    return;
  }
  const argv = wireguardCommand(change);
  if (!argv) return;
  log(`[#] ${argv.join(' ')}`);
  await runner.run(argv);
}
