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
 * The order of events, decided each tick by `keyDecision` (pure), with the
 * coordinator's side in store.ts `registerKey`:
 *  1. the next key exists and the signed document still names the current key:
 *     register the next public key with the coordinator, keep using the current
 *     private key (peers know only the current one);
 *  2. the coordinator holds it as our next key: our own document names it, our
 *     peers' documents do not yet (`peerKey` still names the current one). We
 *     promote it (current := next, the old private key is overwritten, the next
 *     file removed) before reconciling, so this very reconcile applies it
 *     (`wg set IF private-key`) and kicks a handshake — which the peers, not
 *     knowing the key, drop; WireGuard then starts no other one for 5 s;
 *  3. after that reconcile we register the key again: it is in use. The
 *     coordinator gives it to every member; each peer applies it and kicks a
 *     handshake at once, which we answer. Only the peers initiate in this
 *     window, so no two initiations cross: crossing ones leave both sides
 *     waiting for the other's data until WireGuard's 5 s retry (it happened
 *     in about one rotation in 25 when both sides switched on the same document).
 *     Traffic waits (queued by WireGuard) for our report plus the peers'
 *     document round trip.
 * The current key is never registered again while a next key waits: a stale
 * document (naming the current key) only makes us register the next one. A
 * confirmation that did not reach the coordinator is sent again at the next
 * tick (our document then names our key, but `peerKey` another).
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
  /** The key our own entry in the signed document names (what we are to use; during a rotation our next key); null before the first registration. */
  registered: string | null;
  /** The key our peers have for us (`peerKey`; documents of older coordinators: `registered`). */
  known: string | null;
  /** Public key of the current private key file; null when there is none yet. */
  current: string | null;
  /** Public key of the next private key file; null when no rotation is pending. */
  next: string | null;
}

export interface KeyDecision {
  /** Make the next key the current one now (before this tick's reconcile applies it). */
  promote: boolean;
  /** The public key to register with the coordinator (after this tick's reconcile), if any. */
  register: string | null;
  /** It is the key in use (after this tick's reconcile), not a next one waiting. */
  inUse: boolean;
}

/** A key for the coordinator (store.ts `registerKey`). */
export interface KeyRegistration {
  tenant: string;
  publicKey: string;
  inUse: boolean;
}

/**
 * What to do with a tenant's keys (pure):
 *  - document names the next key → promote it, and register it in use once
 *    applied (the confirmation that gives it to the peers);
 *  - otherwise a next key pending → register it as the next key (never the
 *    current one while it waits);
 *  - no rotation → register the current key in use unless the document names
 *    it and the peers have it.
 * A next key with no current key beside it is promoted at once (nothing uses it yet).
 */
export function keyDecision(k: KeyState): KeyDecision {
  if (k.next !== null && (k.registered === k.next || k.current === null)) return { promote: true, register: k.next, inUse: true };
  if (k.next !== null) return { promote: false, register: k.next, inUse: false };
  if (k.current !== null && (k.registered !== k.current || k.known !== k.current)) return { promote: false, register: k.current, inUse: true };
  return { promote: false, register: null, inUse: true };
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
export function settleTenantKeys(dir: string, doc: DesiredState, log: ChangeLogger): KeyRegistration[] {
  const out: KeyRegistration[] = [];
  for (const t of doc.tenants) {
    const current = ensureTenantKey(dir, t.tenant).publicKey;
    const next = pendingNextKey(dir, t.tenant);
    const d = keyDecision({ registered: t.publicKey, known: t.peerKey === undefined ? t.publicKey : t.peerKey, current, next });
    if (d.promote) {
      const now = promoteNextKey(dir, t.tenant);
      log(`[netwall] tenant ${t.tenant}: the coordinator holds the next WireGuard key ${now ?? '?'}; switching to it (the peers get it once we confirm)`);
    }
    if (d.register !== null) out.push({ tenant: t.tenant, publicKey: d.register, inUse: d.inUse });
  }
  return out;
}
