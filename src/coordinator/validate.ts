/**
 * Checks that JSON Schema cannot express (port ranges, protocol-specific
 * fields, CIDRs), turning a validated body into the normalised spec stored.
 */
import { ValidationError } from '../shared/errors.js';
import { parseCidr } from '../shared/ipv4.js';
import { parsePorts } from '../shared/ports.js';
import type { EgressSpec, ExposureSpec, PolicySpec, PortSpec } from './model.js';

/** Public listener ports the gateway owns for HTTP and TLS exposures. */
export const RESERVED_PUBLIC_PORTS = [80, 443];

function checkAllow(allow: PortSpec[], field: string): PortSpec[] {
  return allow.map((a, i) => {
    if (a.protocol === 'icmp') {
      if (a.ports?.length) throw new ValidationError(`${field}[${i}].ports: icmp has no ports`, `${field}[${i}].ports`);
      return { protocol: 'icmp' };
    }
    parsePorts(a.ports, `${field}[${i}].ports`);
    return a.ports?.length ? { protocol: a.protocol, ports: a.ports } : { protocol: a.protocol };
  });
}

export function normalizePolicy(body: PolicySpec): PolicySpec {
  return { from: body.from, to: body.to, allow: checkAllow(body.allow, 'allow') };
}

export function normalizeExposure(body: Partial<ExposureSpec> & Pick<ExposureSpec, 'protocol' | 'mode' | 'gateways' | 'target'>): ExposureSpec {
  const hostnames = body.hostnames ?? [];
  const publicPort = body.publicPort ?? null;
  const tls = body.tls ?? null;
  if (body.protocol === 'tcp') {
    if (publicPort === null) throw new ValidationError('publicPort: required for a tcp exposure', 'publicPort');
    if (RESERVED_PUBLIC_PORTS.includes(publicPort)) {
      throw new ValidationError(`publicPort: ${publicPort} is reserved for the gateway's HTTP/TLS listeners`, 'publicPort');
    }
    if (hostnames.length) throw new ValidationError('hostnames: a tcp exposure is routed by port, not hostname', 'hostnames');
    if (tls !== null) throw new ValidationError('tls: only for protocol "tls"', 'tls');
  } else {
    if (hostnames.length === 0) throw new ValidationError(`hostnames: at least one is required for a ${body.protocol} exposure`, 'hostnames');
    if (publicPort !== null) throw new ValidationError(`publicPort: only for tcp exposures (${body.protocol} uses ${body.protocol === 'http' ? 80 : 443})`, 'publicPort');
    if (body.protocol === 'tls' && tls === null) throw new ValidationError('tls: "passthrough" or "terminate" is required for a tls exposure', 'tls');
    if (body.protocol === 'http' && tls !== null) throw new ValidationError('tls: only for protocol "tls"', 'tls');
  }
  return {
    protocol: body.protocol,
    hostnames: [...hostnames].sort(),
    mode: body.mode,
    gateways: [...body.gateways].sort(),
    target: body.target,
    tls,
    publicPort,
    proxyProtocol: body.proxyProtocol ?? false,
  };
}

export function normalizeEgress(body: EgressSpec): EgressSpec {
  return {
    gateways: [...body.gateways].sort(),
    destinations: body.destinations.map((d, i) => {
      parseCidr(d.cidr, `destinations[${i}].cidr`);
      const [allowed] = checkAllow([{ protocol: d.protocol, ports: d.ports }], `destinations[${i}]`);
      return { cidr: d.cidr, ...allowed! };
    }),
  };
}
