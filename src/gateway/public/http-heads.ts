/**
 * The heads the gateway writes: the request head towards the entry point
 * (the client's end-to-end fields plus the gateway's forwarded ones and its
 * own framing) and the response head back to the client.
 */
import type { ConnInfo } from './core.js';
import { bytesAre, FIELD_STRIDE, FieldAt, type RequestHead, type ResponseHead } from './http1.js';

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

/** The last Host seen and its Forwarded form: consecutive requests nearly always repeat it. */
let lastHost = '';
let lastHostValue = '';
function forwardedHost(host: string): string {
  if (host !== lastHost) {
    lastHostValue = forwardedValue(host);
    lastHost = host;
  }
  return lastHostValue;
}

/** Lower-cased hop-by-hop names by length, for the byte comparisons of responseHeadBytes. */
const HOP_BY_HOP_BY_LENGTH = new Map<number, string[]>();
for (const name of HOP_BY_HOP) HOP_BY_HOP_BY_LENGTH.set(name.length, [...(HOP_BY_HOP_BY_LENGTH.get(name.length) ?? []), name]);

function isHopByHop(raw: Buffer, name: number, colon: number): boolean {
  const candidates = HOP_BY_HOP_BY_LENGTH.get(colon - name);
  if (candidates === undefined) return false;
  for (const h of candidates) if (bytesAre(raw, name, colon, h)) return true;
  return false;
}


const TRANSFER_CHUNKED = Buffer.from('Transfer-Encoding: chunked\r\n', 'latin1');
const END_CLOSE = Buffer.from('Connection: close\r\n\r\n', 'latin1');
const END_KEEP_ALIVE = Buffer.from('Connection: keep-alive\r\n\r\n', 'latin1');
const END = Buffer.from('\r\n', 'latin1');
const STATUS_PREFIX = Buffer.from('HTTP/1.1 ', 'latin1');
const SEPARATOR = Buffer.from(': ', 'latin1');

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
  const named = res.connection.size > 0 ? res.connection : null;
  const dropLength = framing === 'chunked' || framing === 'close';
  // Pass 1: which fields go out, and the size.
  const kept = KEPT;
  kept.length = 0;
  let lengthKept = false;
  let size = STATUS_PREFIX.length + 3 + 1 + Math.max(0, statusLineEnd - 13) + 2;
  for (let i = 0; i < fields.length; i += FIELD_STRIDE) {
    const name = fields[i + FieldAt.Name]!;
    const colon = fields[i + FieldAt.Colon]!;
    if (isHopByHop(raw, name, colon)) continue;
    if (named !== null && isNamed(named, raw, name, colon)) continue;
    if (bytesAre(raw, name, colon, 'content-length')) {
      // Repeats were checked equal; one is enough. A re-framed body has none.
      if (lengthKept || dropLength) continue;
      lengthKept = true;
    }
    kept.push(i);
    size += fieldSize(fields, i);
  }
  const tail = close ? END_CLOSE : keepAlive10 ? END_KEEP_ALIVE : END;
  size += (framing === 'chunked' ? TRANSFER_CHUNKED.length : 0) + tail.length + (body?.length ?? 0);
  // Pass 2: copy.
  const out = Buffer.allocUnsafe(size);
  let at = copyBytes(STATUS_PREFIX, 0, STATUS_PREFIX.length, out, 0);
  at = copyBytes(raw, 9, 12, out, at);
  out[at++] = 32;
  if (statusLineEnd > 13) at = copyBytes(raw, 13, statusLineEnd, out, at);
  out[at++] = 13;
  out[at++] = 10;
  at = copyFields(raw, fields, kept, out, at);
  if (framing === 'chunked') at = copyBytes(TRANSFER_CHUNKED, 0, TRANSFER_CHUNKED.length, out, at);
  at = copyBytes(tail, 0, tail.length, out, at);
  if (body !== null) body.copy(out, at);
  return out;
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


/** A kept field's size on the way out: `name: value` CRLF. */
/** Indices of the fields a head keeps: one array reused (the writers are synchronous and never nested). */
const KEPT: number[] = [];

/**
 * Copy src[from, to) into dst at `at`; returns the offset after it. Heads are
 * copied in short pieces, for which a loop beats Buffer#copy (a subarray and
 * a TypedArray#set per call).
 */
function copyBytes(src: Buffer, from: number, to: number, dst: Buffer, at: number): number {
  if (to - from > 64) return at + src.copy(dst, at, from, to);
  for (let i = from; i < to; i++) dst[at++] = src[i]!;
  return at;
}

function fieldSize(fields: readonly number[], i: number): number {
  return fields[i + FieldAt.Colon]! - fields[i + FieldAt.Name]! + 2 + fields[i + FieldAt.ValueEnd]! - fields[i + FieldAt.ValueStart]! + 2;
}

/** Copy the `kept` fields of `raw` into `out` at `at` as `name: value` CRLF (one copy when the line already is); returns the new offset. */
function copyFields(raw: Buffer, fields: readonly number[], kept: readonly number[], out: Buffer, at: number): number {
  for (const i of kept) {
    const name = fields[i + FieldAt.Name]!;
    const colon = fields[i + FieldAt.Colon]!;
    const vs = fields[i + FieldAt.ValueStart]!;
    const ve = fields[i + FieldAt.ValueEnd]!;
    if (vs === colon + 2 && raw[colon + 1] === 32 && ve === fields[i + FieldAt.LineEnd]) {
      at = copyBytes(raw, name, ve + 2, out, at); // the line as received, with its CRLF
    } else {
      at = copyBytes(raw, name, colon, out, at);
      at = copyBytes(SEPARATOR, 0, SEPARATOR.length, out, at);
      at = copyBytes(raw, vs, ve, out, at);
      out[at++] = 13;
      out[at++] = 10;
    }
  }
  return at;
}

/** The field name raw[name, colon) is one of the (lower-case) options a Connection field named. */
function isNamed(options: ReadonlySet<string>, raw: Buffer, name: number, colon: number): boolean {
  for (const o of options) {
    if (o.length !== colon - name) continue;
    let i = 0;
    while (i < o.length) {
      const b = raw[name + i]!;
      if ((b >= 65 && b <= 90 ? b + 32 : b) !== o.charCodeAt(i)) break;
      i++;
    }
    if (i === o.length) return true;
  }
  return false;
}

const REQUEST_VERSION = Buffer.from(' HTTP/1.1\r\n', 'latin1');

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
  const { raw, fields } = req;
  const named = req.connection.size > 0 ? req.connection : null;
  const kept = KEPT;
  kept.length = 0;
  let xff = '';
  let fwd = '';
  let size = req.targetEnd + REQUEST_VERSION.length;
  for (let i = 0; i < fields.length; i += FIELD_STRIDE) {
    const name = fields[i + FieldAt.Name]!;
    const colon = fields[i + FieldAt.Colon]!;
    if (isHopByHop(raw, name, colon) || isOwn(raw, name, colon)) continue;
    if (named !== null && !isFraming(raw, name, colon) && isNamed(named, raw, name, colon)) continue;
    if (bytesAre(raw, name, colon, 'x-forwarded-for')) {
      xff += `${raw.toString('latin1', fields[i + FieldAt.ValueStart]!, fields[i + FieldAt.ValueEnd]!)}, `;
      continue;
    }
    if (bytesAre(raw, name, colon, 'forwarded')) {
      fwd += `${raw.toString('latin1', fields[i + FieldAt.ValueStart]!, fields[i + FieldAt.ValueEnd]!)}, `;
      continue;
    }
    kept.push(i);
    size += fieldSize(fields, i);
  }
  const suffix = forwardSuffix(req, info, upgrade, xff, fwd);
  size += suffix.length + (body?.length ?? 0);
  const out = Buffer.allocUnsafe(size);
  let at = copyBytes(raw, 0, req.targetEnd, out, 0);
  at = copyBytes(REQUEST_VERSION, 0, REQUEST_VERSION.length, out, at);
  at = copyFields(raw, fields, kept, out, at);
  at = copyBytes(suffix, 0, suffix.length, out, at);
  if (body !== null) body.copy(out, at);
  return out;
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
  out += `Forwarded: ${fwd}for=${forwardedNode(client)};${host ? `host=${forwardedHost(host)};` : ''}proto=${info.proto}\r\n`;
  if (req.framing === 'chunked') out += 'Transfer-Encoding: chunked\r\n';
  if (upgrade && req.upgrade !== null) out += `Connection: Upgrade\r\nUpgrade: ${req.upgrade}\r\n\r\n`;
  else out += 'Connection: keep-alive\r\n\r\n';
  const bytes = Buffer.from(out, 'latin1');
  if (plain) suffixCache.set(info, { host, bytes });
  return bytes;
}

function isOwn(raw: Buffer, name: number, colon: number): boolean {
  switch (colon - name) {
    case 6:
      return bytesAre(raw, name, colon, 'expect');
    case 16:
      return bytesAre(raw, name, colon, 'x-forwarded-host');
    case 17:
      return bytesAre(raw, name, colon, 'x-forwarded-proto');
    default:
      return false;
  }
}

/** Routing and body framing depend on these: never dropped because a client names them in Connection. */
function isFraming(raw: Buffer, name: number, colon: number): boolean {
  return bytesAre(raw, name, colon, 'host') || bytesAre(raw, name, colon, 'content-length');
}
