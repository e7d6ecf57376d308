import test from 'ava';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { removeCniConfig, renderCniConfig, syncCniConfigs, writeCniConfig } from '../../../src/node-agent/cni-config.js';
import { installCniPlugin, renderCniWrapper, shellQuote } from '../../../src/node-agent/cni/install.js';
import { parseNetConf } from '../../../src/node-agent/cni/plugin.js';

function tmp(t: { teardown: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'nw-cniconf-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('renderCniConfig: a 1.0.0 conflist the plugin itself accepts', (t) => {
  const c = renderCniConfig({ tenant: 'acme', mtu: 1420, labels: { tier: 'front', app: 'web' } });
  t.deepEqual(c, {
    cniVersion: '1.0.0',
    name: 'netwall-acme',
    plugins: [
      {
        type: 'netwall',
        tenant: 'acme',
        agentSocket: '/run/netwall/agent.sock',
        mtu: 1420,
        args: { cni: { labels: [{ key: 'app', value: 'web' }, { key: 'tier', value: 'front' }] } },
      },
    ],
  });
  // What libcni hands the plugin: the plugin object plus name and cniVersion.
  const conf = parseNetConf(JSON.stringify({ cniVersion: c.cniVersion, name: c.name, ...c.plugins[0] }));
  t.deepEqual(conf.labels, { app: 'web', tier: 'front' });
  t.is(conf.tenant, 'acme');
});

test('renderCniConfig: validation', (t) => {
  t.throws(() => renderCniConfig({ tenant: 'Acme' }), { message: /tenant/ });
  t.throws(() => renderCniConfig({ tenant: 'acme', networkName: 'other' }), { message: /networkName/ });
  t.throws(() => renderCniConfig({ tenant: 'acme', agentSocket: 'rel.sock' }), { message: /agentSocket/ });
  t.throws(() => renderCniConfig({ tenant: 'acme', mtu: 10 }), { message: /mtu/ });
  t.throws(() => renderCniConfig({ tenant: 'acme', labels: { 'a b': 'c' } }), { message: /label key/ });
});

test('writeCniConfig / syncCniConfigs: 0644, unchanged is not rewritten, strays removed, foreign files kept', (t) => {
  const dir = tmp(t);
  const a = writeCniConfig({ tenant: 'acme', dir });
  t.is(a.path, join(dir, 'netwall-acme.conflist'));
  t.true(a.changed);
  t.is(statSync(a.path).mode & 0o777, 0o644);
  t.false(writeCniConfig({ tenant: 'acme', dir }).changed);
  writeFileSync(join(dir, '87-podman-bridge.conflist'), '{}');
  writeCniConfig({ tenant: 'old', dir });
  const r = syncCniConfigs([{ tenant: 'acme' }, { tenant: 'beta', mtu: 1380 }], dir);
  t.deepEqual(r, { written: [join(dir, 'netwall-beta.conflist')], removed: [join(dir, 'netwall-old.conflist')] });
  t.true(existsSync(join(dir, '87-podman-bridge.conflist')));
  t.is(JSON.parse(readFileSync(join(dir, 'netwall-beta.conflist'), 'utf8')).plugins[0].mtu, 1380);
  t.true(removeCniConfig('netwall-beta', dir));
  t.false(removeCniConfig('netwall-beta', dir));
});

test('installCniPlugin writes an executable exec wrapper with quoted paths', (t) => {
  const dir = tmp(t);
  const main = join(dir, "it's main.js");
  writeFileSync(main, '');
  const path = installCniPlugin({ binDir: join(dir, 'bin'), nodePath: '/usr/bin/node', mainPath: main });
  t.is(path, join(dir, 'bin', 'netwall'));
  t.is(statSync(path).mode & 0o777, 0o755);
  t.is(readFileSync(path, 'utf8'), renderCniWrapper('/usr/bin/node', main));
  t.regex(readFileSync(path, 'utf8'), /^#!\/bin\/sh\n.*\nexec '\/usr\/bin\/node' '.*it'\\''s main\.js' "\$@"\n$/);
  t.is(shellQuote("a'b"), `'a'\\''b'`);
  t.throws(() => installCniPlugin({ binDir: dir, mainPath: join(dir, 'missing.js') }), { message: /does not exist/ });
});
