/**
 * `netwall-agent rotate-key --tenant T [--wait SECONDS]`: start a WireGuard
 * key rotation of one tenant interface on this node (the design is in
 * src/shared/dataplane/key-rotation.ts). Writes the next private key beside
 * the current one, asks the running agent to reconcile at once (it registers
 * the next public key; without an agent it does so when it starts), and with
 * `--wait` waits until the agent switched to the new key.
 */
import { NetwallError, ValidationError } from '../shared/errors.js';
import { NAME_RE } from '../shared/names.js';
import { currentKeyFile, pendingNextKey, writeNextKey } from '../shared/dataplane/key-rotation.js';
import { publicKeyOfFile } from '../shared/dataplane/wireguard.js';
import { AgentClient, DEFAULT_AGENT_SOCKET } from './socket.js';

export interface RotateKeyOptions {
  stateDir: string;
  tenant: string;
  socket?: string;
  /** Seconds to wait for the switch; 0: do not wait. */
  waitSeconds?: number;
  out?: (line: string) => void;
  /** Poll period while waiting (ms). */
  pollMs?: number;
}

export interface RotateKeyResult {
  tenant: string;
  publicKey: string;
  /** The running agent was asked to reconcile now. */
  agentNotified: boolean;
  /** With a wait: the agent uses the new key (it is the current one and no next key is pending). */
  switched: boolean;
}

function currentPublicKey(stateDir: string, tenant: string): string | null {
  try {
    return publicKeyOfFile(currentKeyFile(stateDir, tenant));
  } catch {
    return null;
  }
}

export async function rotateKeyCommand(o: RotateKeyOptions): Promise<RotateKeyResult> {
  if (!NAME_RE.test(o.tenant)) throw new ValidationError(`--tenant: lowercase letters, digits and '-' (1..63), got ${JSON.stringify(o.tenant)}`, 'tenant');
  const out = o.out ?? console.log;
  const { publicKey } = writeNextKey(o.stateDir, o.tenant);
  out(`tenant ${o.tenant}: next WireGuard key ${publicKey} written; the agent registers it and switches once the coordinator distributes it`);
  let agentNotified = false;
  try {
    await new AgentClient(o.socket ?? DEFAULT_AGENT_SOCKET, 10_000).reconcile();
    agentNotified = true;
  } catch (err) {
    out(`the agent did not answer (${(err as Error).message}): it registers the key on its next start or tick`);
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
    if (!switched) throw new NetwallError(`tenant ${o.tenant}: the agent has not switched to ${publicKey} within ${wait} s (is it running, and the coordinator reachable?)`);
    out(`tenant ${o.tenant}: switched to ${publicKey}`);
  }
  return { tenant: o.tenant, publicKey, agentNotified, switched };
}
