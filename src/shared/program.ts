/**
 * What the daemons' command lines share: usage errors (exit 2) versus
 * failures (exit 1), one readable line each, and small flag parsers.
 */
import { ValidationError } from './errors.js';

export class UsageError extends Error {}

export function required(value: string | undefined, flag: string): string {
  if (!value) throw new UsageError(`${flag} is required`);
  return value;
}

/** `22,80` → [22, 80]; anything that is not a port is a usage error naming the flag. */
export function parsePorts(text: string, flag: string): number[] {
  return text
    .split(',')
    .filter(Boolean)
    .map((p) => parsePort(p, flag));
}

export function parsePort(text: string, flag: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || !Number.isInteger(n) || n < 1 || n > 65535) throw new UsageError(`${flag}: "${text}" is not a port`);
  return n;
}

/** Seconds within bounds, or a usage error naming the flag. */
export function parseSeconds(text: string, flag: string, min: number, max: number): number {
  const n = Number(text);
  if (!(n >= min && n <= max)) throw new UsageError(`${flag}: ${min}-${max} seconds`);
  return n;
}

/** Run a program's main: a usage error exits 2 with a hint, any other failure exits 1; always one line. */
export function runMain(program: string, main: () => Promise<void>): void {
  main().catch((err: Error) => {
    const usage = err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') || err instanceof ValidationError;
    console.error(`${program}: ${err.message.split('\n')[0]}${usage ? ` (see ${program} --help)` : ''}`);
    process.exit(usage ? 2 : 1);
  });
}

/** Stop on SIGTERM/SIGINT: log, run `stop`, exit 0 (1 if stopping failed). */
export function stopOnSignals(stop: () => Promise<void>, log: (line: string) => void, what: string): void {
  const handler = (signal: string) => {
    log(`[netwall] ${signal}: stopping (${what})`);
    stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once('SIGTERM', handler);
  process.once('SIGINT', handler);
}
