/**
 * Golden files: compare rendered output with test/golden/<name>; regenerate
 * with UPDATE_GOLDEN=1. A missing file fails with that hint.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { ExecutionContext } from 'ava';

const ROOT = join(import.meta.dirname, '..', 'golden');

export function golden(t: ExecutionContext, name: string, actual: string): void {
  const path = join(ROOT, name);
  if (process.env.UPDATE_GOLDEN === '1') {
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, actual);
    t.pass(`wrote ${path}`);
    return;
  }
  if (!existsSync(path)) {
    t.fail(`golden file ${path} is missing; run with UPDATE_GOLDEN=1 to create it`);
    return;
  }
  t.is(actual, readFileSync(path, 'utf8'), `differs from ${path}; if the change is intended, rerun with UPDATE_GOLDEN=1`);
}
