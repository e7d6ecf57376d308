/**
 * Address management, as pure functions over what is already taken. The
 * store calls them inside a write transaction, so two requests can never be
 * handed the same block or address.
 *
 * Layout of a tenant subnet (default /20) cut into slices (default /26):
 *   slice 0            infrastructure: gateways' /32 mesh addresses
 *   slice 1..n         one per node serving the tenant; the node's own mesh
 *                      address is the slice's first usable, workloads the rest
 * No slice's first (network) or last (broadcast) address is ever handed out.
 */
import { ExhaustedError, ValidationError } from '../shared/errors.js';
import { type Cidr, cidrSize, cidrsOverlap, formatCidr, intToIp, ipToInt, parseCidr } from '../shared/ipv4.js';

export interface IpamConfig {
  pool: string;
  tenantPrefix: number;
  slicePrefix: number;
  /** How long a released workload address rests before it may be reused. */
  quarantineMs: number;
}

export const DEFAULT_IPAM: IpamConfig = {
  pool: '10.240.0.0/12',
  tenantPrefix: 20,
  slicePrefix: 26,
  quarantineMs: 5 * 60_000,
};

export function validateIpamConfig(c: IpamConfig): Cidr {
  const pool = parseCidr(c.pool, 'pool');
  if (!(c.tenantPrefix >= pool.prefix && c.tenantPrefix <= 28)) {
    throw new ValidationError(`tenant prefix /${c.tenantPrefix} must be between the pool's /${pool.prefix} and /28`, 'tenantPrefix');
  }
  if (!(c.slicePrefix > c.tenantPrefix && c.slicePrefix <= 30)) {
    throw new ValidationError(`slice prefix /${c.slicePrefix} must be longer than the tenant prefix and at most /30`, 'slicePrefix');
  }
  return pool;
}

/** The lowest aligned block of `prefix` in the pool that overlaps none of `taken`. */
export function allocateTenantSubnet(pool: Cidr, prefix: number, taken: readonly string[]): string {
  if (prefix < pool.prefix || prefix > 30) {
    throw new ValidationError(`prefixLength: /${prefix} does not fit in the pool ${formatCidr(pool)}`, 'prefixLength');
  }
  const used = taken.map((t) => parseCidr(t, 'subnet'));
  const size = cidrSize(prefix);
  const end = pool.base + cidrSize(pool.prefix);
  let candidate = pool.base;
  while (candidate + size <= end) {
    const hit = used.find((u) => cidrsOverlap({ base: candidate, prefix }, u));
    if (!hit) return formatCidr({ base: candidate, prefix });
    // Jump past the block we hit, to the next boundary aligned for our size.
    candidate = Math.ceil((hit.base + cidrSize(hit.prefix)) / size) * size;
  }
  throw new ExhaustedError(`address pool ${formatCidr(pool)} has no free /${prefix} left for a new tenant`);
}

/** The lowest free node slice (index >= 1) of a tenant subnet. */
export function allocateNodeSlice(subnet: string, slicePrefix: number, taken: readonly string[]): string {
  const s = parseCidr(subnet, 'subnet');
  const prefix = Math.max(slicePrefix, s.prefix + 1);
  const size = cidrSize(prefix);
  const used = new Set(taken.map((t) => parseCidr(t, 'slice').base));
  const count = cidrSize(s.prefix) / size;
  for (let i = 1; i < count; i++) {
    const base = s.base + i * size;
    if (!used.has(base)) return formatCidr({ base, prefix });
  }
  throw new ExhaustedError(`tenant subnet ${subnet} has no free /${prefix} slice left for another node`);
}

/** The infrastructure slice (index 0) where gateways get their /32s. */
export function infrastructureSlice(subnet: string, slicePrefix: number): Cidr {
  const s = parseCidr(subnet, 'subnet');
  return { base: s.base, prefix: Math.max(slicePrefix, s.prefix + 1) };
}

/** A gateway's mesh address: the lowest free usable address of the infrastructure slice. */
export function allocateGatewayAddress(subnet: string, slicePrefix: number, taken: readonly string[]): string {
  const slice = infrastructureSlice(subnet, slicePrefix);
  const used = new Set(taken.map(ipToInt));
  const last = slice.base + cidrSize(slice.prefix) - 1;
  for (let ip = slice.base + 1; ip < last; ip++) if (!used.has(ip)) return intToIp(ip);
  throw new ExhaustedError(`tenant subnet ${subnet} has no infrastructure address left for another gateway`);
}

/** A node's own mesh address in its slice. */
export function nodeAddress(slice: string): string {
  return intToIp(parseCidr(slice, 'slice').base + 1);
}

/**
 * A workload address in `slice`: never the network, broadcast or node
 * address, nor one `isTaken` (in use or quarantined). Next-fit: the search
 * starts after `after` (the previous allocation) and wraps, so a request
 * costs a point lookup or two rather than a scan of the slice, and a freed
 * address is the last to come round again.
 */
export function allocateWorkloadAddress(s: Cidr, isTaken: (ip: string) => boolean, node: string, after?: string): string {
  const first = s.base + 2;
  const last = s.base + cidrSize(s.prefix) - 2;
  const count = last - first + 1;
  const hint = after === undefined ? -1 : ipToInt(after);
  const start = hint >= first && hint <= last ? hint + 1 - first : 0;
  for (let i = 0; i < count; i++) {
    const ip = intToIp(first + ((start + i) % count));
    if (!isTaken(ip)) return ip;
  }
  throw new ExhaustedError(`node ${node}'s slice ${formatCidr(s)} has no free workload address (all ${count} are in use or quarantined after release)`);
}

/** The lowest WireGuard listen port at or above `base` that the host does not use yet. */
export function allocateListenPort(base: number, taken: readonly number[]): number {
  const used = new Set(taken);
  for (let p = base; p <= 65535; p++) if (!used.has(p)) return p;
  throw new ExhaustedError(`no free WireGuard listen port above ${base}`);
}
