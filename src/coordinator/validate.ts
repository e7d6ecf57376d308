/**
 * Checks that JSON Schema cannot express (port ranges, protocol-specific
 * fields, CIDRs), turning a validated body into the normalised spec stored.
 */
import { ValidationError } from '../shared/errors.js';
import { isIpv4, parseCidr } from '../shared/ipv4.js';
import { parsePorts } from '../shared/ports.js';
import type { EgressSpec, ExposureSpec, PolicySpec, PortSpec } from './model.js';

/** Public listener ports the gateway owns for HTTP and TLS exposures. */
export const RESERVED_PUBLIC_PORTS = [80, 443];

/** Check one protocol/ports entry; `field` names it, e.g. `allow[2]`. */
function checkPortSpec(a: PortSpec, field: string): PortSpec {
  if (a.protocol === 'icmp') {
    if (a.ports?.length) throw new ValidationError(`${field}.ports: icmp has no ports`, `${field}.ports`);
    return { protocol: 'icmp' };
  }
  parsePorts(a.ports, `${field}.ports`);
  return a.ports?.length ? { protocol: a.protocol, ports: a.ports } : { protocol: a.protocol };
}

export function normalizePolicy(body: PolicySpec): PolicySpec {
  return { from: body.from, to: body.to, allow: body.allow.map((a, i) => checkPortSpec(a, `allow[${i}]`)) };
}

export function normalizeExposure(body: Partial<ExposureSpec> & Pick<ExposureSpec, 'protocol' | 'mode' | 'gateways' | 'target'>): ExposureSpec {
  const hostnames = body.hostnames ?? [];
  for (const [i, h] of hostnames.entries()) {
    // An address is not a name: claiming a gateway's own IP would capture its bare-IP traffic.
    if (isIpv4(h)) throw new ValidationError(`hostnames[${i}]: "${h}" is an IP address, not a hostname`, `hostnames[${i}]`);
  }
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
      return { cidr: d.cidr, ...checkPortSpec({ protocol: d.protocol, ports: d.ports }, `destinations[${i}]`) };
    }),
  };
}
