/**
 * The stop switch of a long-poll loop: `stopped`, an AbortSignal for the
 * request in flight, and a sleep that stop() cuts short.
 */
export class LoopControl {
  stopped = false;
  private readonly controller = new AbortController();
  private wake?: () => void;

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  stop(): void {
    this.stopped = true;
    this.controller.abort();
    this.wake?.();
  }
}

/** Exponential backoff with full jitter: uniform in [0, min(maxMs, minMs · 2^(failures-1))]. */
export const backoffMs = (failures: number, minMs: number, maxMs: number): number =>
  Math.random() * Math.min(maxMs, minMs * 2 ** Math.min(Math.max(failures - 1, 0), 16));
