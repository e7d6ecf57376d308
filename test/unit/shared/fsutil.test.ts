import test from 'ava';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeFileAtomic } from '../../../src/shared/fsutil.js';

test('writeFileAtomic: the whole content under the given mode, the directory made private, no temp file left (durable or not)', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nw-fsutil-'));
  try {
    const file = join(dir, 'state', 'memory.json');
    writeFileAtomic(file, 'first', 0o600);
    writeFileAtomic(file, 'second', 0o600, { durable: false });
    t.is(readFileSync(file, 'utf8'), 'second');
    t.is(statSync(file).mode & 0o777, 0o600);
    t.is(statSync(join(dir, 'state')).mode & 0o777, 0o700);
    t.deepEqual(readdirSync(join(dir, 'state')), ['memory.json']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
