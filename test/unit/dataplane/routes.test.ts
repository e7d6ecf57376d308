import test from 'ava';
import {
  NETWALL_RULE_PRIORITY,
  desiredRouting,
  egressTables,
  normalizeCidr,
  parseRoutes,
  parseRules,
  planRoutes,
  routeCommand,
} from '../../../src/shared/dataplane/routes.js';
import { twoTenants } from '../node-agent/dataplane-fixtures.js';

test('normalizeCidr canonicalises addresses and networks', (t) => {
  t.is(normalizeCidr('10.1.2.3'), '10.1.2.3/32');
  t.is(normalizeCidr('10.1.2.3/24'), '10.1.2.0/24');
  t.is(normalizeCidr('default'), '0.0.0.0/0');
  t.throws(() => normalizeCidr('10.1.2/24'));
  t.throws(() => normalizeCidr('10.1.2.3/33'));
});

test('peer routes go to the main table; egress destinations only to the tenant table', (t) => {
  const doc = twoTenants();
  const { routes, rules } = desiredRouting(doc);
  const table = String(egressTables(['acme', 'beta-corp']).get('acme'));
  const text = routes.map((r) => `${r.table} ${r.dst} ${r.dev}`).sort();
  t.deepEqual(text, ([
    `${table} 198.51.100.53/32 nw-acme`,
    `${table} 203.0.113.0/24 nw-acme`,
    'main 10.1.2.0/24 nw-acme',
    'main 10.1.2.1/32 nw-acme',
    'main 10.1.255.1/32 nw-acme',
    'main 10.2.2.0/24 nw-beta-corp',
    'main 10.2.2.1/32 nw-beta-corp',
  ]).sort());
  t.deepEqual(rules, [{ from: '10.1.1.0/24', table, priority: NETWALL_RULE_PRIORITY }]);
});

test('egress tables are stable per tenant and unique', (t) => {
  const a = egressTables(['acme', 'beta']);
  const b = egressTables(['zeta', 'beta', 'acme']);
  t.is(a.get('acme'), b.get('acme'));
  const many = egressTables(Array.from({ length: 2000 }, (_, i) => `t${i}`));
  t.is(new Set(many.values()).size, 2000);
});

test('parse only netwall routes (nw-* unicast) and rules (our priority)', (t) => {
  const routes = parseRoutes(
    JSON.stringify([
      { dst: 'default', gateway: '192.0.2.254', dev: 'eth0' },
      { dst: '10.1.2.0/24', dev: 'nw-acme', flags: [] },
      { dst: '10.1.2.1', dev: 'nw-acme' },
      { dst: '203.0.113.0/24', dev: 'nw-acme', table: '1000123' },
      { type: 'local', dst: '10.1.1.1', dev: 'nw-acme', table: 'local', protocol: 'kernel' },
      { dst: '10.1.1.10', dev: 'nwc0123456789a' },
    ]),
  );
  t.deepEqual(routes, [
    { dst: '10.1.2.0/24', dev: 'nw-acme', table: 'main' },
    { dst: '10.1.2.1/32', dev: 'nw-acme', table: 'main' },
    { dst: '203.0.113.0/24', dev: 'nw-acme', table: '1000123' },
  ]);
  const rules = parseRules(
    JSON.stringify([
      { priority: 0, src: 'all', table: 'local' },
      { priority: NETWALL_RULE_PRIORITY, src: '10.1.1.0', srclen: 24, table: '1000123' },
      { priority: 32766, src: 'all', table: 'main' },
    ]),
  );
  t.deepEqual(rules, [{ from: '10.1.1.0/24', table: '1000123', priority: NETWALL_RULE_PRIORITY }]);
});

test('planRoutes: replace missing or moved, delete stale, skip routes of deleted links', (t) => {
  const desired = desiredRouting(twoTenants());
  t.deepEqual(planRoutes(desired, desired), []);
  const observed = {
    routes: [
      ...desired.routes.slice(1),
      { dst: '10.9.0.0/24', dev: 'nw-acme', table: 'main' },
      { dst: '10.8.0.0/24', dev: 'nw-old', table: 'main' },
      { ...desired.routes[2]!, dev: 'nw-beta-corp' },
    ].filter((r, i) => i !== 1),
    rules: [{ from: '10.7.1.0/24', table: '1000001', priority: NETWALL_RULE_PRIORITY }],
  };
  const changes = planRoutes(desired, observed, new Set(['nw-old']));
  t.deepEqual(
    changes.map((c) => routeCommand(c).join(' ')),
    [
      `ip route replace ${desired.routes[0]!.dst} dev nw-acme`,
      `ip route replace ${desired.routes[2]!.dst} dev nw-acme`,
      `ip rule add from 10.1.1.0/24 lookup ${desired.rules[0]!.table} priority ${NETWALL_RULE_PRIORITY}`,
      'ip route del 10.9.0.0/24 dev nw-acme',
      `ip rule del from 10.7.1.0/24 lookup 1000001 priority ${NETWALL_RULE_PRIORITY}`,
    ],
  );
});
