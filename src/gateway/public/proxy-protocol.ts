/**
 * PROXY protocol version 2 (haproxy's doc/proxy-protocol.txt §2.2): the binary
 * header the gateway writes first on an upstream stream so the entry point
 * learns the public client's address on raw TCP and TLS passthrough, where no
 * HTTP header can carry it.
 *
 *   12 bytes  signature \r\n\r\n\0\r\nQUIT\n
 *    1 byte   0x2_ = version 2; low nibble 0x0 LOCAL, 0x1 PROXY
 *    1 byte   address family << 4 | transport: 0x11 TCP/IPv4, 0x21 TCP/IPv6, 0x00 UNSPEC
 *    2 bytes  length of what follows (network order)
 *    IPv4: src addr(4) dst addr(4) src port(2) dst port(2)   = 12
 *    IPv6: src addr(16) dst addr(16) src port(2) dst port(2) = 36
 *    then TLVs: type(1) length(2) value
 */
import { isIPv4, isIPv6 } from 'node:net';

export const PROXY_V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
export const PP2_CMD_LOCAL = 0x20;
export const PP2_CMD_PROXY = 0x21;
export const PP2_FAM_UNSPEC = 0x00;
export const PP2_FAM_TCP4 = 0x11;
export const PP2_FAM_TCP6 = 0x21;
/** TLV: the host name the client asked for (SNI or Host), UTF-8. */
export const PP2_TYPE_AUTHORITY = 0x02;

export interface ProxyAddresses {
  /** The public client. */
  source: { address: string; port: number };
  /** The gateway address and port the client connected to. */
  destination: { address: string; port: number };
}

export interface ProxyTlv {
  type: number;
  value: Buffer;
}

/** Strip the IPv4-mapped prefix a dual-stack socket reports (`::ffff:192.0.2.1`). */
export function unmapIPv4(address: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return m ? m[1]! : address;
}

/**
 * Encode a PROXY v2 header. Both addresses IPv4 → TCP4; otherwise both are
 * written as IPv6 (an IPv4 one as ::ffff:a.b.c.d); anything unparseable →
 * a LOCAL header with no addresses (the receiver then uses the connection's own).
 */
export function encodeProxyV2(addrs: ProxyAddresses | null, tlvs: ProxyTlv[] = []): Buffer {
  const tlvBytes = Buffer.concat(
    tlvs.map((t) => {
      if (t.type < 0 || t.type > 255 || t.value.length > 0xffff) throw new RangeError('bad TLV');
      const h = Buffer.alloc(3);
      h[0] = t.type;
      h.writeUInt16BE(t.value.length, 1);
      return Buffer.concat([h, t.value]);
    }),
  );
  const src = addrs ? unmapIPv4(addrs.source.address) : '';
  const dst = addrs ? unmapIPv4(addrs.destination.address) : '';
  const portsOk = addrs !== null && validPort(addrs.source.port) && validPort(addrs.destination.port);
  let command = PP2_CMD_PROXY;
  let family: number;
  let body: Buffer;
  if (portsOk && isIPv4(src) && isIPv4(dst)) {
    family = PP2_FAM_TCP4;
    body = Buffer.alloc(12);
    ipv4Bytes(src).copy(body, 0);
    ipv4Bytes(dst).copy(body, 4);
    body.writeUInt16BE(addrs!.source.port, 8);
    body.writeUInt16BE(addrs!.destination.port, 10);
  } else if (portsOk && (isIPv4(src) || isIPv6(src)) && (isIPv4(dst) || isIPv6(dst))) {
    family = PP2_FAM_TCP6;
    body = Buffer.alloc(36);
    ipv6Bytes(src).copy(body, 0);
    ipv6Bytes(dst).copy(body, 16);
    body.writeUInt16BE(addrs!.source.port, 32);
    body.writeUInt16BE(addrs!.destination.port, 34);
  } else {
    command = PP2_CMD_LOCAL;
    family = PP2_FAM_UNSPEC;
    body = Buffer.alloc(0);
  }
  const len = body.length + tlvBytes.length;
  if (len > 0xffff) throw new RangeError('PROXY v2 header too long');
  const head = Buffer.alloc(16);
  PROXY_V2_SIGNATURE.copy(head, 0);
  head[12] = command;
  head[13] = family;
  head.writeUInt16BE(len, 14);
  return Buffer.concat([head, body, tlvBytes]);
}

export type ProxyV2Parse =
  | { status: 'incomplete' }
  | { status: 'invalid'; reason: string }
  | {
      status: 'ok';
      command: 'LOCAL' | 'PROXY';
      family: 'UNSPEC' | 'TCP4' | 'TCP6' | 'OTHER';
      addresses: ProxyAddresses | null;
      tlvs: ProxyTlv[];
      /** Header length: the payload starts at this offset. */
      length: number;
    };

/** Parse a PROXY v2 header at the start of `buf` (used by tests and by entry points that want it). */
export function decodeProxyV2(buf: Uint8Array): ProxyV2Parse {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  const sigLen = Math.min(b.length, 12);
  if (!b.subarray(0, sigLen).equals(PROXY_V2_SIGNATURE.subarray(0, sigLen))) return { status: 'invalid', reason: 'no PROXY v2 signature' };
  if (b.length < 16) return { status: 'incomplete' };
  const verCmd = b[12]!;
  if (verCmd >> 4 !== 2) return { status: 'invalid', reason: 'not version 2' };
  const cmd = verCmd & 0x0f;
  if (cmd > 1) return { status: 'invalid', reason: 'unknown command' };
  const famByte = b[13]!;
  const len = b.readUInt16BE(14);
  if (b.length < 16 + len) return { status: 'incomplete' };
  const body = b.subarray(16, 16 + len);
  let addrLen = 0;
  let family: 'UNSPEC' | 'TCP4' | 'TCP6' | 'OTHER' = 'OTHER';
  let addresses: ProxyAddresses | null = null;
  if (famByte === PP2_FAM_TCP4) {
    family = 'TCP4';
    addrLen = 12;
    if (len < 12) return { status: 'invalid', reason: 'IPv4 address block too short' };
    addresses = {
      source: { address: [...body.subarray(0, 4)].join('.'), port: body.readUInt16BE(8) },
      destination: { address: [...body.subarray(4, 8)].join('.'), port: body.readUInt16BE(10) },
    };
  } else if (famByte === PP2_FAM_TCP6) {
    family = 'TCP6';
    addrLen = 36;
    if (len < 36) return { status: 'invalid', reason: 'IPv6 address block too short' };
    addresses = {
      source: { address: ipv6String(body.subarray(0, 16)), port: body.readUInt16BE(32) },
      destination: { address: ipv6String(body.subarray(16, 32)), port: body.readUInt16BE(34) },
    };
  } else if (famByte === PP2_FAM_UNSPEC) {
    family = 'UNSPEC';
  }
  const tlvs: ProxyTlv[] = [];
  if (family !== 'OTHER') {
    let p = addrLen;
    while (p < len) {
      if (p + 3 > len) return { status: 'invalid', reason: 'truncated TLV' };
      const type = body[p]!;
      const tl = body.readUInt16BE(p + 1);
      if (p + 3 + tl > len) return { status: 'invalid', reason: 'TLV runs past the header' };
      tlvs.push({ type, value: Buffer.from(body.subarray(p + 3, p + 3 + tl)) });
      p += 3 + tl;
    }
  }
  return {
    status: 'ok',
    command: cmd === 1 ? 'PROXY' : 'LOCAL',
    family,
    addresses: cmd === 1 ? addresses : null,
    tlvs,
    length: 16 + len,
  };
}

function validPort(p: number): boolean {
  return Number.isInteger(p) && p >= 0 && p <= 65535;
}

function ipv4Bytes(a: string): Buffer {
  return Buffer.from(a.split('.').map(Number));
}

function ipv6Bytes(a: string): Buffer {
  if (isIPv4(a)) return Buffer.concat([Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]), ipv4Bytes(a)]);
  let addr = a.replace(/%.*$/, ''); // zone id
  // An embedded dotted quad at the end (::ffff:1.2.3.4, 64:ff9b::1.2.3.4).
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(addr);
  if (dotted) {
    const q = ipv4Bytes(dotted[1]!);
    addr = `${addr.slice(0, dotted.index)}${((q[0]! << 8) | q[1]!).toString(16)}:${((q[2]! << 8) | q[3]!).toString(16)}`;
  }
  const [head, tail] = addr.includes('::') ? (addr.split('::') as [string, string]) : [addr, null];
  const h = head ? head.split(':') : [];
  const t = tail === null ? [] : tail ? tail.split(':') : [];
  const groups = tail === null ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

function ipv6String(b: Uint8Array): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((b[i]! << 8) | b[i + 1]!).toString(16));
  // Compress the longest run of zero groups (RFC 5952), at least two long.
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen && j - i >= 2) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}
