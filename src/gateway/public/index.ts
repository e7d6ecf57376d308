/** The gateway's public side: listeners, routing, limits, PROXY protocol, SNI. */
export { PublicGateway } from './gateway.js';
export type { PublicGatewayOptions, PublicPorts, UpdateResult } from './gateway.js';
export type { ClientAddress, PublicLog, Upstream } from './types.js';
export { PublicRouter, exposureKey, hostFromHeader, normalizeHostname } from './routes.js';
export type { RouteConflict, TlsMode } from './routes.js';
export { DEFAULT_LIMITS, resolveLimits, clientKey, RateLimiter } from './limits.js';
export type { PublicLimits } from './limits.js';
export { PublicMetrics, renderPrometheus } from './metrics.js';
export type { PublicMetricsSnapshot, ExposureCounters, RejectReason } from './metrics.js';
export { encodeProxyV2, decodeProxyV2, PROXY_V2_SIGNATURE, PP2_TYPE_AUTHORITY } from './proxy-protocol.js';
export type { ProxyAddresses, ProxyTlv, ProxyV2Parse } from './proxy-protocol.js';
export { parseClientHello, tlsAlert, ALERT_UNRECOGNIZED_NAME } from './sni.js';
export type { ClientHelloResult } from './sni.js';
export { CertStore, loadCertDirectory } from './tls.js';
export type { CertificatePair } from './tls.js';
