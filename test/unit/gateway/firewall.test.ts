import test from 'ava';
import { GATEWAY_TABLE, renderGatewayFirewall, type GatewayFirewallOptions } from '../../../src/gateway/firewall.js';
import { desiredRouting } from '../../../src/shared/dataplane/routes.js';
import type { DesiredState, GatewayExposure } from '../../../src/shared/desired.js';
import { golden } from '../../helpers/golden.js';
import { nftCheck } from '../../helpers/nft.js';
import { peer, tenant, testKey } from '../node-agent/dataplane-fixtures.js';

const OPTIONS: GatewayFirewallOptions = { listenerPorts: [80, 443], adminTcpPorts: [22] };

function exposure(tenantName: string, name: string, extra: Partial<GatewayExposure>): GatewayExposure {
  return {
    tenant: tenantName,
    name,
    mode: 'tunnel',
    protocol: 'http',
    hostnames: [`${name}.${tenantName}.test`],
    publicPort: null,
    tls: null,
    proxyProtocol: false,
    targets: [],
    routerClients: [],
    ...extra,
  };
}

/** gateway1: acme's egress leaves here and its web is a tunnel exposure; globex's app is a mesh exposure plus a TCP port, its egress leaves elsewhere. */
function gatewayDoc(): DesiredState {
  const acme = tenant('acme', 1, {
    slice: '10.1.0.1/32',
    address: '10.1.0.1',
    peers: [peer('node1', 11, ['10.1.1.1/32', '10.1.1.0/24']), peer('gateway1', 1, ['10.1.0.1/32'], { kind: 'gateway' })],
    egress: {
      gateway: { host: 'gateway1', meshAddress: '10.1.0.1' },
      allow: [
        { rule: 'internet', cidr: '203.0.113.10/32', protocol: 'tcp', ports: [{ from: 80, to: 80 }] },
        { rule: 'ping', cidr: '203.0.113.0/24', protocol: 'icmp', ports: [] },
      ],
    },
  });
  const globex = tenant('globex', 2, {
    slice: '10.2.0.1/32',
    address: '10.2.0.1',
    listenPort: 51900,
    peers: [peer('node2', 12, ['10.2.2.1/32', '10.2.2.0/24'])],
    egress: { gateway: { host: 'gateway2', meshAddress: '10.2.0.2' }, allow: [{ rule: 'x', cidr: '198.51.100.0/24', protocol: 'tcp', ports: [] }] },
  });
  return {
    schema: 1,
    kind: 'gateway',
    host: 'gateway1',
    version: 3,
    settings: { mtu: 1420, statusIntervalSeconds: 30, keepaliveSeconds: null },
    tenants: [globex, acme],
    exposures: [
      exposure('acme', 'web', {
        targets: [
          { workload: 'web-1', node: 'node1', address: '10.1.1.10', port: 8080 },
          // Selected but no router key registered yet: not admitted.
          { workload: 'web-2', node: 'node1', address: '10.1.1.11', port: 8080 },
        ],
        routerClients: [{ workload: 'web-1', node: 'node1', publicKey: testKey(40) }],
      }),
      exposure('globex', 'app', { mode: 'mesh', targets: [{ workload: 'app', node: 'node2', address: '10.2.2.10', port: 8080 }] }),
      exposure('globex', 'db', { mode: 'mesh', protocol: 'tcp', hostnames: [], publicPort: 5432, targets: [{ workload: 'db', node: 'node2', address: '10.2.2.11', port: 5432 }] }),
    ],
    networks: [],
  };
}

test('golden: gateway table', (t) => {
  golden(t, 'gateway/gateway1.nft', renderGatewayFirewall(gatewayDoc(), OPTIONS).text);
});

test('nft -c accepts the gateway table', (t) => {
  const result = nftCheck(renderGatewayFirewall(gatewayDoc(), OPTIONS).text, GATEWAY_TABLE);
  if (result === 'skip') return t.pass('needs root and nft');
  t.is(result, null, result ?? '');
});

test('only listed tunnel entry points may dial the router server, through their own tenant interface', (t) => {
  const text = renderGatewayFirewall(gatewayDoc(), OPTIONS).text;
  const routers = /set router_clients \{[^}]*elements = \{([^}]*)\}/.exec(text)?.[1] ?? '';
  t.is(routers.trim(), '"nw-acme" . 10.1.1.10');
  t.notRegex(text, /10\.1\.1\.11/, 'a target with no registered router key is not admitted');
  t.notRegex(routers, /10\.2\.2\./, 'a mesh exposure has no router clients');
});

test('public ports: the listeners, the admin port and the TCP exposures; nothing else', (t) => {
  const text = renderGatewayFirewall(gatewayDoc(), OPTIONS).text;
  t.regex(text, /set public_tcp \{\n\t\ttype inet_service\n\t\telements = \{ 22,\s*80,\s*443,\s*5432 \}/);
  const noAdmin = renderGatewayFirewall(gatewayDoc(), { listenerPorts: [80], adminTcpPorts: [] }).text;
  t.regex(noAdmin, /set public_tcp \{\n\t\ttype inet_service\n\t\telements = \{ 80,\s*5432 \}/);
});

test('egress is allowed and masqueraded only for the tenants whose egress gateway this is', (t) => {
  const text = renderGatewayFirewall(gatewayDoc(), OPTIONS).text;
  t.regex(text, /"nw-acme" : jump eg_acme/);
  t.regex(text, /203\.0\.113\.10 \. tcp \. 80/);
  t.notRegex(text, /eg_globex|198\.51\.100/, 'globex egress leaves through gateway2');
  t.regex(text, /set egress_nets \{[^}]*10\.1\.0\.0\/16[^}]*\}/);
  t.notRegex(/set egress_nets \{[^}]*\}/.exec(text)?.[0] ?? '', /10\.2\./);
});

test('the hash follows the structure and not the order of the document', (t) => {
  const a = renderGatewayFirewall(gatewayDoc(), OPTIONS);
  const reordered = gatewayDoc();
  reordered.tenants.reverse();
  t.is(renderGatewayFirewall(reordered, OPTIONS).hash, a.hash);
  const other = gatewayDoc();
  other.exposures[0]!.routerClients = [];
  t.not(renderGatewayFirewall(other, OPTIONS).hash, a.hash);
});

test('a gateway routes its peers slices into the mesh but never its egress destinations', (t) => {
  const routing = desiredRouting(gatewayDoc());
  t.deepEqual(routing.rules, [], 'no policy rule: egress leaves the gateway through its own default route');
  t.true(routing.routes.some((r) => r.dst === '10.1.1.0/24' && r.dev === 'nw-acme'));
  t.false(routing.routes.some((r) => r.dst.startsWith('203.0.113.') || r.dst.startsWith('198.51.100.')));
});
