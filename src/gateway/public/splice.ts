/**
 * Join two byte streams both ways with backpressure (pipe), half-close (an
 * end on one side ends the other's writable side, the other direction keeps
 * flowing), one idle timer for both directions, byte counting, and exactly
 * one `onClose` when both are gone. An abrupt close or error on either side
 * destroys the other.
 */
import type { Duplex } from 'node:stream';

export interface SpliceOptions {
  /** 0 = no idle timeout. */
  idleTimeoutMs: number;
  /**
   * Once one direction has ended (half-close), the idle timeout becomes this
   * (if shorter): a peer that never finishes its side cannot hold the pair.
   */
  halfOpenTimeoutMs?: number;
  onBytes?: (fromClient: number, toClient: number) => void;
  onIdle?: () => void;
  onClose?: () => void;
}

export function splice(client: Duplex, upstream: Duplex, opts: SpliceOptions): { destroy: () => void } {
  let last = performance.now();
  let timer: NodeJS.Timeout | null = null;
  let closed = 0;
  let done = false;

  const destroy = (): void => {
    client.destroy();
    upstream.destroy();
  };
  let limit = opts.idleTimeoutMs;
  const arm = (ms: number): void => {
    if (timer) clearTimeout(timer);
    if (done) return;
    timer = setTimeout(() => {
      const idle = performance.now() - last;
      if (idle >= limit) {
        opts.onIdle?.();
        destroy();
      } else arm(limit - idle);
    }, ms);
    timer.unref();
  };
  if (limit > 0) arm(limit);
  const halfClosed = (): void => {
    const h = opts.halfOpenTimeoutMs ?? 0;
    if (h > 0 && (limit === 0 || h < limit)) {
      limit = h;
      arm(Math.max(0, limit - (performance.now() - last)));
    }
  };
  client.once('end', halfClosed);
  upstream.once('end', halfClosed);

  client.on('data', (c: Buffer) => {
    last = performance.now();
    opts.onBytes?.(c.length, 0);
  });
  upstream.on('data', (c: Buffer) => {
    last = performance.now();
    opts.onBytes?.(0, c.length);
  });
  client.on('error', destroy);
  upstream.on('error', destroy);

  const onClose = (self: Duplex, other: Duplex) => (): void => {
    // A side that closed without ending its readable side cleanly died: the other goes too.
    if (!self.readableEnded) other.destroy();
    else if (!other.writableEnded) other.end();
    closed++;
    if (closed === 2 && !done) {
      done = true;
      if (timer) clearTimeout(timer);
      timer = null;
      opts.onClose?.();
    }
  };
  client.once('close', onClose(client, upstream));
  upstream.once('close', onClose(upstream, client));
  // When both directions have ended the streams close themselves (allowHalfOpen
  // sockets close after end + finish); make sure generic Duplexes do too.
  const maybeDone = (): void => {
    if (client.readableEnded && upstream.readableEnded && client.writableFinished && upstream.writableFinished) destroy();
  };
  for (const s of [client, upstream]) {
    s.on('end', maybeDone);
    s.on('finish', maybeDone);
  }

  client.pipe(upstream);
  upstream.pipe(client);
  return { destroy };
}
