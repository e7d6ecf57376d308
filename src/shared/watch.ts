/**
 * The host side of desired state: start from the cached document (so the data
 * plane is enforced even when the coordinator is down), then long-poll for
 * newer ones, verifying each and caching it before handing it on. Failures
 * back off exponentially with full jitter.
 */
import type { DesiredState } from './desired.js';
import type { HostClient } from './host-client.js';
import { loadCachedDocument, saveCachedDocument } from './host-state.js';
import { backoffMs, LoopControl } from './loop.js';

export interface WatchOptions {
  client: HostClient;
  stateDir: string;
  coordinatorKey: string;
  log: (line: string) => void;
  /** Called with each new document, in order; errors are logged, the document stays current. */
  onDocument: (state: DesiredState) => Promise<void>;
  waitSeconds?: number;
  /** Backoff bounds, ms. */
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

export class DesiredStateWatcher {
  private readonly loop = new LoopControl();
  current: DesiredState | null = null;
  /** Last contact with the coordinator failed. */
  offline = false;

  constructor(private readonly o: WatchOptions) {}

  /** Apply the cached document, if any; returns it. */
  async startFromCache(): Promise<DesiredState | null> {
    try {
      const cached = loadCachedDocument(this.o.stateDir, this.o.coordinatorKey);
      if (cached) {
        this.o.log(`[netwall] applying cached desired state version ${cached.state.version}`);
        await this.deliver(cached.state);
      }
      return this.current;
    } catch (err) {
      this.o.log(`[netwall] ignoring cached desired state: ${(err as Error).message}`);
      return null;
    }
  }

  /** Long-poll until stop(). */
  async run(): Promise<void> {
    const min = this.o.minBackoffMs ?? 500;
    const max = this.o.maxBackoffMs ?? 30_000;
    let failures = 0;
    while (!this.loop.stopped) {
      try {
        const got = await this.o.client.desired(this.current?.version ?? 0, this.o.waitSeconds ?? 25, this.loop.signal);
        if (this.offline) this.o.log('[netwall] coordinator reachable again');
        this.offline = false;
        failures = 0;
        if (got && got.state.version > (this.current?.version ?? 0)) {
          saveCachedDocument(this.o.stateDir, got.signed);
          await this.deliver(got.state);
        }
      } catch (err) {
        if (this.loop.stopped) break;
        failures++;
        if (!this.offline || failures === 1) this.o.log(`[netwall] desired state: ${(err as Error).message}; keeping version ${this.current?.version ?? 'none'}`);
        this.offline = true;
        await this.loop.sleep(backoffMs(failures, min, max));
      }
    }
  }

  stop(): void {
    this.loop.stop();
  }

  private async deliver(state: DesiredState): Promise<void> {
    this.current = state;
    try {
      await this.o.onDocument(state);
    } catch (err) {
      this.o.log(`[netwall] applying version ${state.version} failed: ${(err as Error).message}`);
    }
  }
}

