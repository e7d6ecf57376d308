/**
 * Keys and signatures, all with tweetnacl: ed25519 host identities and
 * coordinator document signatures, x25519 WireGuard keys (the same bytes
 * `wg genkey | wg pubkey` produce), and signed host→coordinator requests.
 */
import { createHash, createPrivateKey, createPublicKey, sign as edSign, verify as edVerify, randomBytes, timingSafeEqual, type KeyObject } from 'node:crypto';
import nacl from 'tweetnacl';

export const b64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64');
export const unb64 = (text: string): Uint8Array => new Uint8Array(Buffer.from(text, 'base64'));

export function sha256hex(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Is `text` canonical base64 of exactly `length` bytes? */
export function isKey(text: unknown, length = 32): text is string {
  if (typeof text !== 'string' || !/^[A-Za-z0-9+/]+={0,2}$/.test(text)) return false;
  const bytes = Buffer.from(text, 'base64');
  return bytes.length === length && bytes.toString('base64') === text;
}

export const KEY_PATTERN = '^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$';

// ---------------------------------------------------------------- ed25519

export interface SigningKeyPair {
  publicKey: string;
  secretKey: string;
}

export function generateSigningKeyPair(): SigningKeyPair {
  const kp = nacl.sign.keyPair();
  return { publicKey: b64(kp.publicKey), secretKey: b64(kp.secretKey) };
}

/*
 * Keys are made by tweetnacl (the 64-byte secret key is seed + public key);
 * signing and verifying run through node:crypto's native ed25519, which gives
 * the same signatures ~50x faster than tweetnacl's JavaScript — it matters on
 * the coordinator, which checks a signature on every host request.
 */
const SPKI_ED25519 = Buffer.from('302a300506032b6570032100', 'hex');
const PKCS8_ED25519 = Buffer.from('302e020100300506032b657004220420', 'hex');
const publicKeys = new Map<string, KeyObject>();
const privateKeys = new Map<string, KeyObject>();

function publicKeyObject(publicKey: string): KeyObject {
  let k = publicKeys.get(publicKey);
  if (!k) {
    k = createPublicKey({ key: Buffer.concat([SPKI_ED25519, Buffer.from(publicKey, 'base64')]), format: 'der', type: 'spki' });
    if (publicKeys.size > 10_000) publicKeys.clear();
    publicKeys.set(publicKey, k);
  }
  return k;
}

function privateKeyObject(secretKey: string): KeyObject {
  let k = privateKeys.get(secretKey);
  if (!k) {
    const seed = Buffer.from(secretKey, 'base64').subarray(0, 32);
    k = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519, seed]), format: 'der', type: 'pkcs8' });
    if (privateKeys.size > 100) privateKeys.clear();
    privateKeys.set(secretKey, k);
  }
  return k;
}

export function sign(message: string | Uint8Array, secretKey: string): string {
  const bytes = typeof message === 'string' ? Buffer.from(message) : message;
  return b64(edSign(null, bytes, privateKeyObject(secretKey)));
}

export function verify(message: string | Uint8Array, signature: string, publicKey: string): boolean {
  if (!isKey(publicKey) || !isKey(signature, 64)) return false;
  const bytes = typeof message === 'string' ? Buffer.from(message) : message;
  try {
    return edVerify(null, bytes, publicKeyObject(publicKey), Buffer.from(signature, 'base64'));
  } catch {
    return false; // not a valid curve point
  }
}

/** tweetnacl's own verification, kept to prove the two agree (tests). */
export function verifyWithTweetnacl(message: string, signature: string, publicKey: string): boolean {
  return nacl.sign.detached.verify(Buffer.from(message), unb64(signature), unb64(publicKey));
}

// ---------------------------------------------------------------- WireGuard (x25519)

export interface WireguardKeyPair {
  privateKey: string;
  publicKey: string;
}

/** A fresh WireGuard key pair, clamped like `wg genkey`. */
export function generateWireguardKeyPair(): WireguardKeyPair {
  const priv = randomBytes(32);
  priv[0]! &= 248;
  priv[31]! &= 127;
  priv[31]! |= 64;
  return { privateKey: b64(priv), publicKey: wireguardPublicKey(b64(priv)) };
}

/** The equivalent of `wg pubkey`. */
export function wireguardPublicKey(privateKey: string): string {
  return b64(nacl.scalarMult.base(unb64(privateKey)));
}

// ---------------------------------------------------------------- tokens

/** A bearer token: a kind prefix and 256 random bits. */
export function generateToken(kind: 'admin' | 'tenant' | 'enroll'): string {
  return `nw${kind[0]}_${randomBytes(32).toString('base64url')}`;
}

export const hashToken = (token: string): string => sha256hex(token);

export function constantTimeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

// ---------------------------------------------------------------- signed requests

export const SIG_HEADERS = {
  host: 'x-netwall-host',
  timestamp: 'x-netwall-timestamp',
  nonce: 'x-netwall-nonce',
  signature: 'x-netwall-signature',
} as const;

/** How far a signed request's timestamp may be from the coordinator's clock. */
export const SIGNATURE_WINDOW_MS = 60_000;

export function requestSigningText(
  method: string,
  pathWithQuery: string,
  body: string | Uint8Array,
  timestamp: string,
  nonce: string,
): string {
  return ['netwall-request-v1', method.toUpperCase(), pathWithQuery, sha256hex(body), timestamp, nonce].join('\n');
}

/** Headers that authenticate one request as host `host`. */
export function signRequest(
  host: string,
  secretKey: string,
  method: string,
  pathWithQuery: string,
  body: string,
  now = Date.now(),
): Record<string, string> {
  const timestamp = String(now);
  const nonce = randomBytes(16).toString('hex');
  const text = requestSigningText(method, pathWithQuery, body, timestamp, nonce);
  return {
    [SIG_HEADERS.host]: host,
    [SIG_HEADERS.timestamp]: timestamp,
    [SIG_HEADERS.nonce]: nonce,
    [SIG_HEADERS.signature]: sign(text, secretKey),
  };
}

// ---------------------------------------------------------------- signed documents

/*
 * Documents can be megabytes (a large tenant's peers and address sets), and
 * tweetnacl hashes in JavaScript; so the signature covers the document's
 * SHA-256 (computed natively), which binds it just as well.
 */
const documentSigningText = (document: string): string => `netwall-document-v1\n${sha256hex(document)}`;

export function signDocument(document: string, secretKey: string): { document: string; signature: string } {
  return { document, signature: sign(documentSigningText(document), secretKey) };
}

export function verifyDocument(signed: { document: string; signature: string }, publicKey: string): boolean {
  return verify(documentSigningText(signed.document), signed.signature, publicKey);
}
