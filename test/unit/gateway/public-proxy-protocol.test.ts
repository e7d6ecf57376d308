import test from 'ava';
import { decodeProxyV2, encodeProxyV2, PP2_TYPE_AUTHORITY, PROXY_V2_SIGNATURE } from '../../../src/gateway/public/proxy-protocol.js';

// Byte layouts from haproxy's doc/proxy-protocol.txt §2.2.
test('TCP over IPv4: byte-exact against the spec', (t) => {
  const h = encodeProxyV2({ source: { address: '192.0.2.1', port: 56324 }, destination: { address: '198.51.100.10', port: 443 } });
  t.deepEqual(
    h.toString('hex'),
    [
      '0d0a0d0a000d0a515549540a', // signature
      '21', // version 2, PROXY
      '11', // AF_INET, STREAM
      '000c', // 12 bytes follow
      'c0000201', // 192.0.2.1
      'c633640a', // 198.51.100.10
      'dc04', // 56324
      '01bb', // 443
    ].join(''),
  );
  t.is(h.length, 28);
  t.deepEqual(decodeProxyV2(h), {
    status: 'ok',
    command: 'PROXY',
    family: 'TCP4',
    addresses: { source: { address: '192.0.2.1', port: 56324 }, destination: { address: '198.51.100.10', port: 443 } },
    tlvs: [],
    length: 28,
  });
});

test('IPv4-mapped IPv6 addresses (dual-stack sockets) are written as IPv4', (t) => {
  const h = encodeProxyV2({ source: { address: '::ffff:203.0.113.7', port: 1 }, destination: { address: '::FFFF:198.51.100.1', port: 2 } });
  t.is(h[13], 0x11);
  t.like(decodeProxyV2(h), { addresses: { source: { address: '203.0.113.7', port: 1 }, destination: { address: '198.51.100.1', port: 2 } } });
});

test('TCP over IPv6: byte-exact, and a mixed pair is written as IPv6', (t) => {
  const h = encodeProxyV2({ source: { address: '2001:db8::1', port: 40000 }, destination: { address: '2001:db8:0:1::2', port: 443 } });
  t.is(
    h.toString('hex'),
    '0d0a0d0a000d0a515549540a' + '21' + '21' + '0024' + '20010db8000000000000000000000001' + '20010db8000000010000000000000002' + '9c40' + '01bb',
  );
  t.like(decodeProxyV2(h), { family: 'TCP6', addresses: { source: { address: '2001:db8::1', port: 40000 }, destination: { address: '2001:db8:0:1::2', port: 443 } } });
  const mixed = encodeProxyV2({ source: { address: '2001:db8::5', port: 1 }, destination: { address: '192.0.2.9', port: 2 } });
  t.like(decodeProxyV2(mixed), { family: 'TCP6', addresses: { destination: { address: '::ffff:c000:209', port: 2 } } });
});

test('unknown addresses give a LOCAL header with no address block', (t) => {
  const h = encodeProxyV2(null);
  t.is(h.toString('hex'), '0d0a0d0a000d0a515549540a' + '20' + '00' + '0000');
  t.like(decodeProxyV2(h), { status: 'ok', command: 'LOCAL', family: 'UNSPEC', addresses: null, length: 16 });
  t.is(encodeProxyV2({ source: { address: 'not-an-ip', port: 1 }, destination: { address: '192.0.2.1', port: 2 } })[12], 0x20);
});

test('TLVs: AUTHORITY after the addresses, length covers them, parsed back', (t) => {
  const h = encodeProxyV2({ source: { address: '192.0.2.1', port: 1000 }, destination: { address: '192.0.2.2', port: 443 } }, [
    { type: PP2_TYPE_AUTHORITY, value: Buffer.from('app.example.test') },
  ]);
  t.is(h.readUInt16BE(14), 12 + 3 + 16);
  t.is(h.subarray(28, 31).toString('hex'), '020010');
  const r = decodeProxyV2(Buffer.concat([h, Buffer.from('payload')]));
  t.is(r.status, 'ok');
  if (r.status !== 'ok') return;
  t.is(r.length, h.length);
  t.deepEqual(r.tlvs, [{ type: 2, value: Buffer.from('app.example.test') }]);
});

test('decoder: incomplete prefixes, bad signature, bad version, truncated TLV', (t) => {
  const h = encodeProxyV2({ source: { address: '192.0.2.1', port: 1 }, destination: { address: '192.0.2.2', port: 2 } });
  for (let n = 0; n < h.length; n++) t.is(decodeProxyV2(h.subarray(0, n)).status, 'incomplete', `prefix ${n}`);
  t.like(decodeProxyV2(Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n')), { status: 'invalid' });
  const v1 = Buffer.from(h);
  v1[12] = 0x11;
  t.like(decodeProxyV2(v1), { status: 'invalid', reason: 'not version 2' });
  const badTlv = Buffer.concat([PROXY_V2_SIGNATURE, Buffer.from([0x21, 0x11, 0, 14]), Buffer.alloc(12), Buffer.from([2, 0])]);
  t.like(decodeProxyV2(badTlv), { status: 'invalid', reason: 'truncated TLV' });
});
