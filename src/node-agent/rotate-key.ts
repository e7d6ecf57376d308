/**
 * `netwall-agent rotate-key --tenant T [--wait SECONDS]`: start a WireGuard
 * key rotation of one tenant interface on this node (the command itself is
 * src/shared/dataplane/rotate-key-command.ts, the design key-rotation.ts).
 * Writes the next private key beside the current one, asks the running agent
 * over its socket to reconcile at once (it registers the next public key;
 * without an agent it does so when it starts), and with `--wait` waits until
 * the agent switched to the new key.
 */
import { rotateKey, type RotateKeyOptions as SharedOptions } from '../shared/dataplane/rotate-key-command.js';
import { AgentClient, DEFAULT_AGENT_SOCKET } from './socket.js';

export interface RotateKeyOptions extends Pick<SharedOptions, 'stateDir' | 'tenant' | 'waitSeconds' | 'out' | 'pollMs'> {
  /** The running agent's socket (default DEFAULT_AGENT_SOCKET). */
  socket?: string;
}

export interface RotateKeyResult {
  tenant: string;
  publicKey: string;
  /** The running agent was asked to reconcile now. */
  agentNotified: boolean;
  /** With a wait: the agent uses the new key (it is the current one and no next key is pending). */
  switched: boolean;
}

export async function rotateKeyCommand(o: RotateKeyOptions): Promise<RotateKeyResult> {
  const { socket, ...rest } = o;
  const r = await rotateKey({
    ...rest,
    daemon: 'the agent',
    notify: () => new AgentClient(socket ?? DEFAULT_AGENT_SOCKET, 10_000).reconcile().then(() => undefined),
    nextTick: 'on its next start or tick',
  });
  return { tenant: r.tenant, publicKey: r.publicKey, agentNotified: r.notified, switched: r.switched };
}
