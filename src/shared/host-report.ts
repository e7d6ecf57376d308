/**
 * What every host (node agent, gateway) does after a reconcile: register the
 * WireGuard public keys the coordinator does not have yet, log the errors it
 * did not log last time, and report its status. A coordinator that is down
 * only delays the report; the data plane goes on.
 */
import type { DesiredState } from './desired.js';
import type { HostClient } from './host-client.js';
import type { KeyRegistration } from './dataplane/key-rotation.js';

export class HostReporter {
  private last: string[] = [];

  constructor(
    private readonly client: HostClient,
    private readonly log: (line: string) => void,
  ) {}

  /** The errors of the last report. */
  get errors(): readonly string[] {
    return this.last;
  }

  /** Register each key; returns the failures as error lines. */
  async registerKeys(keys: readonly KeyRegistration[]): Promise<string[]> {
    const errors: string[] = [];
    for (const k of keys) {
      try {
        await this.client.registerKey(k.tenant, k.publicKey, k.inUse);
        this.log(`[netwall] registered WireGuard public key ${k.publicKey} for tenant ${k.tenant} (${k.inUse ? 'in use' : 'next'})`);
      } catch (err) {
        errors.push(`register key ${k.tenant}: ${(err as Error).message}`);
      }
    }
    return errors;
  }

  async report(doc: DesiredState, errors: string[], drops: () => Promise<Record<string, number>>, details: Record<string, unknown>): Promise<void> {
    for (const e of errors) if (!this.last.includes(e)) this.log(`[netwall] error: ${e}`);
    this.last = errors;
    try {
      await this.client.reportStatus({
        appliedVersion: doc.version,
        errors: errors.slice(0, 100).map((e) => e.slice(0, 2000)),
        drops: await drops().catch(() => ({})),
        details,
      });
    } catch {
      // The coordinator is down: the next report will tell.
    }
  }
}
