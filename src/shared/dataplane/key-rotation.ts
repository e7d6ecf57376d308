/**
 * WireGuard key rotation of a host's tenant interface, without a restart and
 * with (almost) no lost packets.
 *
 * Files in the state directory, each mode 0600, generated on this host
 * (private keys never leave it):
 *   wg-T.key        the current private key: what the interface uses
 *   wg-T.next.key   the next one (written by `netwall-agent rotate-key` or
 *                   `netwall-gateway rotate-key`: rotate-key-command.ts)
 *
 * The order of events, decided each tick by `keyDecision` (pure):
 *  1. the next key exists and the signed document still names the current key:
 *     register the next public key with the coordinator, keep using the current
 *     private key (peers still know only the current one);
 *  2. the coordinator bumps every member of the tenant at once; our document
 *     now names the next key: promote it (current := next, the old private key
 *     is overwritten, the next file removed) before reconciling, so this very
 *     reconcile applies it (`wg set IF private-key`);
 *  3. the peers apply their documents (the same version bump) at about the same
 *     moment. Whoever applies second completes the handshake: both sides kick a
 *     handshake at once (`handshakeKicks` in wireguard.ts) instead of waiting
 *     for WireGuard's 5 s retry. Lost traffic ≈ the difference of the two apply
 *     times plus one round trip.
 * The current key is never registered again while a next key waits: a stale
 * document (naming the current key) only makes us register the next one.
 */
import { existsSync, readFileSync, unlinkSync, watch, type FSWatcher } from 'node:fs';
import { join } from 'node:path';
import { generateWireguardKeyPair } from '../crypto.js';
import type { DesiredState } from '../desired.js';
import { NetwallError } from '../errors.js';
import { writeFileAtomic } from '../fsutil.js';
import type { ChangeLogger } from '../runner.js';
import { ensureTenantKey, publicKeyOfFile } from './wireguard.js';

export const currentKeyFile = (dir: string, tenant: string): string => join(dir, `wg-${tenant}.key`);
export const nextKeyFile = (dir: string, tenant: string): string => join(dir, `wg-${tenant}.next.key`);

export interface KeyState {
  /** The public key the coordinator has for us (our own entry in the signed document); null before the first registration. */
  registered: string | null;
  /** Public key of the current private key file; null when there is none yet. */
  current: string | null;
  /** Public key of the next private key file; null when no rotation is pending. */
  next: string | null;
}

export interface KeyDecision {
  /** Make the next key the current one now (before this tick's reconcile applies it). */
  promote: boolean;
  /** The public key to register with the coordinator, if any. */
  register: string | null;
}

/**
 * What to do with a tenant's keys (pure):
 *  - document names the next key → promote it (nothing to register);
 *  - document names the current key → register the next one if pending;
 *  - neither → register the next key if present, else the current one.
 * A next key with no current key beside it is promoted at once (nothing uses it yet).
 */
export function keyDecision(k: KeyState): KeyDecision {
  if (k.next !== null && k.registered === k.next) return { promote: true, register: null };
  if (k.next !== null && k.current === null) return { promote: true, register: k.next };
  if (k.current !== null && k.registered === k.current) return { promote: false, register: k.next };
  return { promote: false, register: k.next ?? k.current };
}

function readKey(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

/**
 * Start a rotation: write a new private key as the tenant's next key (0600),
 * replacing a pending one. The current key must exist (the host serves the
 * tenant). Returns the new public key.
 */
export function writeNextKey(dir: string, tenant: string): { publicKey: string; file: string } {
  if (!existsSync(currentKeyFile(dir, tenant))) {
    throw new NetwallError(`no WireGuard key for tenant "${tenant}" in ${dir}: this host does not serve it (yet)`);
  }
  const pair = generateWireguardKeyPair();
  const file = nextKeyFile(dir, tenant);
  writeFileAtomic(file, `${pair.privateKey}\n`, 0o600);
  return { publicKey: pair.publicKey, file };
}

const NEXT_KEY_NAME = /^wg-(.+)\.next\.key$/;

/**
 * Call `onNextKey(tenant)` when a next key appears in `dir` (a `rotate-key`
 * run), for a daemon with no control socket to be told through. Null when the
 * directory cannot be watched (the caller falls back to its interval).
 */
export function watchNextKeys(dir: string, onNextKey: (tenant: string) => void): FSWatcher | null {
  try {
    const w = watch(dir, (_event, name) => {
      const m = typeof name === 'string' ? NEXT_KEY_NAME.exec(name) : null;
      if (m) onNextKey(m[1]!);
    });
    w.on('error', () => w.close());
    return w;
  } catch {
    return null;
  }
}

/** The next key replaces the current one: written atomically, then the next file is removed if it still holds what we promoted. */
export function promoteNextKey(dir: string, tenant: string): string | null {
  const next = nextKeyFile(dir, tenant);
  const text = readKey(next);
  if (text === null) return null;
  writeFileAtomic(currentKeyFile(dir, tenant), text, 0o600);
  // A rotate-key that wrote a newer next key meanwhile keeps it (it will be registered next).
  if (readKey(next) === text) unlinkSync(next);
  return publicKeyOfFile(currentKeyFile(dir, tenant));
}

/** Is a rotation pending for the tenant (a next key waiting)? */
export function pendingNextKey(dir: string, tenant: string): string | null {
  const next = nextKeyFile(dir, tenant);
  return existsSync(next) ? publicKeyOfFile(next) : null;
}

/**
 * Before a reconcile: for each tenant of the document, create the current key
 * if missing, promote a next key the document already names, and return the
 * public keys to register with the coordinator (never the current key while a
 * next one is pending).
 */
export function settleTenantKeys(dir: string, doc: DesiredState, log: ChangeLogger): { tenant: string; publicKey: string }[] {
  const out: { tenant: string; publicKey: string }[] = [];
  for (const t of doc.tenants) {
    const current = ensureTenantKey(dir, t.tenant).publicKey;
    const next = pendingNextKey(dir, t.tenant);
    const d = keyDecision({ registered: t.publicKey, current, next });
    if (d.promote) {
      const now = promoteNextKey(dir, t.tenant);
      log(`[netwall] tenant ${t.tenant}: the coordinator distributes the next WireGuard key ${now ?? '?'}; switching to it`);
    }
    if (d.register !== null) out.push({ tenant: t.tenant, publicKey: d.register });
  }
  return out;
}
