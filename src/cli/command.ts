/**
 * The shape of one CLI command and the helpers commands use to read their
 * flags. The table of commands lives in commands.ts; run.ts dispatches.
 */
import type { ApiClient } from './client.js';
import { CliError, parseDuration, parseInteger, UsageError } from './parse.js';

export interface OptionSpec {
  type: 'string' | 'boolean';
  multiple?: boolean;
  short?: string;
  /** Placeholder in help, e.g. `KEY=VALUE`. */
  arg?: string;
  /** Allowed values; anything else is a usage error. */
  choices?: readonly string[];
  /** Shown as required in the usage line (the command itself checks it). */
  required?: boolean;
  help: string;
}

export type Values = Record<string, string | boolean | (string | boolean)[] | undefined>;
export type Env = Record<string, string | undefined>;

export interface Invocation {
  values: Values;
  /** Positional arguments by their declared names. */
  args: Record<string, string>;
  /** The trailing positionals of a command that declares `rest` (zero or more). */
  rest?: string[];
  /** The API client, built on first use (so `help` and `version` need no URL). */
  client: () => ApiClient;
  env: Env;
  /** Read a file, `-` meaning standard input. */
  readFile: (path: string) => Promise<string>;
}

export interface Output {
  /** What `--json` prints; undefined prints nothing (e.g. after a delete). */
  data: unknown;
  /** What people see. */
  text: string;
  /** Printed as is even under `--json` (answers that are not JSON, like /metrics). */
  raw?: boolean;
  /** A remark for people on stderr (not printed under `--json`). */
  note?: string;
  /** The exit status when not 0 (e.g. `policy explain`: 1 = denied). */
  exitCode?: number;
}

export interface Command {
  /** `['tenant', 'create']`, or one word for a top-level command like `health`. */
  path: readonly string[];
  summary: string;
  description?: string;
  /** Required positional arguments, by name (shown upper-case in help). */
  args?: readonly string[];
  /** A trailing positional taking zero or more values (e.g. `target`: `TARGET...`), after `args`. */
  rest?: string;
  options?: Readonly<Record<string, OptionSpec>>;
  examples?: readonly string[];
  /** The exit status for API and runtime errors (default 1; 2 where 1 means an answer, like `grep`). */
  errorExitCode?: number;
  run(inv: Invocation): Promise<Output>;
}

/** A string flag, or undefined. */
export function str(inv: Invocation, name: string): string | undefined {
  const v = inv.values[name];
  return typeof v === 'string' ? v : undefined;
}

/** A string flag that must be present. */
export function need(inv: Invocation, name: string, extra = ''): string {
  const v = str(inv, name);
  if (v === undefined || v === '') throw new UsageError(`missing --${name}${extra}`);
  return v;
}

/** A repeatable string flag (empty array when absent). */
export function strs(inv: Invocation, name: string): string[] {
  const v = inv.values[name];
  if (Array.isArray(v)) return v.filter((x): x is string => typeof x === 'string');
  return typeof v === 'string' ? [v] : [];
}

/** A repeatable flag that must be given at least once. */
export function needList(inv: Invocation, name: string): string[] {
  const v = strs(inv, name);
  if (v.length === 0) throw new UsageError(`missing --${name}`);
  return v;
}

export function flag(inv: Invocation, name: string): boolean {
  return inv.values[name] === true;
}

export function int(inv: Invocation, name: string, min?: number, max?: number): number | undefined {
  const v = str(inv, name);
  return v === undefined ? undefined : parseInteger(v, `--${name}`, min, max);
}

export function duration(inv: Invocation, name: string): number | undefined {
  const v = str(inv, name);
  return v === undefined ? undefined : parseDuration(v, `--${name}`);
}

/** The tenant a tenant-scoped command works on: `--tenant`, else `NETWALL_TENANT`. */
export function tenantOf(inv: Invocation): string {
  const t = str(inv, 'tenant') || inv.env.NETWALL_TENANT;
  if (!t) throw new UsageError('missing --tenant (or set NETWALL_TENANT)');
  return t;
}

/**
 * The request body from `--file` (JSON; `-` reads stdin), or undefined when no
 * file was given. Refuses `--file` together with flags that also build the body.
 */
export async function bodyFromFile(inv: Invocation, bodyFlags: readonly string[]): Promise<Record<string, unknown> | undefined> {
  const file = str(inv, 'file');
  if (file === undefined) return undefined;
  const clash = bodyFlags.filter((f) => inv.values[f] !== undefined);
  if (clash.length) throw new UsageError(`--file cannot be combined with ${clash.map((f) => `--${f}`).join(', ')}`);
  let text: string;
  try {
    text = await inv.readFile(file);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'ENOENT' ? 'no such file' : e.code === 'EACCES' ? 'permission denied' : e.message;
    throw new CliError(`${file === '-' ? 'stdin' : file}: ${why}`);
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (err) {
    throw new CliError(`${file === '-' ? 'stdin' : file}: not valid JSON: ${(err as Error).message}`);
  }
  if (!body || typeof body !== 'object' || Array.isArray(body)) {
    throw new CliError(`${file === '-' ? 'stdin' : file}: expected a JSON object`);
  }
  return body as Record<string, unknown>;
}
