/**
 * The router protocol: how a router client (inside an entry-point container)
 * proves to a gateway's router server that it may serve one exposure, over a
 * TCP connection the client itself opened OUT to the gateway.
 *
 *  1. Grants. The coordinator binds a router client's ed25519 public key to one
 *     (tenant, exposure, workload, node) for a time window: a RouterGrant as
 *     exact JSON text, signed over `netwall-router-grant-v1\n` + sha256hex(text).
 *  2. Handshake (the only home-made framing; one frame each way, then one
 *     result): every frame is a 4-byte big-endian length + UTF-8 JSON, at most
 *     16 KiB, and the whole exchange must finish within 5 s.
 *       gateway → client  {type:"hello", v:1, gateway, challenge}   32 fresh random bytes
 *       client  → gateway {type:"auth", v:1, credential, signature}
 *       gateway → client  {type:"welcome", v:1} | {type:"refused", v:1, reason}
 *     The signature covers authSigningText(): the context, THIS challenge, the
 *     gateway's name, the grant's tenant/exposure/workload and the grant's
 *     hash. A challenge lives in one connection's memory only and is checked
 *     once, so a recorded answer never verifies against another connection.
 *  3. After "welcome" the socket carries HTTP/2 with the roles reversed: the
 *     gateway is the HTTP/2 client and opens one CONNECT stream per public
 *     connection; the router client is the HTTP/2 server and joins each stream
 *     to its app (docs/tunnel.md).
 */
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import { isKey, sha256hex, sign, verify } from './crypto.js';
import type { GatewayExposure, RouterCredential, RouterGrant } from './desired.js';
import { NetwallError, UnauthorizedError, ValidationError } from './errors.js';
import { NAME_RE } from './names.js';

export const GRANT_CONTEXT = 'netwall-router-grant-v1';
export const AUTH_CONTEXT = 'netwall-router-auth-v1';
export const PROTOCOL_VERSION = 1;
export const CHALLENGE_BYTES = 32;
/** Largest handshake frame either side accepts. */
export const HANDSHAKE_MAX_BYTES = 16 * 1024;
/** The whole handshake must finish within this. */
export const HANDSHAKE_TIMEOUT_MS = 5_000;
/** How far the gateway's clock may lag the coordinator's when checking issuedAt. */
export const GRANT_CLOCK_SKEW_MS = 5 * 60_000;
/** Largest grant text accepted (a grant is ~300 bytes). */
const GRANT_MAX_BYTES = 4096;

/** Why a router client was refused; stable codes, counted by the gateway. */
export const AUTH_FAILURES = [
  'malformed', // not a well-formed handshake message
  'too-large', // frame over HANDSHAKE_MAX_BYTES
  'timeout', // handshake not finished in time
  'closed', // peer closed the connection during the handshake
  'bad-grant-signature', // grant not signed by the coordinator (forged or tampered)
  'bad-grant', // grant text not a valid v1 grant
  'not-yet-valid', // issuedAt in the future (beyond the allowed skew)
  'expired', // expiresAt passed
  'wrong-tenant', // grant for another tenant than the mesh address it arrived on
  'unknown-exposure', // no such exposure of that tenant on this gateway
  'not-tunnel', // exposure is in mesh mode
  'key-not-listed', // key (with workload/node) not in the exposure's routerClients
  'wrong-source', // the connection does not come from the mesh address of the grant's workload
  'bad-signature', // challenge not signed by the grant's key (wrong key, replay)
  'busy', // too many handshakes in progress
] as const;
export type RouterAuthFailure = (typeof AUTH_FAILURES)[number];

/** A refused router client; `reason` is what the gateway counts and tells the client. */
export class RouterAuthError extends UnauthorizedError {
  constructor(
    readonly reason: RouterAuthFailure,
    message: string,
  ) {
    super(message);
  }
}

/** No live router client can take a stream for the exposure (the public side answers 502/503). */
export class RouterUnavailableError extends NetwallError {
  override readonly code = 'unavailable';
  override readonly status = 503;
}

// ---------------------------------------------------------------- grants

export const grantSigningText = (grantText: string): string => `${GRANT_CONTEXT}\n${sha256hex(grantText)}`;

/** Coordinator side: sign a grant (its JSON text is what travels and what is verified). */
export function signGrant(grant: RouterGrant, coordinatorSecretKey: string): RouterCredential {
  checkGrantShape(grant, (m) => new ValidationError(m, 'grant'));
  const text = JSON.stringify({
    v: grant.v,
    tenant: grant.tenant,
    exposure: grant.exposure,
    workload: grant.workload,
    node: grant.node,
    publicKey: grant.publicKey,
    issuedAt: grant.issuedAt,
    expiresAt: grant.expiresAt,
  });
  return { grant: text, signature: sign(grantSigningText(text), coordinatorSecretKey) };
}

function checkGrantShape(g: unknown, fail: (message: string) => Error): asserts g is RouterGrant {
  if (!g || typeof g !== 'object' || Array.isArray(g)) throw fail('grant is not an object');
  const r = g as Record<string, unknown>;
  if (r.v !== PROTOCOL_VERSION) throw fail(`grant version ${String(r.v)} is not ${PROTOCOL_VERSION}`);
  for (const f of ['tenant', 'exposure', 'workload', 'node'] as const) {
    if (typeof r[f] !== 'string' || !NAME_RE.test(r[f])) throw fail(`grant ${f} is not a name`);
  }
  if (!isKey(r.publicKey)) throw fail('grant publicKey is not a base64 ed25519 key');
  const from = typeof r.issuedAt === 'string' ? Date.parse(r.issuedAt) : NaN;
  const to = typeof r.expiresAt === 'string' ? Date.parse(r.expiresAt) : NaN;
  if (!Number.isFinite(from) || !Number.isFinite(to)) throw fail('grant issuedAt/expiresAt are not ISO times');
  if (to <= from) throw fail('grant expires before it is issued');
}

/**
 * Gateway side: the grant inside `cred`, if the coordinator signed exactly this
 * text (any one of `coordinatorKey`, to allow rotation) and `now` is inside its
 * window. Throws RouterAuthError with the reason otherwise.
 */
export function verifyGrant(
  cred: RouterCredential,
  coordinatorKey: string | readonly string[],
  now: number = Date.now(),
  skewMs: number = GRANT_CLOCK_SKEW_MS,
): RouterGrant {
  if (!cred || typeof cred !== 'object' || typeof cred.grant !== 'string' || typeof cred.signature !== 'string') {
    throw new RouterAuthError('malformed', 'credential must be {grant, signature} strings');
  }
  if (cred.grant.length > GRANT_MAX_BYTES) throw new RouterAuthError('bad-grant', 'grant text too long');
  const keys = typeof coordinatorKey === 'string' ? [coordinatorKey] : coordinatorKey;
  const text = grantSigningText(cred.grant);
  if (!keys.some((k) => verify(text, cred.signature, k))) {
    throw new RouterAuthError('bad-grant-signature', 'grant is not signed by the coordinator');
  }
  let grant: unknown;
  try {
    grant = JSON.parse(cred.grant);
  } catch {
    throw new RouterAuthError('bad-grant', 'grant is not JSON');
  }
  checkGrantShape(grant, (m) => new RouterAuthError('bad-grant', m));
  if (Date.parse(grant.issuedAt) > now + skewMs) throw new RouterAuthError('not-yet-valid', `grant is valid from ${grant.issuedAt}`);
  if (Date.parse(grant.expiresAt) <= now) throw new RouterAuthError('expired', `grant expired at ${grant.expiresAt}`);
  return grant;
}

// ---------------------------------------------------------------- challenge-response

export const newChallenge = (): Buffer => randomBytes(CHALLENGE_BYTES);

/** What the router client signs: binds this challenge, this gateway and this exact grant. */
export function authSigningText(challenge: string, gateway: string, cred: RouterCredential, grant: RouterGrant): string {
  return [AUTH_CONTEXT, challenge, gateway, grant.tenant, grant.exposure, grant.workload, sha256hex(cred.grant)].join('\n');
}

export interface HelloMessage {
  type: 'hello';
  v: 1;
  /** The gateway's host name (the client checks it when it knows it). */
  gateway: string;
  /** base64 of CHALLENGE_BYTES random bytes, fresh for this connection. */
  challenge: string;
}

export interface AuthMessage {
  type: 'auth';
  v: 1;
  credential: RouterCredential;
  /** ed25519 signature by grant.publicKey over authSigningText(). */
  signature: string;
}

export type ResultMessage = { type: 'welcome'; v: 1 } | { type: 'refused'; v: 1; reason: RouterAuthFailure };

export function helloMessage(gateway: string, challenge: Buffer): HelloMessage {
  return { type: 'hello', v: 1, gateway, challenge: challenge.toString('base64') };
}

/** Client side: check the hello and answer it. `expectedGateway` pins the gateway's name when known. */
export function answerHello(raw: unknown, credential: RouterCredential, secretKey: string, expectedGateway?: string): AuthMessage {
  const hello = raw as Partial<HelloMessage> | null;
  if (!hello || hello.type !== 'hello' || hello.v !== 1) throw new NetwallError('gateway did not send a v1 hello');
  if (typeof hello.gateway !== 'string' || !NAME_RE.test(hello.gateway)) throw new NetwallError('gateway hello has no valid name');
  if (expectedGateway !== undefined && hello.gateway !== expectedGateway) {
    throw new NetwallError(`dialled gateway "${expectedGateway}" but "${hello.gateway}" answered`);
  }
  if (!isKey(hello.challenge, CHALLENGE_BYTES)) throw new NetwallError('gateway hello has no valid challenge');
  const grant = JSON.parse(credential.grant) as RouterGrant;
  const text = authSigningText(hello.challenge, hello.gateway, credential, grant);
  return { type: 'auth', v: 1, credential, signature: sign(text, secretKey) };
}

/** Where an exposure lives, for the authorization check. */
export type ExposureLookup = (tenant: string, exposure: string) => GatewayExposure | undefined;

export interface AuthorizeInput {
  message: unknown;
  /** The challenge this connection sent (base64). */
  challenge: string;
  gateway: string;
  coordinatorKey: string | readonly string[];
  lookup: ExposureLookup;
  /** The tenant whose mesh address the connection arrived on, when the listener is bound to one. */
  tenant?: string | undefined;
  /** The connection's source address (IPv4, unmapped): must be the grant's workload's mesh address (undefined: not checked). */
  source?: string | undefined;
  now?: number;
}

/**
 * Gateway side: authorize one auth message. Order matters only for which
 * reason is reported; every check must pass. Returns the verified grant and
 * the exposure it may serve.
 */
export function authorizeRouterClient(input: AuthorizeInput): { grant: RouterGrant; exposure: GatewayExposure; credential: RouterCredential } {
  const m = input.message as Partial<AuthMessage> | null;
  if (!m || typeof m !== 'object' || m.type !== 'auth' || m.v !== 1 || typeof m.signature !== 'string' || !m.credential) {
    throw new RouterAuthError('malformed', 'expected a v1 auth message');
  }
  const grant = verifyGrant(m.credential, input.coordinatorKey, input.now ?? Date.now());
  if (input.tenant !== undefined && grant.tenant !== input.tenant) {
    throw new RouterAuthError('wrong-tenant', `grant for tenant "${grant.tenant}" arrived on tenant "${input.tenant}"'s mesh`);
  }
  const exposure = input.lookup(grant.tenant, grant.exposure);
  if (!exposure || exposure.tenant !== grant.tenant) {
    throw new RouterAuthError('unknown-exposure', `no exposure "${grant.exposure}" of tenant "${grant.tenant}" here`);
  }
  if (exposure.mode !== 'tunnel') throw new RouterAuthError('not-tunnel', `exposure "${grant.exposure}" is not in tunnel mode`);
  if (!isListed(exposure, grant)) {
    throw new RouterAuthError('key-not-listed', `key is not a router client of "${grant.tenant}/${grant.exposure}"`);
  }
  const text = authSigningText(input.challenge, input.gateway, m.credential, grant);
  if (!verify(text, m.signature, grant.publicKey)) throw new RouterAuthError('bad-signature', 'challenge not signed by the grant key');
  if (input.source !== undefined && !comesFromWorkload(exposure, grant, input.source)) {
    throw new RouterAuthError('wrong-source', `connection from ${input.source}, not from ${grant.workload}@${grant.node}'s address`);
  }
  return { grant, exposure, credential: m.credential };
}

/** Is this grant's key (for this workload on this node) one of the exposure's router clients? */
export function isListed(exposure: GatewayExposure, grant: RouterGrant): boolean {
  return (
    exposure.tenant === grant.tenant &&
    exposure.name === grant.exposure &&
    exposure.mode === 'tunnel' &&
    exposure.routerClients.some((c) => c.publicKey === grant.publicKey && c.workload === grant.workload && c.node === grant.node)
  );
}

/**
 * Does a connection from `source` come from the grant's workload? Its router
 * client runs in the workload's network namespace and the node's anti-spoofing
 * pins that namespace to its own address, so a credential copied into another
 * container (even one listed for the same exposure) is refused.
 */
export function comesFromWorkload(exposure: GatewayExposure, grant: RouterGrant, source: string): boolean {
  return exposure.targets.some((t) => t.workload === grant.workload && t.node === grant.node && t.address === source);
}

export function parseResult(raw: unknown): ResultMessage {
  const r = raw as Partial<ResultMessage> | null;
  if (r && r.v === 1 && r.type === 'welcome') return { type: 'welcome', v: 1 };
  if (r && r.v === 1 && r.type === 'refused') {
    const reason = (AUTH_FAILURES as readonly string[]).includes(String(r.reason)) ? (r.reason as RouterAuthFailure) : 'malformed';
    return { type: 'refused', v: 1, reason };
  }
  throw new NetwallError('gateway sent no valid handshake result');
}

// ---------------------------------------------------------------- framing

/** One handshake frame: 4-byte big-endian length, then JSON. */
export function encodeFrame(message: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(message));
  if (body.length > HANDSHAKE_MAX_BYTES) throw new ValidationError('handshake frame too large');
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length);
  return Buffer.concat([head, body]);
}

export class FrameError extends NetwallError {
  constructor(
    readonly reason: 'malformed' | 'too-large' | 'timeout' | 'closed',
    message: string,
  ) {
    super(message);
  }
}

/**
 * Read exactly one frame from `socket` and parse it. Bytes after the frame are
 * put back (unshift) so HTTP/2 sees them; the socket is left paused. Rejects
 * on a frame over `maxBytes`, bad JSON, the peer closing, or `deadline`
 * (epoch ms) passing.
 */
export function readFrame(socket: Socket, deadline: number, maxBytes: number = HANDSHAKE_MAX_BYTES): Promise<unknown> {
  return new Promise((resolve, reject) => {
    let buf: Buffer = Buffer.alloc(0);
    const timer = setTimeout(() => finish(new FrameError('timeout', 'handshake timed out')), Math.max(0, deadline - Date.now()));
    const finish = (err: Error | null, value?: unknown, rest?: Buffer) => {
      clearTimeout(timer);
      socket.off('readable', onReadable);
      socket.off('end', onEnd);
      socket.off('close', onEnd);
      socket.off('error', onError);
      if (err) return reject(err);
      if (rest && rest.length > 0) socket.unshift(rest);
      resolve(value);
    };
    const onEnd = () => finish(new FrameError('closed', 'peer closed the connection during the handshake'));
    const onError = (e: Error) => finish(new FrameError('closed', `handshake: ${e.message}`));
    const onReadable = () => {
      let chunk: Buffer | null;
      while ((chunk = socket.read() as Buffer | null) !== null) {
        buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
        if (buf.length < 4) continue;
        const len = buf.readUInt32BE(0);
        if (len > maxBytes) return finish(new FrameError('too-large', `handshake frame of ${len} bytes (max ${maxBytes})`));
        if (buf.length < 4 + len) continue;
        let value: unknown;
        try {
          value = JSON.parse(buf.subarray(4, 4 + len).toString('utf8'));
        } catch {
          return finish(new FrameError('malformed', 'handshake frame is not JSON'));
        }
        return finish(null, value, buf.subarray(4 + len));
      }
    };
    socket.on('readable', onReadable);
    socket.on('end', onEnd);
    socket.on('close', onEnd);
    socket.on('error', onError);
    if (socket.readableLength > 0) onReadable();
  });
}
