/**
 * CNI spec 1.0.0 wire shapes (https://github.com/containernetworking/cni/blob/spec-v1.0.0/SPEC.md)
 * as the netwall plugin reads and writes them.
 */

export const CNI_VERSION = '1.0.0';
export const SUPPORTED_VERSIONS = ['0.4.0', '1.0.0'] as const;
export type SupportedVersion = (typeof SUPPORTED_VERSIONS)[number];
export const PLUGIN_TYPE = 'netwall';

/** Error codes: 1–99 reserved by the spec, 100+ ours. */
export const CniCode = {
  IncompatibleVersion: 1,
  UnsupportedField: 2,
  UnknownContainer: 3,
  InvalidEnv: 4,
  IoFailure: 5,
  DecodeFailure: 6,
  InvalidConfig: 7,
  TryAgainLater: 11,
  /** netwall: unexpected internal failure. */
  Internal: 100,
  /** netwall: the agent/coordinator refused to place the workload (unknown tenant, pool exhausted, …). */
  AllocationFailed: 101,
  /** netwall: creating or configuring the veth failed. */
  InterfaceFailed: 102,
  /** netwall: CHECK found the attachment not as it should be. */
  CheckFailed: 103,
  /** netwall: the workload name is attached to another container on this node. */
  Conflict: 104,
} as const;

export class CniError extends Error {
  constructor(
    readonly code: number,
    readonly msg: string,
    readonly details = '',
  ) {
    super(msg);
  }
}

/** The error object printed on stdout (with a non-zero exit). */
export interface CniErrorOutput {
  cniVersion: string;
  code: number;
  msg: string;
  details?: string;
}

/** The netwall plugin's network configuration (one plugin of a conflist, as the runtime passes it on stdin). */
export interface NetwallNetConf {
  cniVersion: SupportedVersion;
  name: string;
  type: typeof PLUGIN_TYPE;
  tenant: string;
  /** Default /run/netwall/agent.sock. */
  agentSocket?: string;
  mtu?: number;
  /** Static labels for every workload on this network (`args.labels` or the CNI convention `args.cni.labels`). */
  labels: Record<string, string>;
  prevResult?: CniResult;
}

export interface CniInterface {
  name: string;
  mac: string;
  sandbox?: string;
}

export interface CniIpConfig {
  address: string;
  gateway?: string;
  interface?: number;
  /** 0.4.0 only. */
  version?: '4' | '6';
}

export interface CniRoute {
  dst: string;
  gw?: string;
}

export interface CniResult {
  cniVersion: string;
  interfaces?: CniInterface[];
  ips?: CniIpConfig[];
  routes?: CniRoute[];
  dns?: { nameservers?: string[]; domain?: string; search?: string[]; options?: string[] };
}

export interface CniVersionOutput {
  cniVersion: string;
  supportedVersions: string[];
}
