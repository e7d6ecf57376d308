/** Raw TCP exposures: one listener per public port, each connection spliced to an upstream stream. */
import type { Socket } from 'node:net';
import type { ConnInfo, PublicCore } from './core.js';
import { Rejection } from './core.js';
import { encodeProxyV2 } from './proxy-protocol.js';
import { exposureKey } from './routes.js';
import { splice } from './splice.js';

export function acceptTcp(core: PublicCore, socket: Socket, info: Omit<ConnInfo, 'proto'>, publicPort: number): void {
  const { metrics, limits } = core;
  // Looked up per connection: an update() applies to the next connection.
  const exposure = core.router.byPort(publicPort);
  if (!exposure) {
    metrics.reject('unknown_host');
    socket.destroy();
    return;
  }
  const key = exposureKey(exposure);
  // Hold the client's bytes in the socket until the stream is there.
  socket.pause();
  core.openStream(exposure, info.client).then(
    (stream) => {
      if (socket.destroyed) {
        stream.close();
        return;
      }
      if (exposure.proxyProtocol) stream.duplex.write(encodeProxyV2({ source: info.client, destination: info.local }));
      metrics.exposure(key).connections++;
      splice(socket, stream.duplex, {
        idleTimeoutMs: limits.idleTimeoutMs,
        halfOpenTimeoutMs: limits.halfOpenTimeoutMs,
        onBytes: (a, b) => metrics.bytes(key, a, b),
        onIdle: () => metrics.reject('idle_timeout', key),
        onClose: () => stream.close(),
      });
    },
    (err: unknown) => {
      metrics.reject(err instanceof Rejection ? err.reason : 'upstream_unavailable', key);
      socket.destroy();
    },
  );
}
