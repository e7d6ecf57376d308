/**
 * The coordinator's in-memory view of one tenant, as the store loads it and
 * the renderer consumes it. Specs are exactly what the API validated.
 */
import type { ExposureMode, HostKind, Protocol, RouterCredential } from '../shared/desired.js';
import type { Labels } from '../shared/names.js';

export interface PortSpec {
  protocol: Protocol;
  /** Ports or "from-to" ranges; absent or empty = all ports. */
  ports?: (number | string)[];
}

export interface PolicySpec {
  from: Labels;
  to: Labels;
  allow: PortSpec[];
}

export interface ExposureSpec {
  protocol: 'http' | 'tls' | 'tcp';
  hostnames: string[];
  mode: ExposureMode;
  gateways: string[];
  target: { selector: Labels; port: number };
  tls: 'passthrough' | 'terminate' | null;
  publicPort: number | null;
  proxyProtocol: boolean;
}

export interface EgressSpec {
  gateways: string[];
  destinations: { cidr: string; protocol: Protocol; ports?: (number | string)[] }[];
}

export interface HostModel {
  name: string;
  kind: HostKind;
  /** Underlay IP peers dial; null when the host is behind NAT. */
  endpointHost: string | null;
}

export interface MemberModel {
  host: HostModel;
  slice: string;
  address: string;
  listenPort: number;
  /** The key the tenant's members have for this host. */
  publicKey: string | null;
  /** During a key rotation: the key this host switches to (in its own document only, until it confirms). */
  nextPublicKey: string | null;
}

export interface WorkloadModel {
  name: string;
  node: string;
  address: string;
  labels: Labels;
}

export interface TenantModel {
  id: number;
  name: string;
  subnet: string;
  members: MemberModel[];
  workloads: WorkloadModel[];
  policies: { name: string; spec: PolicySpec }[];
  exposures: { name: string; spec: ExposureSpec }[];
  egress: { name: string; spec: EgressSpec }[];
  /** Tunnel mode: registered router-client keys and their credentials. */
  routerKeys: RouterKeyModel[];
}

export interface RouterKeyModel {
  exposure: string;
  workload: string;
  publicKey: string;
  credential: RouterCredential;
}

/**
 * One address a netwall host answers on: its mesh address in a tenant, or its
 * underlay endpoint, management or public address. Containers never reach
 * any of them (reachability explanations use the list to say so).
 */
export interface HostAddressModel {
  host: string;
  kind: HostKind;
  address: string;
  what: 'mesh' | 'endpoint' | 'mgmt' | 'public';
  /** The tenant of a mesh address; null for underlay addresses. */
  tenant: string | null;
}

/** What a reachability explanation knows beyond the tenant itself. */
export interface MeshContext {
  /** The mesh address pool every tenant subnet comes from. */
  pool: string;
  /** Every tenant's subnet (this one included). */
  tenants: { name: string; subnet: string }[];
  hostAddresses: HostAddressModel[];
  /** Addresses the coordinator listens on, when known. */
  coordinatorAddresses: string[];
}

export interface RenderSettings {
  mtu: number;
  statusIntervalSeconds: number;
  /** Keepalive towards peers with an endpoint when we ourselves are behind NAT. */
  keepaliveSeconds: number;
}

export const DEFAULT_RENDER_SETTINGS: RenderSettings = { mtu: 1420, statusIntervalSeconds: 30, keepaliveSeconds: 25 };
