/**
 * HTTP/1.x message heads and chunked bodies for the gateway's forwarding
 * core, parsed strictly (RFC 9112). Pure: strings and Buffers in, plain
 * objects out, an HttpParseError on anything malformed.
 *
 * Why not Node's http server and client: relaying through them cost the
 * gateway ~80–120 µs of CPU per request (IncomingMessage, ServerResponse, a
 * ClientRequest each), 4–6× nginx; the forwarding core needs only the heads
 * and the body framing. Why strict: a proxy that reads a message's length
 * differently from the app behind it lets a client smuggle a request. So
 * anything two parsers could read differently is refused rather than
 * repaired: Transfer-Encoding together with Content-Length, a second
 * Content-Length or Host, a Transfer-Encoding other than `chunked`, obs-fold,
 * whitespace before a colon, bare CR or LF, control characters, chunk sizes
 * that are not plain hex. Bodies are re-framed on the way out (the gateway
 * writes its own chunk lines, never the client's extensions or trailers).
 */

/** A request or response that must not be relayed; the message says why (for logs and tests, never sent to a client). */
export class HttpParseError extends Error {}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// Control characters are exactly what these two look for.
/* eslint-disable no-control-regex */
/** Field values: HTAB, SP, VCHAR and obs-text only. */
const BAD_VALUE = /[\x00-\x08\x0a-\x1f\x7f]/;
/** request-target: no whitespace, no controls. */
const BAD_TARGET = /[\x00-\x20\x7f]/;
/* eslint-enable no-control-regex */
const DIGITS = /^[0-9]{1,15}$/;
const HEX = /^[0-9A-Fa-f]{1,12}$/;

export const CRLF = Buffer.from('\r\n', 'latin1');
export const CRLFCRLF = Buffer.from('\r\n\r\n', 'latin1');
export const LAST_CHUNK = Buffer.from('0\r\n\r\n', 'latin1');

/** How a message's body is delimited. */
export type Framing = 'none' | 'length' | 'chunked' | 'close';

interface CommonHead {
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  minor: 0 | 1;
  /** Header fields as a flat [name, value, …] list, order and case kept, values without surrounding whitespace. */
  headers: string[];
  /** Lower-cased names listed in Connection headers. */
  connection: ReadonlySet<string>;
  framing: Framing;
  /** Body length when framing is `length`. */
  contentLength: number;
}

export interface RequestHead extends CommonHead {
  method: string;
  target: string;
  /** The Host field as sent, or undefined. */
  host: string | undefined;
  framing: 'none' | 'length' | 'chunked';
  /** The client wants the connection kept after this exchange. */
  keepAlive: boolean;
  expectContinue: boolean;
  /** The protocol asked for when the request is an upgrade (Connection: upgrade and Upgrade), else null. */
  upgrade: string | null;
}

export interface ResponseHead extends CommonHead {
  status: number;
  reason: string;
  /** The upstream will take another request on this connection after this response. */
  keepAlive: boolean;
}

function trimOws(v: string): string {
  let a = 0;
  let b = v.length;
  while (a < b && (v.charCodeAt(a) === 32 || v.charCodeAt(a) === 9)) a++;
  while (b > a && (v.charCodeAt(b - 1) === 32 || v.charCodeAt(b - 1) === 9)) b--;
  return a === 0 && b === v.length ? v : v.slice(a, b);
}

function version(v: string): 0 | 1 {
  if (v === 'HTTP/1.1') return 1;
  if (v === 'HTTP/1.0') return 0;
  throw new HttpParseError(`unsupported version ${JSON.stringify(v.slice(0, 16))}`);
}

/** Fields after the start line: name/value pairs, checked, plus what framing needs. */
/** Most messages name nothing in Connection: they share this one (allocations are most of a head's cost). */
const NO_TOKENS: ReadonlySet<string> = new Set();
const NONE: readonly string[] = [];

interface Fields {
  headers: string[];
  connection: ReadonlySet<string>;
  host: string | undefined;
  hosts: number;
  contentLength: readonly string[];
  transferEncoding: readonly string[];
  expect: string | undefined;
  upgrade: string | undefined;
}

function parseFields(text: string, from: number): Fields {
  const f: Fields = { headers: [], connection: NO_TOKENS, host: undefined, hosts: 0, contentLength: NONE, transferEncoding: NONE, expect: undefined, upgrade: undefined };
  let pos = from;
  while (pos < text.length) {
    let end = text.indexOf('\r\n', pos);
    if (end === -1) end = text.length;
    const colon = text.indexOf(':', pos);
    if (colon === -1 || colon > end) throw new HttpParseError('header line without a colon');
    const name = text.slice(pos, colon);
    // Also refuses obs-fold (a line starting with whitespace) and whitespace before the colon.
    if (!TOKEN.test(name)) throw new HttpParseError(`bad header name ${JSON.stringify(name.slice(0, 40))}`);
    const raw = text.slice(colon + 1, end);
    if (BAD_VALUE.test(raw)) throw new HttpParseError(`bad characters in header ${name}`);
    const value = trimOws(raw);
    f.headers.push(name, value);
    switch (name.length) {
      // Dispatch on length first: most fields are none of these.
      case 4:
        if (name.toLowerCase() === 'host') {
          f.host = value;
          f.hosts++;
        }
        break;
      case 6:
        if (name.toLowerCase() === 'expect') f.expect = value;
        break;
      case 7:
        if (name.toLowerCase() === 'upgrade') f.upgrade = value;
        break;
      case 10:
        if (name.toLowerCase() === 'connection') {
          const tokens = f.connection === NO_TOKENS ? new Set<string>() : (f.connection as Set<string>);
          for (const t of value.split(',')) {
            const tok = trimOws(t).toLowerCase();
            if (tok) tokens.add(tok);
          }
          f.connection = tokens;
        }
        break;
      case 14:
        if (name.toLowerCase() === 'content-length') f.contentLength = [...f.contentLength, value];
        break;
      case 17:
        if (name.toLowerCase() === 'transfer-encoding') f.transferEncoding = [...f.transferEncoding, value];
        break;
    }
    pos = end + 2;
  }
  return f;
}

function contentLength(values: readonly string[], allowRepeats: boolean): number {
  const first = values[0]!;
  if (!DIGITS.test(first)) throw new HttpParseError('bad Content-Length');
  if (values.length > 1 && (!allowRepeats || values.some((v) => v !== first))) throw new HttpParseError('more than one Content-Length');
  return Number(first);
}

/** `chunked` is the only transfer coding the gateway relays; anything else is refused (request) or read to the close (response). */
function isChunked(values: readonly string[]): boolean {
  return values.length === 1 && values[0]!.toLowerCase() === 'chunked';
}

/**
 * A request head: `text` is the latin1 text before the blank line (the
 * CRLFCRLF itself excluded; leading empty lines already skipped).
 */
export function parseRequestHead(text: string): RequestHead {
  let lineEnd = text.indexOf('\r\n');
  if (lineEnd === -1) lineEnd = text.length;
  const line = text.slice(0, lineEnd);
  const sp1 = line.indexOf(' ');
  const sp2 = line.indexOf(' ', sp1 + 1);
  if (sp1 <= 0 || sp2 === -1 || line.indexOf(' ', sp2 + 1) !== -1) throw new HttpParseError('bad request line');
  const method = line.slice(0, sp1);
  const target = line.slice(sp1 + 1, sp2);
  if (!TOKEN.test(method)) throw new HttpParseError('bad method');
  if (target.length === 0 || BAD_TARGET.test(target)) throw new HttpParseError('bad request target');
  const minor = version(line.slice(sp2 + 1));
  const f = parseFields(text, lineEnd + 2);
  if (f.hosts > 1) throw new HttpParseError('more than one Host');
  if (minor === 1 && f.hosts === 0) throw new HttpParseError('HTTP/1.1 request without Host');
  let framing: RequestHead['framing'] = 'none';
  let length = 0;
  if (f.transferEncoding.length > 0) {
    if (minor === 0) throw new HttpParseError('Transfer-Encoding in an HTTP/1.0 request');
    if (f.contentLength.length > 0) throw new HttpParseError('both Transfer-Encoding and Content-Length');
    if (!isChunked(f.transferEncoding)) throw new HttpParseError('Transfer-Encoding other than chunked');
    framing = 'chunked';
  } else if (f.contentLength.length > 0) {
    length = contentLength(f.contentLength, false);
    framing = length > 0 ? 'length' : 'none';
  }
  const keepAlive = minor === 1 ? !f.connection.has('close') : f.connection.has('keep-alive') && !f.connection.has('close');
  return {
    method,
    target,
    minor,
    headers: f.headers,
    connection: f.connection,
    host: f.host,
    framing,
    contentLength: length,
    keepAlive,
    expectContinue: minor === 1 && f.expect !== undefined && f.expect.toLowerCase() === '100-continue',
    upgrade: f.connection.has('upgrade') && f.upgrade ? f.upgrade : null,
  };
}

/** A response head to a request with `method` (HEAD responses have no body whatever they declare). */
export function parseResponseHead(text: string, method: string): ResponseHead {
  let lineEnd = text.indexOf('\r\n');
  if (lineEnd === -1) lineEnd = text.length;
  const line = text.slice(0, lineEnd);
  const sp1 = line.indexOf(' ');
  if (sp1 === -1) throw new HttpParseError('bad status line');
  const minor = version(line.slice(0, sp1));
  const code = line.slice(sp1 + 1, sp1 + 4);
  if (!/^[1-5][0-9][0-9]$/.test(code) || (line.length > sp1 + 4 && line.charCodeAt(sp1 + 4) !== 32)) throw new HttpParseError('bad status code');
  const reason = line.slice(sp1 + 5);
  if (BAD_VALUE.test(reason)) throw new HttpParseError('bad reason phrase');
  const status = Number(code);
  const f = parseFields(text, lineEnd + 2);
  let framing: Framing;
  let length = 0;
  if (method === 'HEAD' || status < 200 || status === 204 || status === 304) framing = 'none';
  else if (f.transferEncoding.length > 0) {
    // Another coding would reach the client still encoded, its framing lost (the field is hop-by-hop).
    if (!isChunked(f.transferEncoding)) throw new HttpParseError('response Transfer-Encoding other than chunked');
    framing = 'chunked';
  }
  else if (f.contentLength.length > 0) {
    length = contentLength(f.contentLength, true);
    framing = 'length';
  } else framing = 'close';
  const keepAlive = framing !== 'close' && (minor === 1 ? !f.connection.has('close') : f.connection.has('keep-alive') && !f.connection.has('close'));
  return { status, reason, minor, headers: f.headers, connection: f.connection, framing, contentLength: length, keepAlive };
}

/** Limits of the chunked decoder (a chunk line or the trailer section longer than this is refused). */
const MAX_CHUNK_LINE = 4096;
const MAX_TRAILERS = 16 * 1024;

/**
 * Incremental decoder of a chunked body. `push` hands the data bytes to
 * `onData` (slices of the input, no copies) and returns how many input bytes
 * belonged to the body: when `done` turns true the rest of the input is the
 * next message. Chunk extensions are checked and dropped; trailer fields are
 * read and dropped.
 */
export class ChunkedDecoder {
  done = false;
  private state: 'size' | 'data' | 'data-crlf' | 'trailer' = 'size';
  private line = '';
  private left = 0;
  private trailerBytes = 0;

  push(buf: Buffer, onData: (data: Buffer) => void): number {
    let i = 0;
    while (i < buf.length && !this.done) {
      if (this.state === 'data') {
        const n = Math.min(this.left, buf.length - i);
        onData(buf.subarray(i, i + n));
        i += n;
        this.left -= n;
        if (this.left === 0) this.state = 'data-crlf';
        continue;
      }
      // Line states: collect up to CRLF.
      const lf = buf.indexOf(10, i);
      const end = lf === -1 ? buf.length : lf + 1;
      this.line += buf.toString('latin1', i, end);
      i = end;
      const limit = this.state === 'trailer' ? MAX_TRAILERS - this.trailerBytes : MAX_CHUNK_LINE;
      if (this.line.length > limit) throw new HttpParseError('chunk line or trailers too long');
      if (lf === -1) break;
      if (this.line.length < 2 || this.line.charCodeAt(this.line.length - 2) !== 13) throw new HttpParseError('bare LF in chunked body');
      const text = this.line.slice(0, -2);
      this.line = '';
      if (this.state === 'data-crlf') {
        if (text !== '') throw new HttpParseError('chunk data longer than its size');
        this.state = 'size';
      } else if (this.state === 'size') {
        const semi = text.indexOf(';');
        const size = semi === -1 ? text : text.slice(0, semi);
        if (!HEX.test(size)) throw new HttpParseError('bad chunk size');
        if (semi !== -1 && BAD_VALUE.test(text.slice(semi))) throw new HttpParseError('bad chunk extension');
        this.left = parseInt(size, 16);
        this.state = this.left === 0 ? 'trailer' : 'data';
      } else {
        // Trailer section: field lines until an empty one.
        if (text === '') this.done = true;
        else {
          this.trailerBytes += text.length + 2;
          if (BAD_VALUE.test(text) || !TOKEN.test(text.slice(0, Math.max(0, text.indexOf(':'))))) throw new HttpParseError('bad trailer field');
        }
      }
    }
    return i;
  }
}

/** The line that opens a chunk of `size` bytes on the way out. */
export function chunkLine(size: number): string {
  return `${size.toString(16)}\r\n`;
}
