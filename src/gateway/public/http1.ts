/**
 * HTTP/1.x message heads and chunked bodies for the gateway's forwarding
 * core, parsed strictly (RFC 9112). Pure: Buffers in, heads out (field
 * offsets into the received bytes, strings only where routing needs one), an
 * HttpParseError on anything malformed.
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
/* eslint-enable no-control-regex */
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
  /** The head's bytes as received (the request line first; a CRLF follows every line, the last one's included). */
  raw: Buffer;
  /** `method SP request-target` is raw[0, targetEnd). */
  targetEnd: number;
  /** Each field's offsets in `raw`, FIELD_STRIDE numbers per field (see FieldAt). */
  fields: readonly number[];
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
  /** The head's bytes as received (the status line first; a CRLF follows every line, the last one's included). */
  raw: Buffer;
  /** Where the status line ends in `raw` (its CR). */
  statusLineEnd: number;
  /** Each field's offsets in `raw`, FIELD_STRIDE numbers per field (see FieldAt). */
  fields: readonly number[];
}

/**
 * Offsets of one field in a scanned head, relative to its first number in
 * `fields`: the name's first byte, the colon (the name ends there), the value
 * without the whitespace around it [ValueStart, ValueEnd), the line's CR.
 */
export const FieldAt = { Name: 0, Colon: 1, ValueStart: 2, ValueEnd: 3, LineEnd: 4 } as const;
export const FIELD_STRIDE = 5;

function trimOws(v: string): string {
  let a = 0;
  let b = v.length;
  while (a < b && (v.charCodeAt(a) === 32 || v.charCodeAt(a) === 9)) a++;
  while (b > a && (v.charCodeAt(b - 1) === 32 || v.charCodeAt(b - 1) === 9)) b--;
  return a === 0 && b === v.length ? v : v.slice(a, b);
}

/** Most messages name nothing in Connection: they share this one. */
const NO_TOKENS: ReadonlySet<string> = new Set();

/**
 * A request head: `text` is the latin1 text before the blank line (the
 * CRLFCRLF itself excluded; leading empty lines already skipped). For tests
 * and tools: the gateway scans the bytes (scanRequestHead).
 */
export function parseRequestHead(text: string): RequestHead {
  return scanRequestHead(Buffer.from(`${text}\r\n\r\n`, 'latin1'), text.length);
}

/** A response head to a request with `method` (HEAD responses have no body whatever they declare): `text` as scanResponseHead reads it, for tests and tools. */
export function parseResponseHead(text: string, method: string): ResponseHead {
  return scanResponseHead(Buffer.from(`${text}\r\n\r\n`, 'latin1'), text.length, method);
}

// ------------------------------------------------------------ heads, on the bytes

/**
 * Heads are read on the bytes and not turned into strings: every exchange
 * reads two and writes two (as strings that was a few µs per request, most of
 * the gateway's own work), and what goes out is mostly the received lines
 * minus the hop-by-hop ones (./http-heads.ts). Names are tokens; values are
 * HTAB, SP, VCHAR and obs-text; lines end in CRLF only.
 */
const TCHAR = byteClass("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz");
const VALUE_BYTE = (() => {
  const t = new Uint8Array(256);
  t[9] = 1;
  for (let c = 0x20; c <= 0xff; c++) if (c !== 0x7f) t[c] = 1;
  return t;
})();

function byteClass(chars: string): Uint8Array {
  const t = new Uint8Array(256);
  for (let i = 0; i < chars.length; i++) t[chars.charCodeAt(i)] = 1;
  return t;
}

/** A lower-case name as bytes, for bytesAre (typed-array loads beat charCodeAt in the hot loop). */
export const lowerName = (name: string): Uint8Array => Uint8Array.from(name, (c) => c.charCodeAt(0));

/** The names (and option values) the scanners look for. */
export const NAMES = {
  CHUNKED: lowerName('chunked'),
  CLOSE: lowerName('close'),
  CONNECTION: lowerName('connection'),
  CONTENT_LENGTH: lowerName('content-length'),
  EXPECT: lowerName('expect'),
  HOST: lowerName('host'),
  KEEP_ALIVE: lowerName('keep-alive'),
  TRANSFER_ENCODING: lowerName('transfer-encoding'),
  UPGRADE: lowerName('upgrade'),
};

/** `buf[start, end)` is `lower` (a lower-case name) with ASCII letters in either case. */
export function bytesAre(buf: Buffer, start: number, end: number, lower: Uint8Array): boolean {
  const n = lower.length;
  if (end - start !== n) return false;
  for (let i = 0; i < n; i++) {
    const b = buf[start + i]!;
    if ((b >= 65 && b <= 90 ? b + 32 : b) !== lower[i]) return false;
  }
  return true;
}

/** Where the first line of `buf[0, end)` ends (its CR, or `end`). */
function lineEndIn(buf: Buffer, end: number): number {
  let i = 0;
  while (i < end && !(buf[i] === 13 && buf[i + 1] === 10)) i++;
  return i;
}

function sameBytes(buf: Buffer, a: number, aEnd: number, b: number, bEnd: number): boolean {
  if (aEnd - a !== bEnd - b) return false;
  for (let i = 0; i < aEnd - a; i++) if (buf[a + i] !== buf[b + i]) return false;
  return true;
}

/** The Connection options nearly every message names alone: shared, never changed. */
const ONLY_KEEP_ALIVE: ReadonlySet<string> = new Set(['keep-alive']);
const ONLY_CLOSE: ReadonlySet<string> = new Set(['close']);

/** The options of one more Connection field (`buf[start, end)`), added to `before`. */
function connectionBytes(buf: Buffer, start: number, end: number, before: ReadonlySet<string>): ReadonlySet<string> {
  if (before === NO_TOKENS) {
    if (bytesAre(buf, start, end, NAMES.KEEP_ALIVE)) return ONLY_KEEP_ALIVE;
    if (bytesAre(buf, start, end, NAMES.CLOSE)) return ONLY_CLOSE;
  }
  const tokens = new Set(before);
  for (const t of buf.toString('latin1', start, end).split(',')) {
    const tok = trimOws(t).toLowerCase();
    if (tok) tokens.add(tok);
  }
  return tokens.size === 0 ? NO_TOKENS : tokens;
}

/** Content-Length values (`[start, end)` pairs): the length, when they are plain digits and all equal. */
function contentLengthBytes(buf: Buffer, ranges: readonly number[]): number {
  const a = ranges[0]!;
  const aEnd = ranges[1]!;
  if (aEnd - a < 1 || aEnd - a > 15) throw new HttpParseError('bad Content-Length');
  let n = 0;
  for (let i = a; i < aEnd; i++) {
    const d = buf[i]! - 48;
    if (d < 0 || d > 9) throw new HttpParseError('bad Content-Length');
    n = n * 10 + d;
  }
  for (let k = 2; k < ranges.length; k += 2) if (!sameBytes(buf, a, aEnd, ranges[k]!, ranges[k + 1]!)) throw new HttpParseError('more than one Content-Length');
  return n;
}

class ScannedResponse implements ResponseHead {
  private headerList: string[] | null = null;

  constructor(
    readonly raw: Buffer,
    readonly statusLineEnd: number,
    readonly fields: readonly number[],
    readonly minor: 0 | 1,
    readonly status: number,
    readonly connection: ReadonlySet<string>,
    readonly framing: Framing,
    readonly contentLength: number,
    readonly keepAlive: boolean,
  ) {}

  get reason(): string {
    return this.statusLineEnd > 13 ? this.raw.toString('latin1', 13, this.statusLineEnd) : '';
  }

  /** As strings only when asked (a 101's relay, tests): the forwarding path copies bytes. */
  get headers(): string[] {
    return (this.headerList ??= headerStrings(this.raw, this.fields));
  }
}

/**
 * A response head: `buf[0, end)` (the CRLFCRLF after it excluded; `buf` may
 * hold more — the body — after it), to a request with `method`.
 */
export function scanResponseHead(buf: Buffer, end: number, method: string): ResponseHead {
  // Status line: HTTP/1.x SP 3DIGIT [SP reason]
  const lineEnd = lineEndIn(buf, end);
  const sp = spaceIn(buf, 0, lineEnd);
  if (sp === -1) throw new HttpParseError('bad status line');
  if (sp !== 8 || !bytesAreExactly(buf, 0, 'HTTP/1.') || (buf[7] !== 49 && buf[7] !== 48)) {
    throw new HttpParseError(`unsupported version ${JSON.stringify(buf.toString('latin1', 0, Math.min(sp, 16)))}`);
  }
  const minor = buf[7] === 49 ? 1 : 0;
  const c0 = buf[9]! - 48;
  const c1 = buf[10]! - 48;
  const c2 = buf[11]! - 48;
  if (lineEnd < 12 || c0 < 1 || c0 > 5 || c1 < 0 || c1 > 9 || c2 < 0 || c2 > 9 || (lineEnd > 12 && buf[12] !== 32)) throw new HttpParseError('bad status code');
  for (let i = 13; i < lineEnd; i++) if (!VALUE_BYTE[buf[i]!]) throw new HttpParseError('bad reason phrase');
  const status = c0 * 100 + c1 * 10 + c2;

  const f = scanFields(buf, lineEnd + 2, end);
  const { connection, lengths, codings } = f;
  let framing: Framing;
  let length = 0;
  if (method === 'HEAD' || status < 200 || status === 204 || status === 304) framing = 'none';
  else if (codings !== null) {
    // Another coding would reach the client still encoded, its framing lost (the field is hop-by-hop).
    if (codings.length !== 2 || !bytesAre(buf, codings[0]!, codings[1]!, NAMES.CHUNKED)) throw new HttpParseError('response Transfer-Encoding other than chunked');
    framing = 'chunked';
  } else if (lengths !== null) {
    length = contentLengthBytes(buf, lengths);
    framing = 'length';
  } else framing = 'close';
  const keepAlive = framing !== 'close' && (minor === 1 ? !connection.has('close') : connection.has('keep-alive') && !connection.has('close'));
  return new ScannedResponse(buf, lineEnd, f.fields, minor, status, connection, framing, length, keepAlive);
}

/** What the field loop found: every field's offsets, and the values framing and routing need. */
interface FieldScan {
  fields: number[];
  connection: ReadonlySet<string>;
  /** [start, end) of each Content-Length / Transfer-Encoding value, or null when there is none. */
  lengths: number[] | null;
  codings: number[] | null;
  hosts: number;
  host: string | undefined;
  expect: string | undefined;
  upgrade: string | undefined;
}

/** The field lines of `buf[pos, end)`: token names, values of HTAB, SP, VCHAR and obs-text, CRLF line ends only. */
function scanFields(buf: Buffer, pos: number, end: number): FieldScan {
  const f: FieldScan = { fields: [], connection: NO_TOKENS, lengths: null, codings: null, hosts: 0, host: undefined, expect: undefined, upgrade: undefined };
  while (pos < end) {
    let i = pos;
    while (i < end && TCHAR[buf[i]!]) i++;
    if (i === end || buf[i] !== 58 || i === pos) {
      // Also refuses obs-fold (a line starting with whitespace) and whitespace before the colon.
      throw new HttpParseError(i === end || buf[i] === 13 ? 'header line without a colon' : `bad header name ${JSON.stringify(buf.toString('latin1', pos, Math.min(i + 1, pos + 40)))}`);
    }
    const colon = i;
    i++;
    while (i < end && VALUE_BYTE[buf[i]!]) i++;
    if (i < end && !(buf[i] === 13 && buf[i + 1] === 10)) throw new HttpParseError(`bad characters in header ${buf.toString('latin1', pos, colon)}`);
    let vs = colon + 1;
    let ve = i;
    while (vs < ve && (buf[vs] === 32 || buf[vs] === 9)) vs++;
    while (ve > vs && (buf[ve - 1] === 32 || buf[ve - 1] === 9)) ve--;
    f.fields.push(pos, colon, vs, ve, i);
    switch (colon - pos) {
      // Dispatch on length first: most fields are none of these.
      case 4:
        if (bytesAre(buf, pos, colon, NAMES.HOST)) {
          f.host = buf.toString('latin1', vs, ve);
          f.hosts++;
        }
        break;
      case 6:
        if (bytesAre(buf, pos, colon, NAMES.EXPECT)) f.expect = buf.toString('latin1', vs, ve);
        break;
      case 7:
        if (bytesAre(buf, pos, colon, NAMES.UPGRADE)) f.upgrade = buf.toString('latin1', vs, ve);
        break;
      case 10:
        if (bytesAre(buf, pos, colon, NAMES.CONNECTION)) f.connection = connectionBytes(buf, vs, ve, f.connection);
        break;
      case 14:
        if (bytesAre(buf, pos, colon, NAMES.CONTENT_LENGTH)) (f.lengths ??= []).push(vs, ve);
        break;
      case 17:
        if (bytesAre(buf, pos, colon, NAMES.TRANSFER_ENCODING)) (f.codings ??= []).push(vs, ve);
        break;
    }
    pos = i + 2;
  }
  return f;
}

class ScannedRequest implements RequestHead {
  private headerList: string[] | null = null;
  private targetText: string | null = null;

  constructor(
    readonly raw: Buffer,
    readonly targetEnd: number,
    private readonly targetStart: number,
    readonly fields: readonly number[],
    readonly method: string,
    readonly minor: 0 | 1,
    readonly host: string | undefined,
    readonly connection: ReadonlySet<string>,
    readonly framing: 'none' | 'length' | 'chunked',
    readonly contentLength: number,
    readonly keepAlive: boolean,
    readonly expectContinue: boolean,
    readonly upgrade: string | null,
  ) {}

  get target(): string {
    return (this.targetText ??= this.raw.toString('latin1', this.targetStart, this.targetEnd));
  }

  get headers(): string[] {
    return (this.headerList ??= headerStrings(this.raw, this.fields));
  }
}

/** The usual methods as constants: no string made per request, and compared by identity. */
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH'];

function methodString(buf: Buffer, end: number): string {
  for (const m of METHODS) if (m.length === end && bytesAreExactly(buf, 0, m)) return m;
  return buf.toString('latin1', 0, end);
}

/**
 * A request head: `buf[0, end)` (the CRLFCRLF after it excluded, leading
 * empty lines already skipped; `buf` may hold more after it).
 */
export function scanRequestHead(buf: Buffer, end: number): RequestHead {
  // Request line: method SP request-target SP HTTP/1.x
  const lineEnd = lineEndIn(buf, end);
  const sp1 = spaceIn(buf, 0, lineEnd);
  const sp2 = sp1 === -1 ? -1 : spaceIn(buf, sp1 + 1, lineEnd);
  if (sp1 <= 0 || sp2 === -1 || spaceIn(buf, sp2 + 1, lineEnd) !== -1) throw new HttpParseError('bad request line');
  for (let i = 0; i < sp1; i++) if (!TCHAR[buf[i]!]) throw new HttpParseError('bad method');
  if (sp2 === sp1 + 1) throw new HttpParseError('bad request target');
  for (let i = sp1 + 1; i < sp2; i++) if (buf[i]! <= 0x20 || buf[i] === 0x7f) throw new HttpParseError('bad request target');
  if (lineEnd - sp2 - 1 !== 8 || !bytesAreExactly(buf, sp2 + 1, 'HTTP/1.') || (buf[sp2 + 8] !== 49 && buf[sp2 + 8] !== 48)) {
    throw new HttpParseError(`unsupported version ${JSON.stringify(buf.toString('latin1', sp2 + 1, Math.min(lineEnd, sp2 + 17)))}`);
  }
  const minor = buf[sp2 + 8] === 49 ? 1 : 0;
  const f = scanFields(buf, lineEnd + 2, end);
  if (f.hosts > 1) throw new HttpParseError('more than one Host');
  if (minor === 1 && f.hosts === 0) throw new HttpParseError('HTTP/1.1 request without Host');
  let framing: RequestHead['framing'] = 'none';
  let length = 0;
  if (f.codings !== null) {
    if (minor === 0) throw new HttpParseError('Transfer-Encoding in an HTTP/1.0 request');
    if (f.lengths !== null) throw new HttpParseError('both Transfer-Encoding and Content-Length');
    if (f.codings.length !== 2 || !bytesAre(buf, f.codings[0]!, f.codings[1]!, NAMES.CHUNKED)) throw new HttpParseError('Transfer-Encoding other than chunked');
    framing = 'chunked';
  } else if (f.lengths !== null) {
    if (f.lengths.length > 2) throw new HttpParseError('more than one Content-Length');
    length = contentLengthBytes(buf, f.lengths);
    framing = length > 0 ? 'length' : 'none';
  }
  const c = f.connection;
  const keepAlive = minor === 1 ? !c.has('close') : c.has('keep-alive') && !c.has('close');
  return new ScannedRequest(
    buf,
    sp2,
    sp1 + 1,
    f.fields,
    methodString(buf, sp1),
    minor,
    f.host,
    c,
    framing,
    length,
    keepAlive,
    minor === 1 && f.expect !== undefined && f.expect.toLowerCase() === '100-continue',
    c.has('upgrade') && f.upgrade ? f.upgrade : null,
  );
}

/** The first SP in buf[from, end), or -1. */
function spaceIn(buf: Buffer, from: number, end: number): number {
  for (let i = from; i < end; i++) if (buf[i] === 32) return i;
  return -1;
}

/** name, value, … as strings (what tests and the rare paths read). */
function headerStrings(raw: Buffer, fields: readonly number[]): string[] {
  const list: string[] = [];
  for (let i = 0; i < fields.length; i += FIELD_STRIDE) {
    list.push(raw.toString('latin1', fields[i + FieldAt.Name]!, fields[i + FieldAt.Colon]!), raw.toString('latin1', fields[i + FieldAt.ValueStart]!, fields[i + FieldAt.ValueEnd]!));
  }
  return list;
}

/** `buf` starts with `text` at `at` (exact bytes). */
function bytesAreExactly(buf: Buffer, at: number, text: string): boolean {
  for (let i = 0; i < text.length; i++) if (buf[at + i] !== text.charCodeAt(i)) return false;
  return true;
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
