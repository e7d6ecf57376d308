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
  publicKey: string | null;
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

export interface RenderSettings {
  mtu: number;
  statusIntervalSeconds: number;
  /** Keepalive towards peers with an endpoint when we ourselves are behind NAT. */
  keepaliveSeconds: number;
}

export const DEFAULT_RENDER_SETTINGS: RenderSettings = { mtu: 1420, statusIntervalSeconds: 30, keepaliveSeconds: 25 };
