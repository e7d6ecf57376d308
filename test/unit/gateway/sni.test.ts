import net from 'node:net';
import tls from 'node:tls';
import test from 'ava';
import { parseClientHello, tlsAlert } from '../../../src/gateway/public/sni.js';
import { LOOPBACK, listenLoopback } from './public-helpers.js';

/** The first bytes a real Node/OpenSSL client sends, captured on a loopback server. */
async function captureHello(opts: tls.ConnectionOptions): Promise<Buffer> {
  const server = net.createServer();
  let chunks: Buffer[] = [];
  const got = new Promise<Buffer>((resolve) => {
    server.on('connection', (s) => {
      s.on('data', (c: Buffer) => {
        chunks.push(c);
        const all = Buffer.concat(chunks);
        if (parseClientHello(all).status !== 'incomplete' || all.length > 65536) {
          s.destroy();
          resolve(all);
        }
      });
    });
  });
  const port = await listenLoopback(server);
  const client = tls.connect({ host: LOOPBACK, port, rejectUnauthorized: false, ...opts });
  client.on('error', () => {});
  const out = await got;
  client.destroy();
  await new Promise<void>((r) => server.close(() => r()));
  chunks = [];
  return out;
}

test('SNI and ALPN from real ClientHellos (TLS 1.3 and 1.2)', async (t) => {
  const h13 = await captureHello({ servername: 'App.Example.TEST', ALPNProtocols: ['h2', 'http/1.1'] });
  const r13 = parseClientHello(h13);
  t.like(r13, { status: 'ok', serverName: 'app.example.test', alpn: ['h2', 'http/1.1'], length: h13.length });

  const h12 = await captureHello({ servername: 'legacy.example.test', maxVersion: 'TLSv1.2' });
  t.like(parseClientHello(h12), { status: 'ok', serverName: 'legacy.example.test', alpn: [] });
});

test('no SNI: a client connecting to an IP address sends none', async (t) => {
  const h = await captureHello({});
  t.like(parseClientHello(h), { status: 'ok', serverName: null });
});

test('every strict prefix of a real ClientHello is incomplete, never ok or an exception', async (t) => {
  const h = await captureHello({ servername: 'prefix.example.test' });
  for (let n = 0; n < h.length; n++) {
    const r = parseClientHello(h.subarray(0, n));
    if (r.status !== 'incomplete') t.fail(`prefix ${n}/${h.length}: ${JSON.stringify(r)}`);
  }
  t.pass();
});

test('a ClientHello fragmented over several records is reassembled; trailing records are ignored', async (t) => {
  const h = await captureHello({ servername: 'frag.example.test', ALPNProtocols: ['http/1.1'] });
  const msg = h.subarray(5, 5 + h.readUInt16BE(3));
  const records: Buffer[] = [];
  for (let off = 0; off < msg.length; off += 7) {
    const frag = msg.subarray(off, off + 7);
    const head = Buffer.from([0x16, 0x03, 0x01, 0, 0]);
    head.writeUInt16BE(frag.length, 3);
    records.push(head, frag);
  }
  const ccs = Buffer.from([0x14, 0x03, 0x03, 0x00, 0x01, 0x01]); // a TLS 1.3 client's ChangeCipherSpec after it
  const joined = Buffer.concat([...records, ccs]);
  t.like(parseClientHello(joined, 65536), { status: 'ok', serverName: 'frag.example.test', alpn: ['http/1.1'], length: joined.length - ccs.length });
  // The same with the default 16 KiB cap still fits (records add 5 bytes each).
  t.is(parseClientHello(joined).status, joined.length - ccs.length <= 16384 ? 'ok' : 'invalid');
});

/** Build a ClientHello with the given extensions (type, data). */
function hello(exts: [number, Buffer][], opts: { sessionId?: number; recordVersion?: [number, number] } = {}): Buffer {
  const extBytes = Buffer.concat(
    exts.map(([type, data]) => {
      const h = Buffer.alloc(4);
      h.writeUInt16BE(type, 0);
      h.writeUInt16BE(data.length, 2);
      return Buffer.concat([h, data]);
    }),
  );
  const extLen = Buffer.alloc(2);
  extLen.writeUInt16BE(extBytes.length);
  const sid = opts.sessionId ?? 0;
  const body = Buffer.concat([
    Buffer.from([3, 3]),
    Buffer.alloc(32, 7),
    Buffer.from([sid]),
    Buffer.alloc(Math.min(sid, 64)),
    Buffer.from([0, 2, 0x13, 0x01]),
    Buffer.from([1, 0]),
    extLen,
    extBytes,
  ]);
  const hs = Buffer.concat([Buffer.from([1, body.length >> 16, (body.length >> 8) & 0xff, body.length & 0xff]), body]);
  const [maj, min] = opts.recordVersion ?? [3, 1];
  const rec = Buffer.from([0x16, maj, min, 0, 0]);
  rec.writeUInt16BE(hs.length, 3);
  return Buffer.concat([rec, hs]);
}

function sniExt(...names: [number, string][]): Buffer {
  const entries = Buffer.concat(
    names.map(([type, n]) => {
      const h = Buffer.alloc(3);
      h[0] = type;
      h.writeUInt16BE(Buffer.byteLength(n), 1);
      return Buffer.concat([h, Buffer.from(n, 'latin1')]);
    }),
  );
  const l = Buffer.alloc(2);
  l.writeUInt16BE(entries.length);
  return Buffer.concat([l, entries]);
}

test('synthetic ClientHellos: many extensions, unknown name types, trailing dot', (t) => {
  const grease = Buffer.alloc(0);
  const r = parseClientHello(hello([[0x0a0a, grease], [0x000b, Buffer.from([1, 0])], [0, sniExt([1, 'ignored'], [0, 'Shop.Example.TEST.'])], [0x002b, Buffer.from([2, 3, 4])]]));
  t.like(r, { status: 'ok', serverName: 'shop.example.test' });
  t.like(parseClientHello(hello([])), { status: 'ok', serverName: null, alpn: [] });
});

test('malformed ClientHellos are refused with a reason, never an exception', (t) => {
  const invalid = (buf: Buffer, why: RegExp): void => {
    const r = parseClientHello(buf);
    t.is(r.status, 'invalid', why.source);
    if (r.status === 'invalid') t.regex(r.reason, why);
  };
  invalid(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), /not a TLS handshake/);
  invalid(Buffer.from([0x80, 0x2e, 0x01, 0x03, 0x01]), /SSLv2/);
  invalid(hello([[0, sniExt([0, 'a.test'])], [0, sniExt([0, 'b.test'])]]), /duplicate extension/);
  invalid(hello([[0, sniExt([0, 'a.test'], [0, 'b.test'])]]), /more than one host_name/);
  invalid(hello([[0, sniExt([0, 'bad name.test'])]]), /characters/);
  invalid(hello([[0, sniExt([0, 'nul\0.test'])]]), /characters/);
  invalid(hello([[0, sniExt([0, 'a..test'])]]), /malformed/);
  invalid(hello([[0, sniExt([0, 'x'.repeat(256)])]]), /length/);
  invalid(hello([], { sessionId: 33 }), /session id/);
  invalid(hello([], { recordVersion: [2, 0] }), /record version/);
  // A server_name list length that disagrees with its extension.
  const bad = sniExt([0, 'a.test']);
  bad.writeUInt16BE(bad.length + 5, 0);
  invalid(hello([[0, bad]]), /server_name list length/);
  // An extension claiming more bytes than the hello has.
  const h = hello([[0, sniExt([0, 'a.test'])]]);
  h.writeUInt16BE(0xfff0, h.length - sniExt([0, 'a.test']).length - 2);
  invalid(h, /past its container|does not match/);
  // A non-handshake record, then a handshake message that is not a ClientHello.
  const notHello = hello([]);
  notHello[5] = 2;
  invalid(notHello, /not a ClientHello/);
});

test('oversized claims are refused at once, without waiting for the bytes', (t) => {
  t.like(parseClientHello(Buffer.from([0x16, 3, 1, 0xff, 0xff])), { status: 'invalid' }); // record > 2^14
  t.like(parseClientHello(Buffer.from([0x16, 3, 1, 0x40, 0x00, 1, 0xff, 0xff, 0xff])), { status: 'invalid' }); // 16 MiB message
  t.like(parseClientHello(Buffer.from([0x16, 3, 1, 0x10, 0x00, 1, 0x00, 0x30, 0x00]), 4096), { status: 'invalid' }); // past the cap
  // Many tiny records: the cap counts record headers too.
  const tiny = Buffer.concat(Array.from({ length: 5000 }, () => Buffer.from([0x16, 3, 1, 0, 1, 1])));
  t.is(parseClientHello(tiny, 16384).status, 'invalid');
});

test('random garbage and mutated ClientHellos never throw', async (t) => {
  const real = await captureHello({ servername: 'fuzz.example.test', ALPNProtocols: ['http/1.1'] });
  let seed = 42;
  const rand = (): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x7fffffff;
  };
  for (let i = 0; i < 3000; i++) {
    const buf = i % 2 ? Buffer.from(real) : Buffer.from(Array.from({ length: Math.floor(rand() * 600) }, () => Math.floor(rand() * 256)));
    if (i % 2) for (let k = 0; k < 1 + Math.floor(rand() * 4); k++) buf[Math.floor(rand() * buf.length)] = Math.floor(rand() * 256);
    if (i % 3 === 0 && i % 2 === 0) buf[0] = 0x16;
    const r = parseClientHello(buf);
    t.true(['ok', 'incomplete', 'invalid'].includes(r.status));
    if (r.status === 'ok' && r.serverName !== null) t.regex(r.serverName, /^[a-z0-9._-]+$/);
  }
});

test('the alert is a fatal unrecognized_name record', (t) => {
  t.deepEqual([...tlsAlert()], [0x15, 3, 3, 0, 2, 2, 112]);
});
