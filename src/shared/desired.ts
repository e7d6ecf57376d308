/**
 * The desired-state document: everything one node or gateway needs, rendered by
 * the coordinator as a pure function of its database, signed, and reconciled by
 * the host. This file is the contract between the programs.
 */
import type { Labels } from './names.js';

export const DESIRED_SCHEMA = 1;

export type HostKind = 'node' | 'gateway';
export type Protocol = 'tcp' | 'udp' | 'icmp';

/** An inclusive port range; a single port has from === to. */
export interface PortRange {
  from: number;
  to: number;
}

export interface DesiredState {
  schema: typeof DESIRED_SCHEMA;
  kind: HostKind;
  host: string;
  /** Monotonic per host; a change bumps only the hosts it affects. */
  version: number;
  settings: HostSettings;
  /** One entry (and one WireGuard interface) per tenant this host serves. */
  tenants: TenantState[];
  /** Gateways only: what they serve to the public. */
  exposures: GatewayExposure[];
  /**
   * Nodes only: every tenant a container may join here (one CNI network
   * each), including tenants this node does not serve yet — its first
   * container is what makes it a member.
   */
  networks: string[];
}

export interface HostSettings {
  mtu: number;
  /** Seconds between status reports the host sends. */
  statusIntervalSeconds: number;
  /**
   * Set when this host is behind NAT (it has no endpoint): keep a NAT mapping
   * open towards every peer that has an endpoint, every this many seconds.
   */
  keepaliveSeconds: number | null;
}

export interface TenantState {
  tenant: string;
  /** WireGuard interface name, deterministic, at most 15 characters. */
  iface: string;
  /** The tenant's whole subnet (CIDR). */
  subnet: string;
  /** This host's slice of it; a gateway's slice is its /32. */
  slice: string;
  /** This host's own mesh address (inside slice). */
  address: string;
  listenPort: number;
  /**
   * The WireGuard public key this host is to use; null until it registers one. During a key
   * rotation, its next key — before its peers are given it (see `peerKey`).
   */
  publicKey: string | null;
  /**
   * The key the tenant's other members have for this host: `publicKey`, except during a rotation,
   * until this host confirms that it switched (by registering the key again). Absent from
   * coordinators before 23 Nov 2026: then `publicKey`.
   */
  peerKey?: string | null;
  /**
   * Every member of the tenant with a registered key that this host peers
   * with — including this host itself, which it skips (`host` equals its own
   * name). One list is shared by every member's document, so rendering N
   * hosts costs O(N), not O(N²).
   */
  peers: PeerState[];
  /** Nodes: the workloads placed on this host. Gateways: empty. */
  workloads: LocalWorkload[];
  firewall: TenantFirewall;
  /** Nodes: router clients to run and mesh entry points to admit. */
  entryPoints: EntryPoint[];
  egress: EgressState;
}

export interface PeerState {
  host: string;
  kind: HostKind;
  publicKey: string;
  /** `ip:port` of the peer on the underlay, or null when it is behind NAT (it dials us). */
  endpoint: string | null;
  /** The peer's mesh address, its slice, and (for the egress gateway) the egress destinations. */
  allowedIps: string[];
  meshAddress: string;
}

export interface LocalWorkload {
  name: string;
  address: string;
  labels: Labels;
}

/**
 * Compiled policy for one tenant, cut down to what this host enforces.
 * Address groups are shared by rules (one group per distinct selector), so the
 * host can load them as nftables sets and keep rules O(policies).
 */
export interface TenantFirewall {
  /** Group id → member addresses (/32), sorted. */
  groups: Record<string, string[]>;
  rules: AllowRule[];
}

export interface AllowRule {
  /** The policy (or `exposure:<name>` for a mesh entry point) this rule comes from. */
  origin: string;
  from: string;
  to: string;
  protocol: Protocol;
  /** Empty = every port (and always empty for icmp). */
  ports: PortRange[];
}

/** TCP port of the gateway's router server on its mesh address (router clients dial it). */
export const ROUTER_PORT = 7400;

export type ExposureMode = 'tunnel' | 'mesh';

/** On a node: an exposure that selects a workload placed here. */
export interface EntryPoint {
  exposure: string;
  workload: string;
  address: string;
  /** The app's port inside the workload. */
  port: number;
  mode: ExposureMode;
  /** Gateways that carry this exposure, with their mesh addresses and router-server port. */
  gateways: { host: string; meshAddress: string; routerPort: number }[];
  /**
   * Tunnel mode: the router-client public key the coordinator has for this
   * entry point (null until the node generates one and registers it), and the
   * credential it issued for that key.
   */
  routerKey: string | null;
  credential: RouterCredential | null;
}

/**
 * What a router client shows a gateway: a grant, signed by the coordinator,
 * binding the client's ed25519 public key to one exposure of one tenant. The
 * client proves it holds the private key by signing the gateway's challenge
 * (src/shared/router-protocol.ts); no shared secret ever travels.
 */
export interface RouterCredential {
  /** RouterGrant as exact JSON text (what the signature covers). */
  grant: string;
  signature: string;
}

export interface RouterGrant {
  v: 1;
  tenant: string;
  exposure: string;
  workload: string;
  node: string;
  /** The router client's ed25519 public key (base64). */
  publicKey: string;
  /** ISO times; gateways refuse a grant outside them. */
  issuedAt: string;
  expiresAt: string;
}

/**
 * Destinations egress never reaches, whatever a tenant's rules say: the
 * coordinator refuses rules overlapping them and the gateway drops them.
 * (Netwall's own hosts are refused by the coordinator by address too, and the
 * gateway drops the tenant's nodes' endpoints.)
 */
export const NEVER_EGRESS: readonly { cidr: string; what: string }[] = [
  { cidr: '0.0.0.0/8', what: '"this network"' },
  { cidr: '127.0.0.0/8', what: 'loopback' },
  { cidr: '169.254.0.0/16', what: 'link-local, cloud metadata' },
  { cidr: '224.0.0.0/4', what: 'multicast' },
  { cidr: '240.0.0.0/4', what: 'reserved and broadcast' },
];

export interface EgressState {
  /** The gateway this tenant's egress leaves through (first listed, by name), or null. */
  gateway: { host: string; meshAddress: string } | null;
  allow: EgressAllow[];
}

export interface EgressAllow {
  rule: string;
  cidr: string;
  protocol: Protocol;
  ports: PortRange[];
}

/** On a gateway: one exposure it serves. */
export interface GatewayExposure {
  tenant: string;
  name: string;
  mode: ExposureMode;
  /** `http` routes by Host, `tls` by SNI, `tcp` by public port. */
  protocol: 'http' | 'tls' | 'tcp';
  hostnames: string[];
  /** Public port for `tcp` exposures. */
  publicPort: number | null;
  /** `tls` only: passthrough keeps end-to-end TLS; terminate uses the gateway's certificate files. */
  tls: 'passthrough' | 'terminate' | null;
  proxyProtocol: boolean;
  /** Mesh mode: where to forward. Tunnel mode: the workloads whose router clients may attach. */
  targets: { workload: string; node: string; address: string; port: number }[];
  /** Tunnel mode: the router-client keys allowed to serve this exposure (also bound by their grants). */
  routerClients: { workload: string; node: string; publicKey: string }[];
}

/** The document of a host that serves nothing yet (its firewall before the first real document). */
export function emptyDocument(kind: HostKind, host: string): DesiredState {
  return {
    schema: DESIRED_SCHEMA,
    kind,
    host,
    version: 0,
    settings: { mtu: 1420, statusIntervalSeconds: 30, keepaliveSeconds: null },
    tenants: [],
    exposures: [],
    networks: [],
  };
}

/** What travels on the wire: the document as exact JSON text plus an ed25519 signature over it. */
export interface SignedDocument {
  document: string;
  signature: string;
}

/** All netwall WireGuard interfaces start with this; firewalls match `nw-*`. */
export const TENANT_IF_PREFIX = 'nw-';
/** All netwall container veths (host side) start with this; firewalls match `nwc*` (a gateway's too: a host may run both). */
export const CONTAINER_IF_PREFIX = 'nwc';

/** Deterministic WireGuard interface name for a tenant: `nw-` + up to 12 characters. */
export function tenantInterfaceName(tenant: string, tenantId: number): string {
  const name = `${TENANT_IF_PREFIX}${tenant}`;
  if (name.length <= 15) return name;
  return `${TENANT_IF_PREFIX}${tenant.slice(0, 6)}-${tenantId.toString(36)}`.slice(0, 15);
}
