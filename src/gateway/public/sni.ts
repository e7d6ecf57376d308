/**
 * A small, fully bounds-checked parser for the TLS ClientHello: enough to read
 * the server name (SNI, RFC 6066 §3) and the ALPN list (RFC 7301) from the
 * bytes a client sends first, without terminating TLS. It never throws: every
 * input is either `incomplete` (a prefix of something that may still be a
 * valid ClientHello — read more), `ok`, or `invalid` with a reason.
 *
 * Accepts a handshake message split across several TLS records (RFC 8446
 * §5.1 allows it), refuses anything larger than `maxBytes` in total, SSLv2
 * hellos, duplicate extensions, and more than one host_name.
 */

export type ClientHelloResult =
  | { status: 'incomplete' }
  | {
      status: 'ok';
      /** Lower-cased host name, or null when the client sent no SNI. */
      serverName: string | null;
      /** ALPN protocols offered, in the client's order (empty when none). */
      alpn: string[];
      /** Bytes of input the records holding the ClientHello occupy. */
      length: number;
    }
  | { status: 'invalid'; reason: string };

export const TLS_RECORD_HANDSHAKE = 0x16;
export const TLS_HANDSHAKE_CLIENT_HELLO = 0x01;
const EXT_SERVER_NAME = 0x0000;
const EXT_ALPN = 0x0010;
/** RFC 8446 §5.1: a TLSPlaintext fragment is at most 2^14 bytes. */
const MAX_RECORD = 16384;
/** Default cap on the bytes the gateway buffers before deciding. */
export const DEFAULT_MAX_CLIENT_HELLO = 16384;

class Truncated extends Error {}
class Invalid extends Error {}

/** Reads big-endian fields from a fixed window; every read checks bounds. */
class Reader {
  private pos: number;
  constructor(
    private readonly buf: Uint8Array,
    start: number,
    private readonly end: number,
    /** Running out inside this window means malformed, not "need more". */
    private readonly strict: boolean,
  ) {
    this.pos = start;
  }

  get remaining(): number {
    return this.end - this.pos;
  }

  private need(n: number): void {
    if (n > this.end - this.pos) throw this.strict ? new Invalid('field runs past its container') : new Truncated();
  }

  u8(): number {
    this.need(1);
    return this.buf[this.pos++]!;
  }

  u16(): number {
    this.need(2);
    const v = (this.buf[this.pos]! << 8) | this.buf[this.pos + 1]!;
    this.pos += 2;
    return v;
  }

  u24(): number {
    this.need(3);
    const v = (this.buf[this.pos]! << 16) | (this.buf[this.pos + 1]! << 8) | this.buf[this.pos + 2]!;
    this.pos += 3;
    return v;
  }

  skip(n: number): void {
    this.need(n);
    this.pos += n;
  }

  /** A sub-reader over the next n bytes (strict: its contents are complete). */
  sub(n: number): Reader {
    this.need(n);
    const r = new Reader(this.buf, this.pos, this.pos + n, true);
    this.pos += n;
    return r;
  }

  bytes(n: number): Uint8Array {
    this.need(n);
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
}

/**
 * Parse the first bytes a TLS client sent. `maxBytes` bounds the total record
 * bytes the ClientHello may occupy; larger claims are refused as soon as the
 * headers announce them (never wait for them to arrive).
 */
export function parseClientHello(input: Uint8Array, maxBytes = DEFAULT_MAX_CLIENT_HELLO): ClientHelloResult {
  try {
    const { message, consumed } = reassemble(input, maxBytes);
    const hello = parseHelloBody(message);
    return { status: 'ok', ...hello, length: consumed };
  } catch (err) {
    if (err instanceof Truncated) {
      if (input.length >= maxBytes) return { status: 'invalid', reason: `ClientHello larger than ${maxBytes} bytes` };
      return { status: 'incomplete' };
    }
    if (err instanceof Invalid) return { status: 'invalid', reason: err.message };
    /* c8 ignore next */
    return { status: 'invalid', reason: `parser error: ${String(err)}` };
  }
}

/** Join the handshake fragments of consecutive handshake records into one message. */
function reassemble(input: Uint8Array, maxBytes: number): { message: Uint8Array; consumed: number } {
  let pos = 0;
  const parts: Uint8Array[] = [];
  let have = 0;
  let total = -1; // full handshake message length (header included), once known
  while (total < 0 || have < total) {
    // Record header: type(1) version(2) length(2).
    const r = new Reader(input, pos, input.length, false);
    const type = r.u8();
    if (type !== TLS_RECORD_HANDSHAKE) {
      if (pos === 0 && type & 0x80) throw new Invalid('SSLv2-style ClientHello is not supported');
      throw new Invalid(pos === 0 ? 'not a TLS handshake record' : 'ClientHello interleaved with another record type');
    }
    const major = r.u8();
    r.u8(); // minor: any 3.x
    if (major !== 3) throw new Invalid('unsupported record version');
    const len = r.u16();
    if (len === 0) throw new Invalid('empty handshake record');
    if (len > MAX_RECORD) throw new Invalid('record longer than 2^14 bytes');
    if (pos + 5 + len > maxBytes) throw new Invalid(`ClientHello larger than ${maxBytes} bytes`);
    const frag = r.bytes(Math.min(len, r.remaining));
    parts.push(frag);
    have += frag.length;
    if (total < 0 && have >= 4) {
      const head = concat(parts, 4);
      if (head[0] !== TLS_HANDSHAKE_CLIENT_HELLO) throw new Invalid('first handshake message is not a ClientHello');
      const bodyLen = (head[1]! << 16) | (head[2]! << 8) | head[3]!;
      total = 4 + bodyLen;
      if (bodyLen < 38) throw new Invalid('ClientHello too short');
      if (total > maxBytes) throw new Invalid(`ClientHello larger than ${maxBytes} bytes`);
    }
    if (frag.length < len) throw new Truncated();
    pos += 5 + len;
  }
  // The message must end exactly at a record boundary (anything after it in
  // the same record would be a second handshake message: not from a client).
  if (have !== total) throw new Invalid('data after the ClientHello in its record');
  return { message: concat(parts, total).subarray(4), consumed: pos };
}

function concat(parts: Uint8Array[], n: number): Uint8Array {
  if (parts.length === 1) return parts[0]!.subarray(0, n);
  const out = new Uint8Array(n);
  let off = 0;
  for (const p of parts) {
    if (off >= n) break;
    const take = Math.min(p.length, n - off);
    out.set(p.subarray(0, take), off);
    off += take;
  }
  return out;
}

function parseHelloBody(body: Uint8Array): { serverName: string | null; alpn: string[] } {
  const r = new Reader(body, 0, body.length, true);
  const major = r.u8();
  r.u8();
  if (major !== 3) throw new Invalid('unsupported ClientHello version');
  r.skip(32); // random
  const sessionIdLen = r.u8();
  if (sessionIdLen > 32) throw new Invalid('session id longer than 32 bytes');
  r.skip(sessionIdLen);
  const suitesLen = r.u16();
  if (suitesLen < 2 || suitesLen % 2 !== 0) throw new Invalid('bad cipher suites length');
  r.skip(suitesLen);
  const compLen = r.u8();
  if (compLen < 1) throw new Invalid('no compression methods');
  r.skip(compLen);
  const result = { serverName: null as string | null, alpn: [] as string[] };
  if (r.remaining === 0) return result; // no extensions at all (old clients)
  const extLen = r.u16();
  if (extLen !== r.remaining) throw new Invalid('extensions length does not match the ClientHello');
  const exts = r.sub(extLen);
  const seen = new Set<number>();
  while (exts.remaining > 0) {
    const type = exts.u16();
    const len = exts.u16();
    const data = exts.sub(len);
    if (seen.has(type)) throw new Invalid(`duplicate extension ${type}`);
    seen.add(type);
    if (type === EXT_SERVER_NAME) result.serverName = parseServerName(data, len);
    else if (type === EXT_ALPN) result.alpn = parseAlpn(data);
  }
  return result;
}

function parseServerName(r: Reader, extLen: number): string | null {
  if (extLen === 0) return null; // an empty extension (sent by servers, tolerated here)
  const listLen = r.u16();
  if (listLen !== r.remaining || listLen === 0) throw new Invalid('bad server_name list length');
  let name: string | null = null;
  while (r.remaining > 0) {
    const nameType = r.u8();
    const len = r.u16();
    const bytes = r.bytes(len);
    if (nameType !== 0) continue; // unknown name types are skipped (RFC 6066)
    if (name !== null) throw new Invalid('more than one host_name');
    name = hostName(bytes);
  }
  return name;
}

function hostName(bytes: Uint8Array): string {
  if (bytes.length === 0 || bytes.length > 255) throw new Invalid('bad host_name length');
  let s = '';
  for (const b of bytes) {
    // Letters, digits, '-', '.', '_' only: no NUL, no spaces, no UTF-8 (IDNs travel as A-labels).
    const ok =
      (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || b === 0x2d || b === 0x2e || b === 0x5f;
    if (!ok) throw new Invalid('host_name has characters outside [A-Za-z0-9._-]');
    s += String.fromCharCode(b);
  }
  if (s.startsWith('.') || s.includes('..')) throw new Invalid('malformed host_name');
  return s.toLowerCase().replace(/\.$/, '');
}

function parseAlpn(r: Reader): string[] {
  const listLen = r.u16();
  if (listLen !== r.remaining || listLen < 2) throw new Invalid('bad ALPN list length');
  const out: string[] = [];
  while (r.remaining > 0) {
    const len = r.u8();
    if (len === 0) throw new Invalid('empty ALPN protocol name');
    out.push(Buffer.from(r.bytes(len)).toString('latin1'));
  }
  return out;
}

/**
 * A fatal TLS alert record (RFC 8446 §6): what the gateway answers to a
 * ClientHello it will not serve. 112 = unrecognized_name.
 */
export function tlsAlert(description: number = ALERT_UNRECOGNIZED_NAME): Buffer {
  return Buffer.from([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, description]);
}
export const ALERT_UNRECOGNIZED_NAME = 112;
export const ALERT_HANDSHAKE_FAILURE = 40;
export const ALERT_INTERNAL_ERROR = 80;
