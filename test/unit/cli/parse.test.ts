import test from 'ava';
import {
  parseAllowRules,
  parseDuration,
  parseEgressDestination,
  parseInteger,
  parseLabel,
  parseLabels,
  parsePortList,
  parsePortSpec,
  UsageError,
} from '../../../src/cli/parse.js';

test('parseLabel splits key=value, allows an empty value', (t) => {
  t.deepEqual(parseLabel('app=web'), ['app', 'web']);
  t.deepEqual(parseLabel('app.kubernetes.io/name=db'), ['app.kubernetes.io/name', 'db']);
  t.deepEqual(parseLabel('flag='), ['flag', '']);
});

test('parseLabel refuses malformed labels, naming the flag and text', (t) => {
  for (const bad of ['app', '=web', 'app=we b', 'a pp=web', 'app=web=x']) {
    const err = t.throws(() => parseLabel(bad, '--from'), { instanceOf: UsageError });
    t.true(err.message.startsWith(`--from '${bad}'`), err.message);
  }
});

test('parseLabels merges repeated and comma-separated labels; * is the empty selector', (t) => {
  t.deepEqual(parseLabels(['app=web', 'tier=front,env=prod']), { app: 'web', tier: 'front', env: 'prod' });
  t.deepEqual(parseLabels(['app=web', 'app=web']), { app: 'web' });
  t.deepEqual(parseLabels(['*']), {});
  t.deepEqual(parseLabels([]), {});
  t.throws(() => parseLabels(['app=web', 'app=db']), { instanceOf: UsageError, message: /label 'app' given twice/ });
});

test('parsePortSpec: protocols, single ports, lists and ranges', (t) => {
  t.deepEqual(parsePortSpec('tcp:80'), { protocol: 'tcp', ports: [80] });
  t.deepEqual(parsePortSpec('tcp:8000-8080'), { protocol: 'tcp', ports: ['8000-8080'] });
  t.deepEqual(parsePortSpec('udp:53'), { protocol: 'udp', ports: [53] });
  t.deepEqual(parsePortSpec('tcp:80,443,9000-9001'), { protocol: 'tcp', ports: [80, 443, '9000-9001'] });
  t.deepEqual(parsePortSpec('tcp:80-80'), { protocol: 'tcp', ports: [80] });
  t.deepEqual(parsePortSpec('icmp'), { protocol: 'icmp' });
  t.deepEqual(parsePortSpec('TCP'), { protocol: 'tcp' });
});

test('parsePortSpec refuses bad specs with a message naming the spec', (t) => {
  const cases: [string, RegExp][] = [
    ['sctp:80', /unknown protocol 'sctp'/],
    ['tcp:0', /out of range/],
    ['tcp:65536', /out of range/],
    ['tcp:http', /not a port number/],
    ['tcp:90-80', /runs backwards/],
    ['tcp:', /missing ports/],
    ['icmp:8', /icmp has no ports/],
    ['tcp:80,', /not a port number/],
  ];
  for (const [spec, re] of cases) {
    const err = t.throws(() => parsePortSpec(spec), { instanceOf: UsageError });
    t.regex(err.message, re, spec);
    t.true(err.message.includes(`'${spec}'`), err.message);
  }
});

test('parsePortList keeps the wire form: numbers and "from-to" strings', (t) => {
  t.deepEqual(parsePortList('22,8000-8080', '--allow'), [22, '8000-8080']);
});

test('parseAllowRules merges by protocol in order of appearance (the API example)', (t) => {
  t.deepEqual(parseAllowRules(['tcp:5432', 'tcp:8000-8080', 'icmp']), [
    { protocol: 'tcp', ports: [5432, '8000-8080'] },
    { protocol: 'icmp' },
  ]);
  t.deepEqual(parseAllowRules(['udp:53', 'tcp:443', 'tcp:80', 'tcp:443']), [
    { protocol: 'udp', ports: [53] },
    { protocol: 'tcp', ports: [80, 443] },
  ]);
  // A protocol given without ports means all its ports, whatever else was said.
  t.deepEqual(parseAllowRules(['tcp:80', 'tcp']), [{ protocol: 'tcp' }]);
  t.deepEqual(parseAllowRules(['tcp', 'tcp:80']), [{ protocol: 'tcp' }]);
});

test('parseEgressDestination: PROTO:CIDR[:PORTS]', (t) => {
  t.deepEqual(parseEgressDestination('tcp:203.0.113.10/32:80'), { cidr: '203.0.113.10/32', protocol: 'tcp', ports: [80] });
  t.deepEqual(parseEgressDestination('udp:192.0.2.0/24:53,5353'), { cidr: '192.0.2.0/24', protocol: 'udp', ports: [53, 5353] });
  t.deepEqual(parseEgressDestination('tcp:198.51.100.0/24:8000-8080'), { cidr: '198.51.100.0/24', protocol: 'tcp', ports: ['8000-8080'] });
  t.deepEqual(parseEgressDestination('icmp:0.0.0.0/0'), { cidr: '0.0.0.0/0', protocol: 'icmp' });
  t.deepEqual(parseEgressDestination('tcp:203.0.113.10/32'), { cidr: '203.0.113.10/32', protocol: 'tcp' });
  t.deepEqual(parseEgressDestination('tcp:203.0.113.10:443'), { cidr: '203.0.113.10/32', protocol: 'tcp', ports: [443] });
  t.deepEqual(parseEgressDestination('tcp:2001:db8::/32:443'), { cidr: '2001:db8::/32', protocol: 'tcp', ports: [443] });
});

test('parseEgressDestination refuses bad destinations', (t) => {
  for (const [text, re] of [
    ['203.0.113.10/32', /expected PROTO:CIDR/],
    ['tcp:example.com:80', /expected a CIDR/],
    ['gre:10.0.0.0/8', /unknown protocol/],
    ['icmp:10.0.0.0/8:1', /icmp has no ports/],
    ['tcp:10.0.0.0/8:', /missing ports/],
    ['tcp:10.0.0.0/8:99999', /out of range/],
  ] as const) {
    t.throws(() => parseEgressDestination(text), { instanceOf: UsageError, message: re }, text);
  }
});

test('parseInteger and parseDuration', (t) => {
  t.is(parseInteger('20', '--prefix-length', 0, 32), 20);
  t.throws(() => parseInteger('x', '--limit'), { instanceOf: UsageError, message: "--limit: expected a whole number, got 'x'" });
  t.throws(() => parseInteger('-1', '--limit'), { instanceOf: UsageError });
  t.throws(() => parseInteger('33', '--prefix-length', 0, 32), { message: /out of range 0-32/ });
  t.is(parseDuration('3600'), 3600);
  t.is(parseDuration('90s'), 90);
  t.is(parseDuration('15m'), 900);
  t.is(parseDuration('12h'), 43200);
  t.is(parseDuration('30d'), 2592000);
  t.throws(() => parseDuration('1w'), { instanceOf: UsageError, message: /--ttl/ });
  t.throws(() => parseDuration('0'), { instanceOf: UsageError });
});
