/**
 * `rotate-key --tenant T [--wait SECONDS]`, for every host program (the node
 * agent, the gateway): start a WireGuard key rotation of one tenant interface
 * (the design is in key-rotation.ts). Writes the next private key beside the
 * current one, asks the running daemon to reconcile at once when the program
 * has a socket for it (`notify`: the agent; the gateway instead watches its
 * state directory, key-rotation.ts `watchNextKeys`), and with `--wait` waits
 * until the daemon switched to the new key.
 */
import { NetwallError, ValidationError } from '../errors.js';
import { NAME_RE } from '../names.js';
import { currentKeyFile, pendingNextKey, writeNextKey } from './key-rotation.js';
import { publicKeyOfFile } from './wireguard.js';

export interface RotateKeyOptions {
  stateDir: string;
  tenant: string;
  /** The daemon that applies the key, for the messages: `the agent`, `the gateway`. */
  daemon: string;
  /** Ask the running daemon to reconcile now; absent: it picks the key up at `nextTick`. */
  notify?: () => Promise<void>;
  /** When the daemon picks the key up without (or despite a failed) notify, e.g. `on its next start or tick`. */
  nextTick: string;
  /** Seconds to wait for the switch; 0: do not wait. */
  waitSeconds?: number;
  out?: (line: string) => void;
  /** Poll period while waiting (ms). */
  pollMs?: number;
}

export interface RotateKeyResult {
  tenant: string;
  publicKey: string;
  /** The running daemon was asked to reconcile now (and answered). */
  notified: boolean;
  /** With a wait: the daemon uses the new key (it is the current one and no next key is pending). */
  switched: boolean;
}

function currentPublicKey(stateDir: string, tenant: string): string | null {
  try {
    return publicKeyOfFile(currentKeyFile(stateDir, tenant));
  } catch {
    return null;
  }
}

export async function rotateKey(o: RotateKeyOptions): Promise<RotateKeyResult> {
  if (!NAME_RE.test(o.tenant)) throw new ValidationError(`--tenant: lowercase letters, digits and '-' (1..63), got ${JSON.stringify(o.tenant)}`, 'tenant');
  const out = o.out ?? console.log;
  const { publicKey } = writeNextKey(o.stateDir, o.tenant);
  out(`tenant ${o.tenant}: next WireGuard key ${publicKey} written; ${o.daemon} registers it and switches once the coordinator holds it (the peers get it after the switch)`);
  let notified = false;
  if (o.notify) {
    try {
      await o.notify();
      notified = true;
    } catch (err) {
      out(`${o.daemon} did not answer (${(err as Error).message}): it registers the key ${o.nextTick}`);
    }
  } else {
    out(`${o.daemon} registers the key ${o.nextTick}`);
  }
  let switched = false;
  const wait = o.waitSeconds ?? 0;
  if (wait > 0) {
    const deadline = Date.now() + wait * 1000;
    for (;;) {
      switched = currentPublicKey(o.stateDir, o.tenant) === publicKey && pendingNextKey(o.stateDir, o.tenant) === null;
      if (switched || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, o.pollMs ?? 100));
    }
    if (!switched) throw new NetwallError(`tenant ${o.tenant}: ${o.daemon} has not switched to ${publicKey} within ${wait} s (is it running, and the coordinator reachable?)`);
    out(`tenant ${o.tenant}: switched to ${publicKey}`);
  }
  return { tenant: o.tenant, publicKey, notified, switched };
}
