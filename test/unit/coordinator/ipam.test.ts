import test from 'ava';
import {
  allocateGatewayAddress,
  allocateListenPort,
  allocateNodeSlice,
  allocateTenantSubnet,
  allocateWorkloadAddress,
  nodeAddress,
  validateIpamConfig,
  DEFAULT_IPAM,
} from '../../../src/coordinator/ipam.js';
import { ExhaustedError, ValidationError } from '../../../src/shared/errors.js';
import { cidrsOverlap, parseCidr } from '../../../src/shared/ipv4.js';

const pool = parseCidr('10.240.0.0/12', 'pool');

test('tenant subnets are allocated lowest-first and never overlap, whatever their sizes', (t) => {
  const taken: string[] = [];
  for (const prefix of [20, 24, 20, 16, 24, 22]) taken.push(allocateTenantSubnet(pool, prefix, taken));
  t.deepEqual(taken, ['10.240.0.0/20', '10.240.16.0/24', '10.240.32.0/20', '10.241.0.0/16', '10.240.17.0/24', '10.240.20.0/22']);
  for (let i = 0; i < taken.length; i++)
    for (let j = i + 1; j < taken.length; j++) t.false(cidrsOverlap(parseCidr(taken[i]!, 'a'), parseCidr(taken[j]!, 'b')), `${taken[i]} vs ${taken[j]}`);
});

test('a freed tenant subnet is reused and exhaustion is an ExhaustedError', (t) => {
  const small = parseCidr('10.0.0.0/22', 'pool');
  const a = allocateTenantSubnet(small, 23, []);
  const b = allocateTenantSubnet(small, 23, [a]);
  t.is(b, '10.0.2.0/23');
  const err = t.throws(() => allocateTenantSubnet(small, 23, [a, b]));
  t.true(err instanceof ExhaustedError);
  t.regex(err!.message, /no free \/23/);
  t.is(allocateTenantSubnet(small, 23, [b]), a);
});

test('node slices start at index 1 (index 0 is for gateways)', (t) => {
  const s1 = allocateNodeSlice('10.240.0.0/20', 26, []);
  t.is(s1, '10.240.0.64/26');
  t.is(allocateNodeSlice('10.240.0.0/20', 26, [s1]), '10.240.0.128/26');
  t.is(nodeAddress(s1), '10.240.0.65');
  const all = Array.from({ length: 63 }, (_, i) => `10.240.${Math.floor(((i + 1) * 64) / 256)}.${((i + 1) * 64) % 256}/26`);
  t.throws(() => allocateNodeSlice('10.240.0.0/20', 26, all), { instanceOf: ExhaustedError });
});

test('workload addresses skip network, node address, broadcast, and whatever is taken', (t) => {
  const slice = parseCidr('10.240.0.64/26', 'slice');
  const none = () => false;
  t.is(allocateWorkloadAddress(slice, none, 'n1'), '10.240.0.66');
  const taken = new Set(['10.240.0.66', '10.240.0.67']);
  t.is(allocateWorkloadAddress(slice, (ip) => taken.has(ip), 'n1'), '10.240.0.68');
  const all = new Set(Array.from({ length: 61 }, (_, i) => `10.240.0.${66 + i}`));
  t.false(all.has('10.240.0.127')); // broadcast is never a candidate
  const err = t.throws(() => allocateWorkloadAddress(slice, (ip) => all.has(ip), 'n1'));
  t.true(err instanceof ExhaustedError);
  t.regex(err!.message, /node n1's slice 10\.240\.0\.64\/26 has no free workload address \(all 61 are in use or quarantined/);
});

test('workload allocation is next-fit: it resumes after the last address and wraps', (t) => {
  const slice = parseCidr('10.240.0.64/26', 'slice');
  t.is(allocateWorkloadAddress(slice, () => false, 'n1', '10.240.0.70'), '10.240.0.71');
  t.is(allocateWorkloadAddress(slice, () => false, 'n1', '10.240.0.126'), '10.240.0.66'); // wraps past the broadcast
  t.is(allocateWorkloadAddress(slice, (ip) => ip === '10.240.0.71', 'n1', '10.240.0.70'), '10.240.0.72');
  t.is(allocateWorkloadAddress(slice, () => false, 'n1', '10.9.9.9'), '10.240.0.66'); // a hint outside the slice is ignored
});

test('gateway addresses come from the infrastructure slice', (t) => {
  t.is(allocateGatewayAddress('10.240.0.0/20', 26, []), '10.240.0.1');
  t.is(allocateGatewayAddress('10.240.0.0/20', 26, ['10.240.0.1']), '10.240.0.2');
});

test('listen ports: lowest free at or above the base', (t) => {
  t.is(allocateListenPort(51820, []), 51820);
  t.is(allocateListenPort(51820, [51820, 51822]), 51821);
});

test('config validation and strict CIDR parsing name the field', (t) => {
  t.notThrows(() => validateIpamConfig(DEFAULT_IPAM));
  t.throws(() => validateIpamConfig({ ...DEFAULT_IPAM, slicePrefix: 20 }), { instanceOf: ValidationError, message: /slice prefix/ });
  t.throws(() => parseCidr('10.0.0.1/8', 'cidr'), { message: /cidr: "10.0.0.1\/8" has host bits set; did you mean 10.0.0.0\/8\?/ });
  t.throws(() => parseCidr('300.0.0.0/8', 'x'), { message: /x: "300.0.0.0\/8" is not an IPv4 CIDR/ });
  t.throws(() => parseCidr('10.0.0.0/33', 'x'), { instanceOf: ValidationError });
});
