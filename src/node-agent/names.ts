import { sha256hex } from '../shared/crypto.js';
import { CONTAINER_IF_PREFIX } from '../shared/desired.js';

/**
 * Host-side name of a workload's veth: `nwc` + 11 hex chars of a hash of
 * (tenant, workload) — deterministic, unique in practice, <= 15 characters,
 * and matched by the nftables wildcard `nwc*`.
 */
export function containerInterfaceName(tenant: string, workload: string): string {
  return `${CONTAINER_IF_PREFIX}${sha256hex(`${tenant}/${workload}`).slice(0, 11)}`;
}

/** The link-local next hop every container routes through (answered by the host veth). */
export const CONTAINER_GATEWAY = '169.254.1.1';
