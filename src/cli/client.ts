/**
 * The CLI's small API client: one `request` that adds the bearer token, sends
 * and parses JSON, rebuilds API errors as typed NetwallErrors (errorFromBody),
 * and turns network failures into one readable CliError naming the URL.
 */
import { errorFromBody, NetwallError, RateLimitedError } from '../shared/errors.js';
import { CliError, UsageError } from './parse.js';

export const DEFAULT_URL = 'http://127.0.0.1:7300';
export const DEFAULT_TIMEOUT_MS = 30_000;

export interface ClientOptions {
  url: string;
  token?: string | undefined;
  timeoutMs?: number;
  fetch?: typeof fetch;
}

export interface RequestOptions {
  body?: unknown;
  query?: Record<string, string | number | boolean | undefined>;
  /** Return the body as text instead of parsing JSON (e.g. `/metrics`). */
  text?: boolean;
}

export interface Response<T> {
  status: number;
  body: T;
}

/** The coordinator could not be reached at all (refused, unknown host, timeout). */
export class UnreachableError extends CliError {
  constructor(
    readonly url: string,
    reason: string,
  ) {
    super(`cannot reach the coordinator at ${url}: ${reason}`);
  }
}

/** The URL without credentials or a trailing slash, safe to print. */
export function displayUrl(url: URL): string {
  const u = new URL(url.href);
  u.username = '';
  u.password = '';
  return u.href.replace(/\/$/, '');
}

/** Parse and check the coordinator URL; a bad one is a usage error. */
export function parseBaseUrl(text: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new UsageError(`invalid coordinator URL '${text}' (expected e.g. ${DEFAULT_URL})`, 'netwall --help');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new UsageError(`invalid coordinator URL '${text}': only http and https are supported`, 'netwall --help');
  }
  return url;
}

/** A bearer token must be one printable, space-free word; never echo it. */
function checkToken(token: string): void {
  if (!/^[\x21-\x7e]+$/.test(token)) throw new UsageError('the token contains spaces or unprintable characters', 'netwall --help');
}

const NETWORK_REASONS: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'host name lookup failed',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ETIMEDOUT: 'connection timed out',
  UND_ERR_CONNECT_TIMEOUT: 'connection timed out',
  UND_ERR_SOCKET: 'connection closed by the server',
};

/** Why fetch failed, in a few words (undici hides the reason in `cause`). */
export function networkReason(err: unknown, timeoutMs: number): string {
  const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string; errors?: { code?: string }[] } };
  if (e?.name === 'TimeoutError' || e?.name === 'AbortError') return `no answer within ${Math.round(timeoutMs / 1000)} s`;
  const code = e?.cause?.code ?? e?.cause?.errors?.[0]?.code;
  if (code && NETWORK_REASONS[code]) return NETWORK_REASONS[code];
  return e?.cause?.message || code || e?.message || 'unknown error';
}

export class ApiClient {
  readonly baseUrl: URL;
  readonly hasToken: boolean;
  private readonly token: string | undefined;
  private readonly timeoutMs: number;
  private readonly fetchFn: typeof fetch;

  constructor(opts: ClientOptions) {
    this.baseUrl = parseBaseUrl(opts.url);
    if (opts.token) checkToken(opts.token);
    this.token = opts.token || undefined;
    this.hasToken = Boolean(this.token);
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.fetchFn = opts.fetch ?? fetch;
  }

  /** Build the full URL; a base URL with a path (behind a proxy) is kept as a prefix. */
  url(path: string, query?: RequestOptions['query']): URL {
    const u = new URL(this.baseUrl.href);
    u.pathname = u.pathname.replace(/\/+$/, '') + path;
    u.search = '';
    u.hash = '';
    for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined) u.searchParams.set(k, String(v));
    return u;
  }

  async request<T = unknown>(method: string, path: string, opts: RequestOptions = {}): Promise<Response<T>> {
    const headers: Record<string, string> = { accept: opts.text ? 'text/plain, */*' : 'application/json' };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    let body: string | undefined;
    if (opts.body !== undefined) {
      body = JSON.stringify(opts.body);
      headers['content-type'] = 'application/json';
    }
    const target = this.url(path, opts.query);
    let res: globalThis.Response;
    let raw: string;
    try {
      res = await this.fetchFn(target, { method, headers, body, signal: AbortSignal.timeout(this.timeoutMs), redirect: 'error' });
      raw = await res.text();
    } catch (err) {
      throw new UnreachableError(displayUrl(this.baseUrl), networkReason(err, this.timeoutMs));
    }
    let parsed: unknown = undefined;
    const isJson = /\bjson\b/i.test(res.headers.get('content-type') ?? '');
    if (raw && (isJson || !opts.text || res.status >= 400)) {
      try {
        parsed = JSON.parse(raw);
      } catch {
        if (res.status >= 400 || !opts.text) {
          const snippet = raw.replace(/\s+/g, ' ').trim().slice(0, 160);
          const err = new NetwallError(`the server at ${displayUrl(this.baseUrl)} answered with non-JSON: ${snippet}`);
          Object.defineProperty(err, 'status', { value: res.status });
          throw err;
        }
      }
    }
    if (res.status >= 400) {
      const err = errorFromBody(res.status, parsed);
      if (res.status === 429) {
        const after = Number(res.headers.get('retry-after'));
        throw new RateLimitedError(err.message, Number.isFinite(after) && after > 0 ? after : 1);
      }
      throw err;
    }
    return { status: res.status, body: (opts.text ? raw : parsed) as T };
  }

  get<T = unknown>(path: string, query?: RequestOptions['query']): Promise<Response<T>> {
    return this.request<T>('GET', path, { query });
  }
  post<T = unknown>(path: string, body: unknown): Promise<Response<T>> {
    return this.request<T>('POST', path, { body });
  }
  put<T = unknown>(path: string, body: unknown): Promise<Response<T>> {
    return this.request<T>('PUT', path, { body });
  }
  delete(path: string, query?: RequestOptions['query']): Promise<Response<unknown>> {
    return this.request('DELETE', path, { query });
  }
}

/**
 * `apiPath('v1', 'tenants', t, 'workloads', w)` → `/v1/tenants/acme/workloads/web1`,
 * every segment escaped. `.` and `..` would be folded away by URL parsing (even
 * escaped), so they are refused here rather than sent to another route.
 */
export function apiPath(...segments: string[]): string {
  for (const s of segments) {
    if (s === '' || /^(\.|%2e){1,2}$/i.test(s)) throw new UsageError(`'${s}' is not a valid name`);
  }
  return '/' + segments.map((s) => encodeURIComponent(s)).join('/');
}
