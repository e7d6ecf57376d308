/** `nft -c` (check only, changes nothing) on a rendered table: needs root and the real binary. */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { replaceTransaction, type TableRef } from '../../src/shared/dataplane/nft-table.js';
import { SYSTEM_PATH } from '../../src/shared/runner.js';

/** The real nftables binary (under npx, PATH finds @vercel/nft's `nft` first), or null. */
export const NFT = SYSTEM_PATH.split(':').map((d) => join(d, 'nft')).find((p) => existsSync(p)) ?? null;

/** null when nft accepts the replace transaction, its error text when not, 'skip' without root or nft. */
export function nftCheck(text: string, table: TableRef): string | null | 'skip' {
  if (process.getuid?.() !== 0 || !NFT) return 'skip';
  const dir = mkdtempSync(join(tmpdir(), 'nwt-nft-'));
  try {
    const file = join(dir, 'table.nft');
    writeFileSync(file, replaceTransaction(text, table));
    execFileSync(NFT, ['-c', '-f', file], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
    return null;
  } catch (err) {
    return String((err as { stderr?: Buffer }).stderr ?? err);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
