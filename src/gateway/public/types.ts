/** What the public side needs from the rest of the gateway. */
import type { Duplex } from 'node:stream';
import type { GatewayExposure } from '../../shared/desired.js';

export interface ClientAddress {
  address: string;
  port: number;
}

/**
 * How bytes reach an entry point. The public side does not care whether it
 * is a stream on a router client's tunnel or a TCP connection over the mesh.
 */
export interface Upstream {
  /** Open a byte stream to one live entry point of this exposure (tunnel stream or mesh TCP connection); reject if none is live. */
  open(exposure: GatewayExposure, client: ClientAddress): Promise<Duplex>;
}

/** Structured events for the gateway's log (connection-level noise is counted in metrics, not logged). */
export type PublicLog = (event: string, fields: Record<string, unknown>) => void;
