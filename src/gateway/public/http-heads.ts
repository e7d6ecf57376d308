/**
 * The heads the gateway writes: the request head towards the entry point
 * (the client's end-to-end fields plus the gateway's forwarded ones and its
 * own framing) and the response head back to the client.
 */
import type { ConnInfo } from './core.js';
import type { RequestHead, ResponseHead } from './http1.js';

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

/** Headers the gateway sets itself; a client's copies are dropped (XFF and Forwarded are appended to instead). */
const OWN = new Set(['x-forwarded-proto', 'x-forwarded-host', 'expect']);

/** Never dropped because a client names them in Connection: routing and body framing depend on them. */
const FRAMING = new Set(['host', 'content-length']);

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

/** A head (latin1 text) and the bytes that follow it, as one buffer: one write, one allocation. */
export function headWith(head: string, body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(head.length + body.length);
  out.write(head, 0, 'latin1');
  body.copy(out, head.length);
  return out;
}

/**
 * The request head sent to the entry point: the client's end-to-end fields
 * (order and case kept; hop-by-hop ones and those it names in Connection
 * dropped), then X-Forwarded-For and Forwarded appended to (a client's own
 * entries stay first; the gateway's is last, the only one an entry point
 * should trust), X-Forwarded-Proto/Host set, the gateway's framing and
 * Connection.
 */
export function forwardHead(req: RequestHead, info: ConnInfo, upgrade: boolean): string {
  const raw = req.headers;
  const tokens = req.connection;
  let out = `${req.method} ${req.target} HTTP/1.1\r\n`;
  let xff = '';
  let fwd = '';
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const value = raw[i + 1]!;
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower) || OWN.has(lower) || (tokens.size > 0 && tokens.has(lower) && !FRAMING.has(lower))) continue;
    if (lower === 'x-forwarded-for') {
      xff += `${value}, `;
      continue;
    }
    if (lower === 'forwarded') {
      fwd += `${value}, `;
      continue;
    }
    out += `${name}: ${value}\r\n`;
  }
  const host = req.host ?? info.sni ?? '';
  const client = info.client.address;
  out += `X-Forwarded-For: ${xff}${client}\r\nX-Forwarded-Proto: ${info.proto}\r\n`;
  if (host) out += `X-Forwarded-Host: ${host}\r\n`;
  out += `Forwarded: ${fwd}for=${forwardedNode(client)};${host ? `host=${forwardedHost(host)};` : ''}proto=${info.proto}\r\n`;
  if (req.framing === 'chunked') out += 'Transfer-Encoding: chunked\r\n';
  if (upgrade && req.upgrade !== null) out += `Connection: Upgrade\r\nUpgrade: ${req.upgrade}\r\n\r\n`;
  else out += 'Connection: keep-alive\r\n\r\n';
  return out;
}

/**
 * The response head relayed to the client: the upstream's status and
 * end-to-end fields, hop-by-hop ones dropped, the gateway's own framing and
 * Connection (`framing` is how the body goes to the client).
 */
export function responseHead(res: ResponseHead, framing: 'none' | 'length' | 'chunked' | 'close', close: boolean, keepAlive10: boolean): string {
  const raw = res.headers;
  const tokens = res.connection;
  let out = `HTTP/1.1 ${res.status} ${res.reason}\r\n`;
  let lengthWritten = false;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower) || (tokens.size > 0 && tokens.has(lower))) continue;
    if (lower === 'content-length') {
      // Repeats were checked equal; one is enough. A re-framed body has none.
      if (lengthWritten || framing === 'chunked' || framing === 'close') continue;
      lengthWritten = true;
    }
    out += `${name}: ${raw[i + 1]!}\r\n`;
  }
  if (framing === 'chunked') out += 'Transfer-Encoding: chunked\r\n';
  if (close) out += 'Connection: close\r\n\r\n';
  else out += keepAlive10 ? 'Connection: keep-alive\r\n\r\n' : '\r\n';
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

