import test from 'ava';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  applyFirewallChange,
  egressElements,
  mergePorts,
  parseCounters,
  planFirewall,
  readDropCounters,
  renderFirewall,
  replaceTransaction,
  tableHash,
  withCounterValues,
  type FirewallOptions,
} from '../../../src/node-agent/nftables.js';
import { cidrRange } from '../../../src/node-agent/routes.js';
import { SYSTEM_PATH } from '../../../src/node-agent/wgproc.js';
import type { DesiredState } from '../../../src/shared/desired.js';
import { FakeRunner } from '../../../src/shared/runner.js';
import { emptyNode, large, twoTenants } from './dataplane-fixtures.js';

const goldenDir = join(dirname(fileURLToPath(import.meta.url)), '../../golden/node-agent');

/** Compare with test/golden/node-agent/NAME; `UPDATE_GOLDEN=1` rewrites it. */
function golden(name: string, actual: string): string | null {
  const path = join(goldenDir, name);
  if (process.env.UPDATE_GOLDEN === '1') {
    mkdirSync(goldenDir, { recursive: true });
    writeFileSync(path, actual);
    return null;
  }
  if (!existsSync(path)) return `golden file ${path} is missing: run with UPDATE_GOLDEN=1 to create it`;
  const expected = readFileSync(path, 'utf8');
  return expected === actual ? null : `rendered text differs from ${path}; if the change is intended, rerun with UPDATE_GOLDEN=1`;
}

/** The real nftables binary (under npx, PATH finds @vercel/nft's `nft` first), or null. */
const NFT = SYSTEM_PATH.split(':').map((d) => join(d, 'nft')).find((p) => existsSync(p)) ?? null;

/** `nft -c` (check only, changes nothing) needs root and the binary. */
function nftCheck(text: string): string | null | 'skip' {
  if (process.getuid?.() !== 0 || !NFT) return 'skip';
  const dir = mkdtempSync(join(tmpdir(), 'nwt-nft-'));
  try {
    const file = join(dir, 'table.nft');
    writeFileSync(file, replaceTransaction(text));
    execFileSync(NFT, ['-c', '-f', file], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
    return null;
  } catch (err) {
    return String((err as { stderr?: Buffer }).stderr ?? err);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const cases: [string, () => DesiredState, FirewallOptions][] = [
  ['empty-node.nft', emptyNode, {}],
  ['two-tenants.nft', twoTenants, { underlay: { restrictInput: true, interfaces: ['eth0'] }, agentPorts: [7301] }],
  ['large.nft', () => large(3, 120, 6, 10), {}],
];

for (const [name, doc, options] of cases) {
  test(`golden: ${name}`, (t) => {
    const { text } = renderFirewall(doc(), options);
    const problem = golden(name, text);
    t.is(problem, null, problem ?? '');
  });

  test(`nft -c accepts ${name}`, (t) => {
    const result = nftCheck(renderFirewall(doc(), options).text);
    if (result === 'skip') {
      t.log('skipped: needs root and nft');
      t.pass();
      return;
    }
    t.is(result, null, result ?? '');
  });
}

test('the nft -c check is real: it rejects a broken table', (t) => {
  const broken = renderFirewall(twoTenants()).text.replace('goto drop_policy', 'goto no_such_chain');
  const result = nftCheck(broken);
  if (result === 'skip') {
    t.pass();
    return;
  }
  t.truthy(result, 'nft -c accepted a table that jumps to a missing chain');
});

test('rendering is deterministic and the hash is in the table comment', (t) => {
  const a = renderFirewall(twoTenants());
  const b = renderFirewall(twoTenants());
  t.is(a.text, b.text);
  t.is(tableHash(a.text), a.hash);
  const changed = twoTenants();
  changed.tenants[0]!.firewall.rules.pop();
  t.not(renderFirewall(changed).hash, a.hash);
});

test('underlay input is left alone unless restricted; ssh stays open when restricted', (t) => {
  const open = renderFirewall(twoTenants()).text;
  t.false(open.includes('underlay_input'));
  const closed = renderFirewall(twoTenants(), { underlay: { restrictInput: true } }).text;
  t.regex(closed, /set underlay_tcp \{\n\t\ttype inet_service\n\t\telements = \{ 22 \}/);
  t.regex(closed, /\t\tgoto underlay_input\n/);
  t.regex(closed, /udp dport @wg_ports accept/);
});

/** Rules are the lines inside chains that are not chain headers, comments or closing braces. */
function countRules(text: string): number {
  let inChain = false;
  let n = 0;
  for (const line of text.split('\n')) {
    if (/^\tchain /.test(line)) inChain = true;
    else if (line === '\t}') inChain = false;
    else if (inChain && !/^\t\t(type |#)/.test(line)) n++;
  }
  return n;
}

test('scale: 10,000 workloads and 1,000 policies give O(policies) rules, not O(workloads)', (t) => {
  const started = Date.now();
  const big = renderFirewall(large(10, 1000, 50, 100));
  const small = renderFirewall(large(10, 10, 50, 100));
  t.log(`rendered ${big.text.length} bytes in ${Date.now() - started} ms`);
  const bigRules = countRules(big.text);
  t.is(bigRules, countRules(small.text), 'the rule count must not depend on the number of workloads');
  // Two chains per tenant, each with every policy rule, plus a constant frame.
  t.true(bigRules <= 2 * 1000 + 10 * 10 + 60, `rules: ${bigRules}`);
  t.true(big.text.includes('"nwc'), 'workloads are set elements');
});

test('nft -c accepts the 10,000-workload table', (t) => {
  const result = nftCheck(renderFirewall(large(10, 1000, 50, 100)).text);
  if (result === 'skip') {
    t.pass();
    return;
  }
  t.is(result, null, result ?? '');
});

test('egress elements are disjoint and cover exactly the allow list', (t) => {
  const allows = twoTenants().tenants[0]!.egress.allow;
  const { l4, icmp } = egressElements(allows);
  t.deepEqual(icmp, ['203.0.113.0/24']);
  const parsed = l4.map((e) => {
    const [addr = '', proto, port = ''] = e.split(' . ');
    const [a, b = a] = addr.split('-');
    const [p, q = p] = port.split('-');
    return { first: cidrRange(a!).first, last: cidrRange(b!).first, proto, from: Number(p), to: Number(q) };
  });
  for (const [i, x] of parsed.entries()) {
    for (const y of parsed.slice(i + 1)) {
      const overlap = x.proto === y.proto && x.first <= y.last && y.first <= x.last && x.from <= y.to && y.from <= x.to;
      t.false(overlap, `${JSON.stringify(x)} overlaps ${JSON.stringify(y)}`);
    }
  }
  const allowed = (ip: string, proto: string, port: number): boolean =>
    parsed.some((e) => e.proto === proto && e.first <= cidrRange(ip).first && cidrRange(ip).first <= e.last && e.from <= port && port <= e.to);
  t.true(allowed('203.0.113.10', 'tcp', 8080));
  t.true(allowed('203.0.113.10', 'tcp', 443));
  t.true(allowed('203.0.113.200', 'tcp', 80));
  t.false(allowed('203.0.113.200', 'tcp', 8080));
  t.true(allowed('198.51.100.53', 'udp', 53));
  t.false(allowed('198.51.100.53', 'tcp', 53));
  t.false(allowed('192.0.2.1', 'tcp', 80));
});

test('mergePorts joins overlapping and adjacent ranges; empty means all', (t) => {
  t.deepEqual(mergePorts([{ from: 80, to: 80 }, { from: 81, to: 90 }, { from: 22, to: 22 }, { from: 85, to: 100 }]), [
    { from: 22, to: 22 },
    { from: 80, to: 100 },
  ]);
  t.deepEqual(mergePorts([]), [{ from: 0, to: 65535 }]);
});

test('planFirewall: missing, changed, unverified, drift, up to date', (t) => {
  const desired = renderFirewall(twoTenants());
  const live = `${desired.text}`;
  const memory = { hash: desired.hash, listing: live };
  t.is(planFirewall(desired, { listing: null }, null)[0]?.reason, 'missing');
  t.is(planFirewall(desired, { listing: renderFirewall(emptyNode()).text }, memory)[0]?.reason, 'changed');
  t.is(planFirewall(desired, { listing: live }, null)[0]?.reason, 'unverified');
  t.is(planFirewall(desired, { listing: live.replace(/\t\tct state invalid goto drop_invalid\n/, '') }, memory)[0]?.reason, 'drift');
  t.deepEqual(planFirewall(desired, { listing: live }, memory), []);
});

test('counters survive a replace and are read per reason', (t) => {
  const json = JSON.stringify({
    nftables: [{ metainfo: {} }, { counter: { name: 'd_spoof', packets: 7, bytes: 420 } }, { counter: { name: 'other', packets: 1 } }],
  });
  t.deepEqual(parseCounters(json), { spoof: { packets: 7, bytes: 420 } });
  const text = withCounterValues(renderFirewall(emptyNode()).text, parseCounters(json));
  t.true(text.includes('\tcounter d_spoof { packets 7 bytes 420 }'));
  t.true(text.includes('\tcounter d_policy { }'));
});

test('applyFirewallChange: one atomic transaction, logged, then recorded from the kernel', async (t) => {
  const desired = renderFirewall(twoTenants());
  const runner = new FakeRunner()
    .expect(['nft', '-j', 'list', 'counters', 'table', 'inet', 'netwall'], { exitCode: 1, stderr: 'No such file or directory' })
    .expect(['nft', '-f', '-'])
    .expect(['nft', '-s', 'list', 'table', 'inet', 'netwall'], { stdout: 'KERNEL LISTING' });
  const lines: string[] = [];
  const [change] = planFirewall(desired, { listing: null }, null);
  const memory = await applyFirewallChange(change!, runner, (l) => lines.push(l));
  t.deepEqual(memory, { hash: desired.hash, listing: 'KERNEL LISTING' });
  t.deepEqual(runner.pending(), []);
  const input = runner.calls[1]?.input ?? '';
  t.true(input.startsWith('table inet netwall {}\ndelete table inet netwall\ntable inet netwall {\n'));
  t.regex(lines[0] ?? '', /^\[#\] nft -f - # replace table inet netwall \(missing/);
});

test('readDropCounters returns packets per reason', async (t) => {
  const runner = new FakeRunner().expect(['nft', '-j', 'list', 'counters', 'table', 'inet', 'netwall'], {
    stdout: JSON.stringify({ nftables: [{ counter: { name: 'd_policy', packets: 2, bytes: 120 } }] }),
  });
  t.deepEqual(await readDropCounters(runner), { policy: 2 });
});
