import test from 'ava';
import {
  Block,
  cell,
  formatAllowRules,
  formatCounts,
  formatDestination,
  formatDetail,
  formatLabels,
  formatPortRule,
  formatTime,
  renderFields,
  renderTable,
} from '../../../src/cli/format.js';
import { parseAllowRules, parseEgressDestination } from '../../../src/cli/parse.js';

const cols = [
  { header: 'name', value: (r: { name: string; subnet?: string | null }) => r.name },
  { header: 'subnet', value: (r: { name: string; subnet?: string | null }) => r.subnet },
];

test('renderTable aligns columns, upper-cases headers, leaves no trailing blanks', (t) => {
  const out = renderTable(cols, [
    { name: 'acme', subnet: '10.100.0.0/20' },
    { name: 'globex-corp', subnet: null },
  ]);
  t.is(out, ['NAME          SUBNET', 'acme          10.100.0.0/20', 'globex-corp   -'].join('\n'));
  for (const line of out.split('\n')) t.is(line, line.trimEnd());
});

test('renderTable of no rows is the header alone; indent is applied to each line', (t) => {
  t.is(renderTable(cols, []), 'NAME   SUBNET');
  t.is(renderTable(cols, [{ name: 'a', subnet: 'b' }], '  '), '  NAME   SUBNET\n  a      b');
});

test('cell: dash for nothing, arrays joined, control characters neutralised', (t) => {
  t.is(cell(null), '-');
  t.is(cell(undefined), '-');
  t.is(cell(''), '-');
  t.is(cell(0), '0');
  t.is(cell(false), 'false');
  t.is(cell(['gateway1', 'gateway2']), 'gateway1, gateway2');
  t.is(cell({ a: 1 }), '{"a":1}');
  t.is(cell('two\nlines'), 'two lines');
  t.is(cell('evil\u001b[31mred'), 'evil?[31mred');
});

test('renderFields aligns values and places blocks under their key', (t) => {
  t.is(
    renderFields([
      ['Name', 'acme'],
      ['Subnet', '10.100.0.0/20'],
      ['Errors', undefined],
    ]),
    'Name:    acme\nSubnet:  10.100.0.0/20\nErrors:  -',
  );
  t.is(renderFields([['Tenants', new Block('  A   B\n  x   y')]]), 'Tenants:\n  A   B\n  x   y');
});

test('formatLabels: sorted k=v list, * for the empty selector', (t) => {
  t.is(formatLabels({ tier: 'front', app: 'web' }), 'app=web,tier=front');
  t.is(formatLabels({}), '*');
  t.is(formatLabels(undefined), '-');
});

test('formatAllowRules prints what --allow takes, and round-trips the parser', (t) => {
  const rules = [{ protocol: 'tcp', ports: [5432, '8000-8080'] }, { protocol: 'icmp' }];
  t.is(formatAllowRules(rules), 'tcp:5432,8000-8080 icmp');
  t.deepEqual(parseAllowRules(formatAllowRules(rules).split(' ')), rules);
  t.is(formatAllowRules([]), '-');
  t.is(formatAllowRules(undefined), '-');
  // Ranges the server may answer as objects.
  t.is(formatPortRule({ protocol: 'udp', ports: [{ from: 53, to: 53 }, { from: 60000, to: 61000 }] }), 'udp:53,60000-61000');
});

test('formatDestination prints what egress --allow takes, and round-trips the parser', (t) => {
  for (const text of ['tcp:203.0.113.10/32:80', 'udp:192.0.2.0/24:53,5353', 'icmp:0.0.0.0/0', 'tcp:10.0.0.0/8:8000-8080']) {
    t.is(formatDestination(parseEgressDestination(text)), text);
  }
});

test('formatTime: UTC, seconds, Z; epoch ms too; odd values shown as given', (t) => {
  t.is(formatTime('2025-03-04T05:06:07.890Z'), '2025-03-04 05:06:07Z');
  t.is(formatTime(0), '1970-01-01 00:00:00Z');
  t.is(formatTime(null), '-');
  t.is(formatTime('soon'), 'soon');
});

test('formatCounts sorts keys', (t) => {
  t.is(formatCounts({ spoof: 2, policy: 5 }), 'policy=5 spoof=2');
  t.is(formatCounts({}), '-');
  t.is(formatCounts(null), '-');
});

test('formatDetail: objects as key=value pairs', (t) => {
  t.is(formatDetail({ subnet: '10.0.0.0/20', force: true, gateways: ['g1'] }), 'subnet=10.0.0.0/20 force=true gateways=["g1"]');
  t.is(formatDetail({}), '-');
  t.is(formatDetail(null), '-');
  t.is(formatDetail('text'), 'text');
});
