import { mkdirSync, renameSync, writeFileSync, openSync, fsyncSync, closeSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * Write a file atomically (temp file + fsync + rename) with the given mode, so
 * a crash leaves either the old or the new content, never half of one.
 * Secrets use mode 0o600. `durable: false` skips the fsync, for files that
 * only describe state a power loss wipes anyway (the kernel's tables): a
 * process crash still sees the whole file, as the page cache survives it.
 */
export function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o600, options: { durable?: boolean } = {}): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, data, { mode });
  if (options.durable !== false) {
    const fd = openSync(tmp, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }
  renameSync(tmp, path);
}
