/**
 * The coordinator's own rendered node documents (its golden files) go through
 * the node's planners: the contract between the two programs, checked from
 * this side. Skipped when those files are absent.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NODE_TABLE, renderFirewall } from '../../../src/node-agent/nftables.js';
import { replaceTransaction } from '../../../src/shared/dataplane/nft-table.js';
import { cidrRange, desiredRouting } from '../../../src/shared/dataplane/routes.js';
import { desiredWireguard } from '../../../src/shared/dataplane/wireguard.js';
import { SYSTEM_PATH } from '../../../src/shared/dataplane/wgproc.js';
import type { DesiredState } from '../../../src/shared/desired.js';

const dir = join(dirname(fileURLToPath(import.meta.url)), '../../golden/coordinator');
const files = existsSync(dir) ? readdirSync(dir).filter((f) => /^desired-node.*\.json$/.test(f)) : [];
const NFT = SYSTEM_PATH.split(':').map((d) => join(d, 'nft')).find((p) => existsSync(p)) ?? null;

if (files.length === 0) test('coordinator golden documents', (t) => t.pass('none found; skipped'));

for (const file of files) {
  const doc = JSON.parse(readFileSync(join(dir, file), 'utf8')) as DesiredState;

  test(`${file}: peers skip this host, its own slice is never routed into the mesh`, (t) => {
    const wg = desiredWireguard(doc, (tenant) => ({ privateKeyFile: `/k/${tenant}`, publicKey: `local-${tenant}` }));
    const routing = desiredRouting(doc);
    for (const [i, tenant] of doc.tenants.entries()) {
      t.false(wg[i]!.peers.some((p) => p.host === doc.host), `${tenant.tenant}: no peer for ${doc.host}`);
      const own = cidrRange(tenant.slice);
      const leaked = routing.routes.filter((r) => {
        const x = cidrRange(r.dst);
        return r.table === 'main' && x.first <= own.last && own.first <= x.last;
      });
      t.deepEqual(leaked, [], `${tenant.tenant}: no main-table route over ${tenant.slice}`);
    }
  });

  test(`${file}: the rendered table passes nft -c`, (t) => {
    if (process.getuid?.() !== 0 || !NFT) {
      t.pass('needs root and nft');
      return;
    }
    const tmp = mkdtempSync(join(tmpdir(), 'nwt-contract-'));
    try {
      const path = join(tmp, 'table.nft');
      writeFileSync(path, replaceTransaction(renderFirewall(doc, { underlay: { restrictInput: true } }).text, NODE_TABLE));
      t.notThrows(() => execFileSync(NFT, ['-c', '-f', path], { stdio: ['ignore', 'pipe', 'pipe'] }));
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
}
