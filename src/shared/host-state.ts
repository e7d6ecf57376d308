/**
 * What a node or gateway keeps on disk, in its state directory (mode 0700):
 *   identity.json   name, kind, ed25519 key pair, coordinator URL and key (0600)
 *   desired.json    the last good signed document, verified before use (0600)
 * The private identity key never leaves this directory.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { generateSigningKeyPair, isKey } from './crypto.js';
import type { DesiredState, HostKind, SignedDocument } from './desired.js';
import { ConflictError, NetwallError } from './errors.js';
import { writeFileAtomic } from './fsutil.js';
import { enroll, parseSignedDocument, type HostIdentity } from './host-client.js';

export interface StoredIdentity extends HostIdentity {
  publicKey: string;
}

export function ensureStateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
}

const identityPath = (dir: string) => join(dir, 'identity.json');
const cachePath = (dir: string) => join(dir, 'desired.json');

export function loadIdentity(dir: string): StoredIdentity {
  const path = identityPath(dir);
  if (!existsSync(path)) throw new NetwallError(`${path} not found: enroll this host first`);
  if ((statSync(path).mode & 0o077) !== 0) throw new NetwallError(`${path} is readable by group/others; chmod 600 it`);
  const id = JSON.parse(readFileSync(path, 'utf8')) as StoredIdentity;
  if (!isKey(id.publicKey) || !isKey(id.secretKey, 64) || !isKey(id.coordinatorKey)) throw new NetwallError(`${path}: not a netwall identity`);
  return id;
}

/**
 * Enroll once: make an ed25519 identity here, register its public key with
 * the coordinator using the single-use token, and keep the coordinator's
 * document-signing key for later verification.
 */
export async function enrollHost(
  dir: string,
  kind: HostKind,
  input: { coordinatorUrl: string; token: string; name: string; endpoint?: string; mgmtAddress?: string; publicAddress?: string },
): Promise<StoredIdentity> {
  ensureStateDir(dir);
  if (existsSync(identityPath(dir))) {
    const existing = loadIdentity(dir);
    if (existing.name === input.name && existing.coordinatorUrl === input.coordinatorUrl) return existing;
    throw new ConflictError(`${identityPath(dir)} already holds the identity of "${existing.name}"; use another --state-dir or remove it`);
  }
  const keys = generateSigningKeyPair();
  const answer = await enroll(input.coordinatorUrl, {
    token: input.token,
    name: input.name,
    kind,
    identityKey: keys.publicKey,
    ...(input.endpoint ? { endpoint: input.endpoint } : {}),
    ...(input.mgmtAddress ? { mgmtAddress: input.mgmtAddress } : {}),
    ...(input.publicAddress ? { publicAddress: input.publicAddress } : {}),
  });
  if (answer.kind !== kind) throw new NetwallError(`the coordinator enrolled this host as a ${answer.kind}, not a ${kind}`);
  const id: StoredIdentity = {
    name: answer.name,
    kind,
    publicKey: keys.publicKey,
    secretKey: keys.secretKey,
    coordinatorUrl: input.coordinatorUrl,
    coordinatorKey: answer.coordinatorKey,
  };
  writeFileAtomic(identityPath(dir), `${JSON.stringify(id, null, 2)}\n`, 0o600);
  return id;
}

/** The cached document, if present and signed by our coordinator (else null, with the reason logged by the caller). */
export function loadCachedDocument(dir: string, coordinatorKey: string): { signed: SignedDocument; state: DesiredState } | null {
  const path = cachePath(dir);
  if (!existsSync(path)) return null;
  const signed = JSON.parse(readFileSync(path, 'utf8')) as SignedDocument;
  return { signed, state: parseSignedDocument(signed, coordinatorKey) };
}

export function saveCachedDocument(dir: string, signed: SignedDocument): void {
  writeFileAtomic(cachePath(dir), JSON.stringify(signed), 0o600);
}
