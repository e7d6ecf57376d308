/** A small two-tenant world for render tests (the same shape as the lab demo). */
import type { HostModel, TenantModel } from '../../../src/coordinator/model.js';
import type { CompiledTenant } from '../../../src/coordinator/render.js';

const key = (c: string) => `${c.repeat(43)}=`;
export const hosts: Record<string, HostModel> = {
  node1: { name: 'node1', kind: 'node', endpointHost: '192.0.2.11' },
  node2: { name: 'node2', kind: 'node', endpointHost: '192.0.2.12' },
  node3: { name: 'node3', kind: 'node', endpointHost: null },
  gateway1: { name: 'gateway1', kind: 'gateway', endpointHost: '192.0.2.21' },
  gateway2: { name: 'gateway2', kind: 'gateway', endpointHost: '192.0.2.22' },
};

export function acme(): TenantModel {
  return {
    id: 1,
    name: 'acme',
    subnet: '10.240.0.0/20',
    members: [
      { host: hosts.node1!, slice: '10.240.0.64/26', address: '10.240.0.65', listenPort: 51820, publicKey: key('A'), nextPublicKey: null },
      { host: hosts.node2!, slice: '10.240.0.128/26', address: '10.240.0.129', listenPort: 51820, publicKey: key('B'), nextPublicKey: null },
      { host: hosts.node3!, slice: '10.240.0.192/26', address: '10.240.0.193', listenPort: 51820, publicKey: null, nextPublicKey: null },
      { host: hosts.gateway1!, slice: '10.240.0.1/32', address: '10.240.0.1', listenPort: 51820, publicKey: key('C'), nextPublicKey: null },
      { host: hosts.gateway2!, slice: '10.240.0.2/32', address: '10.240.0.2', listenPort: 51820, publicKey: key('D'), nextPublicKey: null },
    ],
    workloads: [
      { name: 'acme-web', node: 'node1', address: '10.240.0.66', labels: { app: 'web' } },
      { name: 'acme-db', node: 'node2', address: '10.240.0.130', labels: { app: 'db' } },
      { name: 'acme-batch', node: 'node2', address: '10.240.0.131', labels: { app: 'batch' } },
    ],
    policies: [{ name: 'web-to-db', spec: { from: { app: 'web' }, to: { app: 'db' }, allow: [{ protocol: 'tcp', ports: [5432] }, { protocol: 'icmp' }] } }],
    exposures: [
      {
        name: 'web',
        spec: {
          protocol: 'http',
          hostnames: ['web.acme.test'],
          mode: 'tunnel',
          gateways: ['gateway1', 'gateway2'],
          target: { selector: { app: 'web' }, port: 8080 },
          tls: null,
          publicPort: null,
          proxyProtocol: false,
        },
      },
    ],
    egress: [{ name: 'internet-web', spec: { gateways: ['gateway1'], destinations: [{ cidr: '203.0.113.10/32', protocol: 'tcp', ports: [80] }] } }],
    routerKeys: [{ exposure: 'web', workload: 'acme-web', publicKey: key('R'), credential: { grant: '{"v":1}', signature: 'test-signature' } }],
  };
}

export function globex(): TenantModel {
  return {
    id: 2,
    name: 'globex',
    subnet: '10.240.16.0/20',
    members: [
      { host: hosts.node1!, slice: '10.240.16.64/26', address: '10.240.16.65', listenPort: 51821, publicKey: key('E'), nextPublicKey: null },
      { host: hosts.node2!, slice: '10.240.16.128/26', address: '10.240.16.129', listenPort: 51821, publicKey: key('F'), nextPublicKey: null },
      { host: hosts.gateway1!, slice: '10.240.16.1/32', address: '10.240.16.1', listenPort: 51821, publicKey: key('G'), nextPublicKey: null },
    ],
    workloads: [
      { name: 'globex-app', node: 'node2', address: '10.240.16.130', labels: { app: 'app' } },
      { name: 'globex-db', node: 'node1', address: '10.240.16.66', labels: { app: 'db' } },
    ],
    policies: [{ name: 'app-to-db', spec: { from: { app: 'app' }, to: { app: 'db' }, allow: [{ protocol: 'tcp', ports: ['5432-5433'] }] } }],
    exposures: [
      {
        name: 'app',
        spec: {
          protocol: 'http',
          hostnames: ['app.globex.test'],
          mode: 'mesh',
          gateways: ['gateway1'],
          target: { selector: { app: 'app' }, port: 8080 },
          tls: null,
          publicPort: null,
          proxyProtocol: false,
        },
      },
    ],
    egress: [],
    routerKeys: [],
  };
}

/** Everything a compiled tenant holds, as text (maps as entry lists, sorted lists as arrays): equal text, equal tenant. */
export const dumpCompiled = (c: CompiledTenant): string => JSON.stringify(c, (_k, v: unknown) => (v instanceof Map ? [...v] : v));
