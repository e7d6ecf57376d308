/**
 * The agent's local API: HTTP/1.1 + JSON on a unix socket (default
 * /run/netwall/agent.sock; directory 0750, socket 0660, owner root — never
 * world-writable). Its clients are the CNI plugin and `netwall-agent
 * attach|detach`; it is the one place where a container gets an address:
 *
 *   POST /v1/attach {tenant, name, labels?, netns, ifname?, containerId?, mtu?}
 *        → Allocator.create (the agent asks the coordinator) → attachWorkload → 200 {workload, attachment}
 *   POST /v1/detach {tenant, name, ifname?, containerId?}
 *        → detachWorkload → Allocator.release → 200 {tenant, name, removed, released}
 *   POST /v1/reconcile → 202 {status: "scheduled"}: reconcile now (after `rotate-key` wrote a next key)
 *   GET  /v1/health → 200 {status: "ok"}
 *
 * Errors are `{"error": {"code", "message"}}` like the coordinator's API; a bad
 * body is a 400 whose message names the field. Requests for the same
 * tenant/name are serialised; different workloads proceed in parallel.
 */
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import { chmodSync, existsSync, lstatSync, mkdirSync, statSync, unlinkSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { ChangeLogger, Runner } from '../shared/runner.js';
import { errorFromBody, NetwallError, TooLargeError, ValidationError } from '../shared/errors.js';
import { LABEL_KEY_PATTERN, LABEL_VALUE_PATTERN, NAME_RE, type Labels } from '../shared/names.js';
import {
  attachWorkload,
  CONTAINER_ID_RE,
  DEFAULT_MTU,
  detachWorkload,
  isIPv4,
  isValidIfname,
  isValidMtu,
  type AttachResult,
} from './attach.js';

export const DEFAULT_AGENT_SOCKET = '/run/netwall/agent.sock';
export const SOCKET_DIR_MODE = 0o750;
export const SOCKET_MODE = 0o660;
const MAX_BODY = 64 * 1024;
const LABEL_KEY_RE = new RegExp(LABEL_KEY_PATTERN);
const LABEL_VALUE_RE = new RegExp(LABEL_VALUE_PATTERN);

/** How the agent gets (and gives back) a workload address; the agent implements it with HostClient. */
export interface Allocator {
  create(tenant: string, name: string, labels: Labels): Promise<{ address: string }>;
  release(tenant: string, name: string): Promise<void>;
}

/** The part of HostClient an allocator needs (src/shared/host-client.ts). */
export interface WorkloadApi {
  createWorkload(tenant: string, name: string, labels: Record<string, string>): Promise<{ address: string }>;
  deleteWorkload(tenant: string, name: string): Promise<void>;
}

/**
 * The agent's Allocator: the coordinator places the workload on this node
 * (an existing one of the same name comes back as is) and deletes it on release.
 * Release of an unknown workload is success.
 */
export function hostClientAllocator(client: WorkloadApi): Allocator {
  return {
    async create(tenant, name, labels) {
      const w = await client.createWorkload(tenant, name, labels);
      return { address: String(w.address).replace(/\/32$/, '') };
    },
    async release(tenant, name) {
      try {
        await client.deleteWorkload(tenant, name);
      } catch (err) {
        if (err instanceof NetwallError && err.code === 'not_found') return;
        throw err;
      }
    },
  };
}

export interface AttachRequest {
  tenant: string;
  name: string;
  labels: Labels;
  /** Path of the container's network namespace. */
  netns: string;
  ifname?: string;
  containerId?: string;
  mtu?: number;
}

export interface DetachRequest {
  tenant: string;
  name: string;
  ifname?: string;
  containerId?: string;
}

export interface AttachResponse {
  workload: { tenant: string; name: string; address: string; labels: Labels };
  attachment: AttachResult;
}

export interface DetachResponse {
  tenant: string;
  name: string;
  /** The veth was there and is gone now. */
  removed: boolean;
  /** The coordinator was told to release the workload. False when the veth belongs to another container. */
  released: boolean;
}

export interface ChangeEvent {
  op: 'attach' | 'detach';
  tenant: string;
  name: string;
  address?: string;
  /** attach: the workload's network namespace (the agent starts router clients there). */
  netns?: string;
  /** Something on the host or in the coordinator changed (not a no-op re-attach). */
  changed: boolean;
}

export interface AgentSocketOptions {
  /** Default /run/netwall/agent.sock. */
  path?: string;
  allocator: Allocator;
  runner: Runner;
  /** MTU for workloads whose request names none: a number or a getter (the agent's current settings.mtu). */
  mtu?: number | (() => number);
  /** Called after every successful attach/detach, so the agent can reconcile right away. */
  onChange?: (event: ChangeEvent) => void;
  /** `POST /v1/reconcile`: the agent reconciles its current document now. */
  onReconcile?: () => void;
  /** Prints each change to the system. */
  log?: ChangeLogger;
}

export interface AgentSocketServer {
  path: string;
  server: Server;
  close(): Promise<void>;
}

/** The coordinator (or the allocator behind it) could not be reached: retry later. */
export class UnavailableError extends NetwallError {
  override readonly code = 'unavailable';
  override readonly status = 503;
}

// ---------------------------------------------------------------- validation

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function validateLabels(v: unknown, field = 'labels'): Labels {
  if (v === undefined || v === null) return {};
  if (!isObject(v)) throw new ValidationError(`${field}: must be an object of string values`, field);
  const out: Labels = {};
  for (const [k, val] of Object.entries(v)) {
    if (!LABEL_KEY_RE.test(k)) throw new ValidationError(`${field}: invalid label key ${JSON.stringify(k)}`, field);
    if (typeof val !== 'string' || !LABEL_VALUE_RE.test(val)) {
      throw new ValidationError(`${field}.${k}: invalid label value ${JSON.stringify(val)}`, `${field}.${k}`);
    }
    out[k] = val;
  }
  return out;
}

function nameField(body: Record<string, unknown>, field: string): string {
  const v = body[field];
  if (typeof v !== 'string' || !NAME_RE.test(v)) {
    throw new ValidationError(`${field}: required, lowercase letters, digits and '-' (1..63), got ${JSON.stringify(v)}`, field);
  }
  return v;
}

function optional<T>(body: Record<string, unknown>, field: string, ok: (v: unknown) => v is T, what: string): T | undefined {
  const v = body[field];
  if (v === undefined || v === null) return undefined;
  if (!ok(v)) throw new ValidationError(`${field}: ${what}, got ${JSON.stringify(v)}`, field);
  return v;
}

const isContainerId = (v: unknown): v is string => typeof v === 'string' && v.length <= 256 && CONTAINER_ID_RE.test(v);
const KNOWN_ATTACH = new Set(['tenant', 'name', 'labels', 'netns', 'ifname', 'containerId', 'mtu']);
const KNOWN_DETACH = new Set(['tenant', 'name', 'ifname', 'containerId']);

function rejectUnknown(body: Record<string, unknown>, known: Set<string>): void {
  for (const k of Object.keys(body)) if (!known.has(k)) throw new ValidationError(`${k}: unknown field`, k);
}

export function validateAttachRequest(body: unknown, netnsExists: (p: string) => boolean = existsSync): AttachRequest {
  if (!isObject(body)) throw new ValidationError('body: must be a JSON object', 'body');
  rejectUnknown(body, KNOWN_ATTACH);
  const tenant = nameField(body, 'tenant');
  const name = nameField(body, 'name');
  const labels = validateLabels(body.labels);
  const netns = body.netns;
  if (typeof netns !== 'string' || !netns.startsWith('/') || netns.includes('\0')) {
    throw new ValidationError(`netns: required, an absolute path to a network namespace, got ${JSON.stringify(netns)}`, 'netns');
  }
  if (!netnsExists(netns)) throw new ValidationError(`netns: ${netns} does not exist`, 'netns');
  const ifname = optional(body, 'ifname', isValidIfname, 'an interface name (1..15 characters, no / : or spaces)');
  const containerId = optional(body, 'containerId', isContainerId, 'letters, digits, _ . -');
  const mtu = optional(body, 'mtu', isValidMtu, 'an integer 576..65535');
  return { tenant, name, labels, netns, ...(ifname ? { ifname } : {}), ...(containerId ? { containerId } : {}), ...(mtu ? { mtu } : {}) };
}

export function validateDetachRequest(body: unknown): DetachRequest {
  if (!isObject(body)) throw new ValidationError('body: must be a JSON object', 'body');
  rejectUnknown(body, KNOWN_DETACH);
  const tenant = nameField(body, 'tenant');
  const name = nameField(body, 'name');
  const ifname = optional(body, 'ifname', isValidIfname, 'an interface name (1..15 characters, no / : or spaces)');
  const containerId = optional(body, 'containerId', isContainerId, 'letters, digits, _ . -');
  return { tenant, name, ...(ifname ? { ifname } : {}), ...(containerId ? { containerId } : {}) };
}

// ---------------------------------------------------------------- server

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function sendError(res: ServerResponse, err: unknown): void {
  if (err instanceof NetwallError) {
    send(res, err.status, { error: { code: err.code, message: err.message } });
  } else if (err instanceof TypeError && /fetch failed/i.test(err.message)) {
    // undici: the coordinator did not answer.
    const cause = (err as { cause?: { message?: string } }).cause?.message;
    send(res, 503, { error: { code: 'unavailable', message: `coordinator unreachable${cause ? `: ${cause}` : ''}` } });
  } else {
    // A root-only local socket: the message helps the operator more than it leaks.
    send(res, 500, { error: { code: 'internal', message: err instanceof Error ? err.message : String(err) } });
  }
}

async function readBody(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY) throw new TooLargeError(`body: larger than ${MAX_BODY} bytes`);
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (!text.trim()) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    throw new ValidationError('body: malformed JSON', 'body');
  }
}

/** The request handler alone (tests drive it on a socket in a temp directory). */
export function createAgentRequestHandler(opts: AgentSocketOptions): (req: IncomingMessage, res: ServerResponse) => void {
  const locks = new Map<string, Promise<unknown>>();
  const serialised = <T>(key: string, fn: () => Promise<T>): Promise<T> => {
    const prev = locks.get(key) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => undefined);
    locks.set(key, tail);
    void tail.then(() => {
      if (locks.get(key) === tail) locks.delete(key);
    });
    return next;
  };
  const defaultMtu = (): number => (typeof opts.mtu === 'function' ? opts.mtu() : (opts.mtu ?? DEFAULT_MTU));
  const notify = (e: ChangeEvent): void => {
    try {
      opts.onChange?.(e);
    } catch {
      // a failing callback never fails the request
    }
  };

  const attach = async (body: unknown): Promise<AttachResponse> => {
    const r = validateAttachRequest(body);
    return serialised(`${r.tenant}/${r.name}`, async () => {
      const placed = await opts.allocator.create(r.tenant, r.name, r.labels);
      if (!isIPv4(placed?.address)) throw new NetwallError(`allocator returned no IPv4 address for ${r.tenant}/${r.name}`);
      const attachment = await attachWorkload(
        opts.runner,
        {
          netns: r.netns,
          tenant: r.tenant,
          name: r.name,
          address: placed.address,
          mtu: r.mtu ?? defaultMtu(),
          ...(r.ifname ? { ifname: r.ifname } : {}),
          ...(r.containerId ? { containerId: r.containerId } : {}),
        },
        opts.log ? { log: opts.log } : {},
      );
      notify({ op: 'attach', tenant: r.tenant, name: r.name, address: placed.address, netns: r.netns, changed: attachment.changes.length > 0 });
      return { workload: { tenant: r.tenant, name: r.name, address: placed.address, labels: r.labels }, attachment };
    });
  };

  const detach = async (body: unknown): Promise<DetachResponse> => {
    const r = validateDetachRequest(body);
    return serialised(`${r.tenant}/${r.name}`, async () => {
      const { removed, foreign } = await detachWorkload(
        opts.runner,
        { tenant: r.tenant, name: r.name, ...(r.containerId ? { containerId: r.containerId } : {}) },
        opts.log ? { log: opts.log } : {},
      );
      // Released even when the veth was already gone (DEL after a failed ADD); the coordinator's delete is idempotent.
      if (!foreign) await opts.allocator.release(r.tenant, r.name);
      notify({ op: 'detach', tenant: r.tenant, name: r.name, changed: removed || !foreign });
      return { tenant: r.tenant, name: r.name, removed, released: !foreign };
    });
  };

  return (req, res) => {
    void (async () => {
      try {
        const url = new URL(req.url ?? '/', 'http://agent');
        const route = `${req.method} ${url.pathname}`;
        switch (route) {
          case 'GET /v1/health':
            return send(res, 200, { status: 'ok' });
          case 'POST /v1/attach':
            return send(res, 200, await attach(await readBody(req)));
          case 'POST /v1/detach':
            return send(res, 200, await detach(await readBody(req)));
          case 'POST /v1/reconcile':
            try {
              opts.onReconcile?.();
            } catch {
              // the next interval reconciles anyway
            }
            return send(res, 202, { status: 'scheduled' });
          default:
            if (['/v1/health', '/v1/attach', '/v1/detach', '/v1/reconcile'].includes(url.pathname)) {
              return send(res, 405, { error: { code: 'method_not_allowed', message: `${req.method} not allowed on ${url.pathname}` } });
            }
            return send(res, 404, { error: { code: 'not_found', message: `no route ${route}` } });
        }
      } catch (err) {
        sendError(res, err);
      }
    })();
  };
}

function probe(path: string): Promise<boolean> {
  return new Promise((resolveProbe) => {
    const s = connect(path);
    s.once('connect', () => {
      s.destroy();
      resolveProbe(true);
    });
    s.once('error', () => resolveProbe(false));
  });
}

/**
 * Listen on the unix socket. Creates the directory 0750 if missing, refuses a
 * world-writable directory, removes a stale socket (one nobody answers on),
 * refuses to start when another agent answers, and leaves the socket 0660.
 */
export async function startAgentSocket(opts: AgentSocketOptions): Promise<AgentSocketServer> {
  const path = resolve(opts.path ?? DEFAULT_AGENT_SOCKET);
  const dir = dirname(path);
  if (!existsSync(dir)) {
    mkdirSync(dir, { recursive: true, mode: SOCKET_DIR_MODE });
    chmodSync(dir, SOCKET_DIR_MODE);
  }
  const dirMode = statSync(dir).mode & 0o7777;
  if (dirMode & 0o002) throw new ValidationError(`agent socket: refusing world-writable directory ${dir} (mode ${dirMode.toString(8)})`, 'path');
  if (existsSync(path)) {
    if (!lstatSync(path).isSocket()) throw new ValidationError(`agent socket: ${path} exists and is not a socket`, 'path');
    if (await probe(path)) throw new NetwallError(`agent socket: another process is listening on ${path}`);
    unlinkSync(path);
  }
  const server = createServer(createAgentRequestHandler(opts));
  server.requestTimeout = 120_000;
  await new Promise<void>((resolveListen, reject) => {
    server.once('error', reject);
    // The socket is created inside listen(): a umask keeps it from ever being group/world-accessible beyond 0660.
    const old = process.umask(0o117);
    try {
      server.listen(path, () => {
        server.off('error', reject);
        resolveListen();
      });
    } finally {
      process.umask(old);
    }
  });
  chmodSync(path, SOCKET_MODE);
  const mode = statSync(path).mode & 0o777;
  if (mode !== SOCKET_MODE) {
    server.close();
    throw new NetwallError(`agent socket: ${path} has mode ${mode.toString(8)}, expected ${SOCKET_MODE.toString(8)}`);
  }
  return {
    path,
    server,
    close: () =>
      new Promise<void>((resolveClose) => {
        server.close(() => resolveClose());
        server.closeAllConnections();
      }),
  };
}

// ---------------------------------------------------------------- client

/** A small client for the agent socket (used by the CNI plugin and `netwall-agent attach|detach`). */
export class AgentClient {
  constructor(
    readonly path: string = DEFAULT_AGENT_SOCKET,
    private readonly timeoutMs = 120_000,
  ) {}

  request<T>(method: string, urlPath: string, body?: unknown): Promise<T> {
    const text = body === undefined ? undefined : JSON.stringify(body);
    return new Promise<T>((resolveReq, reject) => {
      const req = httpRequest(
        {
          socketPath: this.path,
          path: urlPath,
          method,
          headers: text === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) },
          timeout: this.timeoutMs,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', reject);
          res.on('end', () => {
            const raw = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown;
            try {
              parsed = raw ? JSON.parse(raw) : undefined;
            } catch {
              return reject(new NetwallError(`agent answered ${res.statusCode} with non-JSON: ${raw.slice(0, 200)}`));
            }
            const status = res.statusCode ?? 0;
            if (status === 503) {
              const msg = (parsed as { error?: { message?: string } } | undefined)?.error?.message;
              return reject(new UnavailableError(msg ?? 'agent: service unavailable'));
            }
            if (status >= 400) return reject(errorFromBody(status, parsed));
            resolveReq(parsed as T);
          });
        },
      );
      req.on('timeout', () => req.destroy(new UnavailableError(`agent socket ${this.path}: no answer within ${this.timeoutMs} ms`)));
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (err instanceof NetwallError) return reject(err);
        // ENOENT / ECONNREFUSED / EACCES: the agent is not running (or we may not talk to it).
        reject(new UnavailableError(`agent socket ${this.path}: ${err.code ?? err.message}`));
      });
      req.end(text);
    });
  }

  health(): Promise<{ status: string }> {
    return this.request('GET', '/v1/health');
  }

  attach(req: AttachRequest): Promise<AttachResponse> {
    return this.request('POST', '/v1/attach', req);
  }

  detach(req: DetachRequest): Promise<DetachResponse> {
    return this.request('POST', '/v1/detach', req);
  }

  /** Ask the agent to reconcile now (e.g. to register a next WireGuard key at once). */
  reconcile(): Promise<{ status: string }> {
    return this.request('POST', '/v1/reconcile');
  }
}

// ---------------------------------------------------------------- `netwall-agent attach|detach`

export interface AttachCommandOptions {
  tenant: string;
  name: string;
  /** `--label k=v` (repeatable) as given, or already parsed. */
  labels?: string[] | Labels;
  /** A path (/proc/PID/ns/net, /run/netns/X), a bare name under /run/netns, or a PID. */
  netns: string;
  ifname?: string;
  mtu?: number;
  /** Agent socket; default /run/netwall/agent.sock. */
  socket?: string;
  /** Print the full JSON answer instead of one line. */
  json?: boolean;
  out?: (line: string) => void;
}

export interface DetachCommandOptions {
  tenant: string;
  name: string;
  socket?: string;
  json?: boolean;
  out?: (line: string) => void;
}

/** `k=v` strings (from repeated `--label`) to a validated label map. */
export function parseLabelArgs(list: readonly string[]): Labels {
  const out: Labels = {};
  for (const item of list) {
    const i = item.indexOf('=');
    if (i <= 0) throw new ValidationError(`--label: expected key=value, got ${JSON.stringify(item)}`, 'labels');
    out[item.slice(0, i)] = item.slice(i + 1);
  }
  return validateLabels(out, 'labels');
}

/** `1234` → /proc/1234/ns/net; `foo` → /run/netns/foo; paths as given (made absolute). */
export function resolveNetnsArg(netns: string): string {
  if (/^\d+$/.test(netns)) return `/proc/${netns}/ns/net`;
  if (!netns.includes('/')) return `/run/netns/${netns}`;
  return resolve(netns);
}

/** `netwall-agent attach --tenant T --name N [--label k=v]… --netns PATH [--ifname eth0] [--mtu M]` */
export async function attachCommand(opts: AttachCommandOptions): Promise<AttachResponse> {
  const labels = Array.isArray(opts.labels) ? parseLabelArgs(opts.labels) : validateLabels(opts.labels ?? {});
  const client = new AgentClient(opts.socket ?? DEFAULT_AGENT_SOCKET);
  const res = await client.attach({
    tenant: opts.tenant,
    name: opts.name,
    labels,
    netns: resolveNetnsArg(opts.netns),
    ...(opts.ifname ? { ifname: opts.ifname } : {}),
    ...(opts.mtu ? { mtu: opts.mtu } : {}),
  });
  const out = opts.out ?? console.log;
  if (opts.json) out(JSON.stringify(res, null, 2));
  else {
    const a = res.attachment;
    out(
      `attached ${res.workload.tenant}/${res.workload.name} ${a.address}/32 on ${a.hostInterface.name} <-> ` +
        `${a.containerInterface.name} in ${a.containerInterface.sandbox}${a.changes.length === 0 ? ' (already attached)' : ''}`,
    );
  }
  return res;
}

/** `netwall-agent detach --tenant T --name N`: removes the veth and releases the workload; idempotent. */
export async function detachCommand(opts: DetachCommandOptions): Promise<DetachResponse> {
  const client = new AgentClient(opts.socket ?? DEFAULT_AGENT_SOCKET);
  const res = await client.detach({ tenant: opts.tenant, name: opts.name });
  const out = opts.out ?? console.log;
  if (opts.json) out(JSON.stringify(res, null, 2));
  else out(`detached ${res.tenant}/${res.name}${res.removed ? '' : ' (no veth was attached)'}${res.released ? ', released' : ''}`);
  return res;
}
