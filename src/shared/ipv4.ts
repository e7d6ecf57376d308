/**
 * IPv4 arithmetic on unsigned 32-bit numbers. Validation of text goes through
 * ip-cidr; allocation math is plain integers so it stays fast at scale.
 */
import IPCIDR from 'ip-cidr';
import { ValidationError } from './errors.js';

export interface Cidr {
  /** Network address as an unsigned 32-bit integer. */
  base: number;
  prefix: number;
}

/** Dotted quad → number, for text already validated (hot in rendering: no allocations). */
export function ipToInt(ip: string): number {
  let n = 0;
  let octet = 0;
  for (let i = 0; i < ip.length; i++) {
    const c = ip.charCodeAt(i);
    if (c === 46) {
      n = n * 256 + octet;
      octet = 0;
    } else {
      octet = octet * 10 + (c - 48);
    }
  }
  return (n * 256 + octet) >>> 0;
}

export function intToIp(n: number): string {
  return `${(n >>> 24) & 255}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

export const cidrSize = (prefix: number): number => 2 ** (32 - prefix);

export function formatCidr(c: Cidr): string {
  return `${intToIp(c.base)}/${c.prefix}`;
}

const IPV4_RE = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

export function isIpv4(text: string): boolean {
  return IPV4_RE.test(text) && IPCIDR.isValidAddress(text);
}

/**
 * Parse an IPv4 CIDR strictly: valid address, prefix 0-32, no host bits set.
 * `field` names the input in the error message.
 */
export function parseCidr(text: string, field: string): Cidr {
  const m = /^([0-9.]+)\/(\d{1,2})$/.exec(text);
  if (!m || !isIpv4(m[1]!) || Number(m[2]) > 32 || !IPCIDR.isValidCIDR(text)) {
    throw new ValidationError(`${field}: "${text}" is not an IPv4 CIDR like 10.0.0.0/8`, field);
  }
  const prefix = Number(m[2]);
  const base = ipToInt(m[1]!);
  const network = prefix === 0 ? 0 : (base & (~0 << (32 - prefix))) >>> 0;
  if (network !== base) {
    throw new ValidationError(`${field}: "${text}" has host bits set; did you mean ${intToIp(network)}/${prefix}?`, field);
  }
  return { base, prefix };
}

export function cidrContains(c: Cidr, ip: number): boolean {
  return ip >= c.base && ip < c.base + cidrSize(c.prefix);
}

export function cidrsOverlap(a: Cidr, b: Cidr): boolean {
  const aEnd = a.base + cidrSize(a.prefix);
  const bEnd = b.base + cidrSize(b.prefix);
  return a.base < bEnd && b.base < aEnd;
}

/** Accepts `ip` or `ip:port`; returns the parts or throws naming `field`. */
export function parseEndpoint(text: string, field: string): { host: string; port: number | null } {
  const m = /^([0-9.]+)(?::(\d{1,5}))?$/.exec(text);
  const port = m?.[2] === undefined ? null : Number(m[2]);
  if (!m || !isIpv4(m[1]!) || (port !== null && (port < 1 || port > 65535))) {
    throw new ValidationError(`${field}: "${text}" is not an IPv4 address or address:port`, field);
  }
  return { host: m[1]!, port };
}
