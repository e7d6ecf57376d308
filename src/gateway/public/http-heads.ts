/**
 * The heads the gateway writes: the request head towards the entry point
 * (the client's end-to-end fields plus the gateway's forwarded ones and its
 * own framing) and the response head back to the client, each built from the
 * pieces of the received head it keeps (./http1.ts scans them) and written
 * with the body that came with it as one buffer: one write per direction.
 */
import type { ConnInfo } from './core.js';
import { bytesAre, FIELD_STRIDE, FieldAt, lowerName, NAMES, type RequestHead, type ResponseHead } from './http1.js';

/** Hop-by-hop headers (RFC 9110 §7.6.1), proxy-only ones and framing the gateway writes itself: never forwarded either way. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/** Headers the gateway sets itself; a client's copies are dropped (X-Forwarded-For and Forwarded are appended to instead). */
const OWN = ['x-forwarded-proto', 'x-forwarded-host', 'expect'];

/** Never dropped because a client names them in Connection: routing and body framing depend on them. */
const FRAMING = ['host', 'content-length'];

/** The same lists as bytes, for the comparisons on the received heads. */
const HOP_BY_HOP_NAMES = [...HOP_BY_HOP].map(lowerName);
const OWN_NAMES = OWN.map(lowerName);
const FRAMING_NAMES = FRAMING.map(lowerName);
const X_FORWARDED_FOR = lowerName('x-forwarded-for');
const FORWARDED = lowerName('forwarded');

/** Headers of an upstream response that the 101 to an upgrade keeps (the handshake needs them). */
const UPGRADE_KEEP = new Set(['connection', 'upgrade']);

/** RFC 7239 node: IPv4 as is, IPv6 bracketed and quoted. */
function forwardedNode(address: string): string {
  return address.includes(':') ? `"[${address}]"` : address;
}

/** RFC 7230 token, else a quoted-string. */
function forwardedValue(v: string): string {
  return /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(v) ? v : `"${v.replace(/["\\]/g, '\\$&')}"`;
}

/** The field name raw[name, colon) is one of `names` (lower case), ignoring ASCII case. */
function nameIn(raw: Buffer, name: number, colon: number, names: readonly Uint8Array[]): boolean {
  for (const n of names) if (bytesAre(raw, name, colon, n)) return true;
  return false;
}

/**
 * The options of a Connection field that could name a field not already
 * dropped as hop-by-hop, as bytes (nearly always none: `keep-alive` is one
 * itself).
 */
function namedOptions(options: ReadonlySet<string>): Uint8Array[] | null {
  if (options.size === 0) return null;
  let out: Uint8Array[] | null = null;
  for (const o of options) if (!HOP_BY_HOP.has(o)) (out ??= []).push(lowerName(o));
  return out;
}

// ------------------------------------------------------------ writing heads

/**
 * A head is written as a list of pieces: ranges of the received bytes (merged
 * when adjacent, so the usual head is one or two copies) and constants.
 * SEG holds [from, to) pairs; from < 0 names the constant PIECES[-from - 1].
 * One array reused: the writers are synchronous and never nested.
 */
const SEG: number[] = [];
const PIECES = [
  ': ',
  '\r\n',
  'HTTP/1.1 ',
  ' ',
  ' HTTP/1.1\r\n',
  'Transfer-Encoding: chunked\r\n',
  'Connection: close\r\n\r\n',
  'Connection: keep-alive\r\n\r\n',
].map((t) => Buffer.from(t, 'latin1'));
const COLON_SP = -1;
const CRLF_PIECE = -2;
const STATUS_PREFIX = -3;
const SP = -4;
const REQUEST_VERSION = -5;
const TRANSFER_CHUNKED = -6;
const END_CLOSE = -7;
const END_KEEP_ALIVE = -8;

function take(from: number, to: number): void {
  const n = SEG.length;
  if (n > 0 && SEG[n - 1] === from && SEG[n - 2]! >= 0) SEG[n - 1] = to;
  else SEG.push(from, to);
}

function piece(k: number): void {
  SEG.push(k, 0);
}

/** One kept field: its line as received when it already reads `name: value` CRLF, else rebuilt so. */
function takeField(raw: Buffer, fields: readonly number[], i: number): void {
  const name = fields[i + FieldAt.Name]!;
  const colon = fields[i + FieldAt.Colon]!;
  const vs = fields[i + FieldAt.ValueStart]!;
  const ve = fields[i + FieldAt.ValueEnd]!;
  if (vs === colon + 2 && raw[colon + 1] === 32 && ve === fields[i + FieldAt.LineEnd]) take(name, ve + 2);
  else {
    take(name, colon);
    piece(COLON_SP);
    take(vs, ve);
    piece(CRLF_PIECE);
  }
}

/** The pieces in SEG, then `suffix` and `body`, as one new buffer. */
function writeHead(raw: Buffer, suffix: Buffer | null, body: Buffer | null): Buffer {
  let size = (suffix?.length ?? 0) + (body?.length ?? 0);
  for (let k = 0; k < SEG.length; k += 2) size += SEG[k]! >= 0 ? SEG[k + 1]! - SEG[k]! : PIECES[-SEG[k]! - 1]!.length;
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  for (let k = 0; k < SEG.length; k += 2) {
    const from = SEG[k]!;
    at = from >= 0 ? copyBytes(raw, from, SEG[k + 1]!, out, at) : copyBytes(PIECES[-from - 1]!, 0, PIECES[-from - 1]!.length, out, at);
  }
  if (suffix !== null) at = copyBytes(suffix, 0, suffix.length, out, at);
  if (body !== null) copyBytes(body, 0, body.length, out, at);
  return out;
}

/**
 * Copy src[from, to) into dst at `at`; returns the offset after it. Short
 * pieces are copied by a loop, which beats Buffer#copy's own cost (a
 * subarray and a TypedArray#set per call) below a few dozen bytes.
 */
function copyBytes(src: Buffer, from: number, to: number, dst: Buffer, at: number): number {
  if (to - from > 48) return at + src.copy(dst, at, from, to);
  for (let i = from; i < to; i++) dst[at++] = src[i]!;
  return at;
}

/**
 * The response head relayed to the client, and `body` after it, as one
 * buffer: the upstream's status and end-to-end fields copied as received
 * (hop-by-hop ones and those its Connection names dropped, OWS around a value
 * normalised to one space after the colon), then the gateway's own framing
 * and Connection (`framing` is how the body goes to the client).
 */
export function responseHeadBytes(
  res: ResponseHead,
  framing: 'none' | 'length' | 'chunked' | 'close',
  close: boolean,
  keepAlive10: boolean,
  body: Buffer | null = null,
): Buffer {
  const { raw, fields, statusLineEnd } = res;
  SEG.length = 0;
  // The status line as received when it already reads `HTTP/1.1 code reason`.
  if (res.minor === 1 && statusLineEnd >= 13) take(0, statusLineEnd + 2);
  else {
    piece(STATUS_PREFIX);
    take(9, 12);
    piece(SP);
    if (statusLineEnd > 13) take(13, statusLineEnd);
    piece(CRLF_PIECE);
  }
  const named = namedOptions(res.connection);
  const dropLength = framing === 'chunked' || framing === 'close';
  let lengthKept = false;
  for (let i = 0; i < fields.length; i += FIELD_STRIDE) {
    const name = fields[i + FieldAt.Name]!;
    const colon = fields[i + FieldAt.Colon]!;
    if (nameIn(raw, name, colon, HOP_BY_HOP_NAMES)) continue;
    if (named !== null && nameIn(raw, name, colon, named)) continue;
    if (bytesAre(raw, name, colon, NAMES.CONTENT_LENGTH)) {
      // Repeats were checked equal; one is enough. A re-framed body has none.
      if (lengthKept || dropLength) continue;
      lengthKept = true;
    }
    takeField(raw, fields, i);
  }
  if (framing === 'chunked') piece(TRANSFER_CHUNKED);
  piece(close ? END_CLOSE : keepAlive10 ? END_KEEP_ALIVE : CRLF_PIECE);
  return writeHead(raw, null, body);
}

/** The 101 relayed to an upgrade: the upstream's fields with Connection and Upgrade kept. */
export function switchingHead(res: ResponseHead): string {
  let out = `HTTP/1.1 ${res.status} ${res.reason}\r\n`;
  for (let i = 0; i < res.headers.length; i += 2) {
    const lower = res.headers[i]!.toLowerCase();
    if (HOP_BY_HOP.has(lower) && !UPGRADE_KEEP.has(lower)) continue;
    out += `${res.headers[i]!}: ${res.headers[i + 1]!}\r\n`;
  }
  return `${out}\r\n`;
}

/** The gateway's own fields after a request's end-to-end ones, for a connection's last Host (a client rarely changes it). */
const suffixCache = new WeakMap<ConnInfo, { host: string; bytes: Buffer }>();

/**
 * The request head sent to the entry point, and `body` after it, as one
 * buffer: the request line (version HTTP/1.1), the client's end-to-end fields
 * as received (hop-by-hop ones and those it names in Connection dropped), then
 * X-Forwarded-For and Forwarded appended to (a client's own entries stay
 * first; the gateway's is last, the only one an entry point should trust),
 * X-Forwarded-Proto/Host set, the gateway's framing and Connection.
 */
export function forwardHeadBytes(req: RequestHead, info: ConnInfo, upgrade: boolean, body: Buffer | null = null): Buffer {
  const { raw, fields, targetEnd } = req;
  SEG.length = 0;
  // The request line as received when it already reads `method target HTTP/1.1`.
  if (req.minor === 1) take(0, targetEnd + 11);
  else {
    take(0, targetEnd);
    piece(REQUEST_VERSION);
  }
  const named = namedOptions(req.connection);
  let xff = '';
  let fwd = '';
  for (let i = 0; i < fields.length; i += FIELD_STRIDE) {
    const name = fields[i + FieldAt.Name]!;
    const colon = fields[i + FieldAt.Colon]!;
    if (nameIn(raw, name, colon, HOP_BY_HOP_NAMES) || nameIn(raw, name, colon, OWN_NAMES)) continue;
    if (named !== null && !nameIn(raw, name, colon, FRAMING_NAMES) && nameIn(raw, name, colon, named)) continue;
    if (bytesAre(raw, name, colon, X_FORWARDED_FOR)) {
      xff += `${raw.toString('latin1', fields[i + FieldAt.ValueStart]!, fields[i + FieldAt.ValueEnd]!)}, `;
      continue;
    }
    if (bytesAre(raw, name, colon, FORWARDED)) {
      fwd += `${raw.toString('latin1', fields[i + FieldAt.ValueStart]!, fields[i + FieldAt.ValueEnd]!)}, `;
      continue;
    }
    takeField(raw, fields, i);
  }
  return writeHead(raw, forwardSuffix(req, info, upgrade, xff, fwd), body);
}

/** X-Forwarded-*, Forwarded, framing and Connection, as bytes (cached per connection for the plain case). */
function forwardSuffix(req: RequestHead, info: ConnInfo, upgrade: boolean, xff: string, fwd: string): Buffer {
  const host = req.host ?? info.sni ?? '';
  const plain = xff === '' && fwd === '' && req.framing !== 'chunked' && !(upgrade && req.upgrade !== null);
  if (plain) {
    const cached = suffixCache.get(info);
    if (cached !== undefined && cached.host === host) return cached.bytes;
  }
  const client = info.client.address;
  let out = `X-Forwarded-For: ${xff}${client}\r\nX-Forwarded-Proto: ${info.proto}\r\n`;
  if (host) out += `X-Forwarded-Host: ${host}\r\n`;
  out += `Forwarded: ${fwd}for=${forwardedNode(client)};${host ? `host=${forwardedValue(host)};` : ''}proto=${info.proto}\r\n`;
  if (req.framing === 'chunked') out += 'Transfer-Encoding: chunked\r\n';
  if (upgrade && req.upgrade !== null) out += `Connection: Upgrade\r\nUpgrade: ${req.upgrade}\r\n\r\n`;
  else out += 'Connection: keep-alive\r\n\r\n';
  const bytes = Buffer.from(out, 'latin1');
  if (plain) suffixCache.set(info, { host, bytes });
  return bytes;
}
