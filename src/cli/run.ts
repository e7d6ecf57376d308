/**
 * The dispatcher: find the command in the table, parse its flags with
 * node:util parseArgs, run it, print text or JSON, and turn every failure into
 * one line on stderr and an exit code (1 API/runtime, 2 usage). All I/O is
 * injected so tests can run it in-process.
 */
import { parseArgs } from 'node:util';
import { NetwallError, RateLimitedError } from '../shared/errors.js';
import { ApiClient, DEFAULT_URL } from './client.js';
import type { Command, Env, Invocation, OptionSpec, Values } from './command.js';
import { commands } from './commands.js';
import { commandHelp, generalHelp, GLOBAL_OPTIONS, nounHelp } from './help.js';
import { CliError, UsageError } from './parse.js';

export interface RunIo {
  env: Env;
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** Read a file; `-` is standard input. */
  readFile: (path: string) => Promise<string>;
  fetch?: typeof fetch;
}

export const EXIT_OK = 0;
export const EXIT_ERROR = 1;
export const EXIT_USAGE = 2;

const byNoun = new Map<string, Command[]>();
for (const c of commands) byNoun.set(c.path[0]!, [...(byNoun.get(c.path[0]!) ?? []), c]);

type Resolved =
  | { kind: 'command'; cmd: Command; rest: string[] }
  | { kind: 'help'; text: string }
  | { kind: 'usage'; text: string };

function isGlobalValueOption(tok: string): boolean {
  return tok === '--url' || tok === '--token';
}
function isGlobalOption(tok: string): boolean {
  return /^--(url|token)(=|$)/.test(tok) || tok === '--json' || tok === '--help' || tok === '-h';
}

/** Find the command words (skipping global options) and what is left for parseArgs. */
export function resolve(argv: readonly string[]): Resolved {
  const end = argv.includes('--') ? argv.indexOf('--') : argv.length;
  const wantsHelp = argv.slice(0, end).some((t) => t === '--help' || t === '-h');
  const wordAt: number[] = [];
  for (let i = 0; i < end && wordAt.length < 3; i++) {
    const tok = argv[i]!;
    if (tok.startsWith('-') && tok !== '-') {
      if (!isGlobalOption(tok)) break;
      if (isGlobalValueOption(tok)) i++;
      continue;
    }
    wordAt.push(i);
  }
  const words = wordAt.map((i) => argv[i]!);

  if (words[0] === 'help') {
    const [, noun, verb] = words;
    if (!noun) return { kind: 'help', text: generalHelp(commands) };
    const group = byNoun.get(noun);
    if (!group) throw new UsageError(`unknown command '${noun}'`);
    const cmd = group.find((c) => verb !== undefined && c.path[1] === verb) ?? group.find((c) => c.path.length === 1 || c.path[1] === verb);
    if (cmd && (cmd.path.length === 1 || verb)) return { kind: 'help', text: commandHelp(cmd) };
    if (verb) throw new UsageError(`unknown command '${noun} ${verb}'`);
    return { kind: 'help', text: nounHelp(noun, group) };
  }
  if (words.length === 0) {
    return wantsHelp ? { kind: 'help', text: generalHelp(commands) } : { kind: 'usage', text: generalHelp(commands) };
  }

  const noun = words[0]!;
  const group = byNoun.get(noun);
  if (!group) throw new UsageError(`unknown command '${noun}'`);
  let cmd = group.find((c) => c.path.length === 1);
  let used = 1;
  // A one-word command with subcommands beside it (`audit` and `audit scan`): the verb wins.
  const sub = cmd && words[1] !== undefined ? group.find((c) => c.path[1] === words[1]) : undefined;
  if (sub) {
    cmd = sub;
    used = 2;
  }
  if (!cmd) {
    const verb = words[1];
    if (verb === undefined || verb === 'help') {
      if (wantsHelp || verb === 'help') return { kind: 'help', text: nounHelp(noun, group) };
      throw new UsageError(`'${noun}' needs a subcommand: ${group.map((c) => c.path[1]).join(', ')}`, `netwall ${noun} --help`);
    }
    cmd = group.find((c) => c.path[1] === verb);
    if (!cmd) throw new UsageError(`unknown command '${noun} ${verb}'`, `netwall ${noun} --help`);
    used = 2;
  }
  if (wantsHelp) return { kind: 'help', text: commandHelp(cmd) };
  const drop = new Set(wordAt.slice(0, used));
  return { kind: 'command', cmd, rest: argv.filter((_, i) => !drop.has(i)) };
}

function parseConfig(options: Readonly<Record<string, OptionSpec>>) {
  return Object.fromEntries(
    Object.entries(options).map(([name, o]) => [name, { type: o.type, ...(o.multiple && { multiple: true }), ...(o.short && { short: o.short }) }]),
  );
}

/** Parse the flags and positionals of one command; every problem is a UsageError. */
export function parseCommandLine(cmd: Command, rest: string[]): { values: Values; args: Record<string, string>; rest: string[] } {
  const options = { ...GLOBAL_OPTIONS, ...cmd.options };
  let parsed: { values: Values; positionals: string[] };
  try {
    parsed = parseArgs({ args: rest, options: parseConfig(options), allowPositionals: true, strict: true }) as typeof parsed;
  } catch (err) {
    throw new UsageError(parseArgsMessage(err));
  }
  for (const [name, o] of Object.entries(options)) {
    if (!o.choices) continue;
    const v = parsed.values[name];
    for (const x of Array.isArray(v) ? v : v === undefined ? [] : [v]) {
      if (typeof x === 'string' && !o.choices.includes(x)) {
        throw new UsageError(`--${name} must be one of ${o.choices.join(', ')} (got '${x}')`);
      }
    }
  }
  const names = cmd.args ?? [];
  if (parsed.positionals.length < names.length) {
    throw new UsageError(`missing argument ${names[parsed.positionals.length]!.toUpperCase()}`);
  }
  if (parsed.positionals.length > names.length && !cmd.rest) {
    throw new UsageError(`unexpected argument '${parsed.positionals[names.length]}'`);
  }
  const args: Record<string, string> = {};
  names.forEach((n, i) => (args[n] = parsed.positionals[i]!));
  return { values: parsed.values, args, rest: parsed.positionals.slice(names.length) };
}

/** node:util parseArgs messages, cut to their first sentence and made to read like ours. */
export function parseArgsMessage(err: unknown): string {
  const msg = String((err as Error)?.message ?? err);
  const missing = /^Option '(-[^' ]+)(?: <value>)?' argument missing/.exec(msg);
  if (missing) return `${missing[1]} needs a value`;
  const ambiguous = /^Option '(-[^' ]+)' argument is ambiguous/.exec(msg);
  if (ambiguous) return `${ambiguous[1]} needs a value (use ${ambiguous[1]}=VALUE if it starts with '-')`;
  const first = msg.split(/\.\s/)[0]!.replace(/\.$/, '');
  return first.charAt(0).toLowerCase() + first.slice(1);
}

/** One line for stderr, never a stack trace, never a token. */
export function errorLine(err: unknown, ctx: { hasToken?: boolean; cmd?: Command | undefined } = {}): { line: string; code: number } {
  const oneLine = (s: string) => s.replace(/\s*\n\s*/g, ' ').trim();
  if (err instanceof UsageError) {
    const see = err.see ?? (ctx.cmd ? `netwall ${ctx.cmd.path.join(' ')} --help` : 'netwall --help');
    return { line: `netwall: ${oneLine(err.message)} (see '${see}')`, code: EXIT_USAGE };
  }
  if (err instanceof NetwallError) {
    const code = err.code === 'internal' ? '' : ` ${err.code}`;
    let line = `netwall: HTTP ${err.status}${code}: ${oneLine(err.message)}`;
    if (err instanceof RateLimitedError) line += ` (retry after ${err.retryAfterSeconds} s)`;
    if (err.status === 401 && ctx.hasToken === false) line += ' (no token given: set NETWALL_TOKEN or pass --token)';
    return { line, code: EXIT_ERROR };
  }
  if (err instanceof CliError) return { line: `netwall: ${oneLine(err.message)}`, code: EXIT_ERROR };
  const message = err instanceof Error ? err.message : String(err);
  return { line: `netwall: internal error: ${oneLine(message)}`, code: EXIT_ERROR };
}

export async function run(argv: readonly string[], io: RunIo): Promise<number> {
  let cmd: Command | undefined;
  let client: ApiClient | undefined;
  let token: string | undefined;
  try {
    const resolved = resolve(argv);
    if (resolved.kind === 'help') {
      io.stdout(resolved.text + '\n');
      return EXIT_OK;
    }
    if (resolved.kind === 'usage') {
      io.stderr(resolved.text + '\n');
      return EXIT_USAGE;
    }
    cmd = resolved.cmd;
    const { values, args, rest } = parseCommandLine(cmd, resolved.rest);
    const json = values.json === true;
    token = (typeof values.token === 'string' ? values.token : undefined) ?? io.env.NETWALL_TOKEN;
    const url = (typeof values.url === 'string' ? values.url : undefined) ?? (io.env.NETWALL_URL || DEFAULT_URL);
    const inv: Invocation = {
      values,
      args,
      rest,
      env: io.env,
      readFile: io.readFile,
      client: () => (client ??= new ApiClient({ url, token, ...(io.fetch && { fetch: io.fetch }) })),
    };
    const out = await cmd.run(inv);
    if (out.raw) {
      io.stdout(out.text.endsWith('\n') || out.text === '' ? out.text : out.text + '\n');
    } else if (json) {
      if (out.data !== undefined) io.stdout(JSON.stringify(out.data, null, 2) + '\n');
    } else {
      if (out.text) io.stdout(out.text + '\n');
      if (out.note) io.stderr(out.note + '\n');
    }
    return out.exitCode ?? EXIT_OK;
  } catch (err) {
    const { line, code } = errorLine(err, { hasToken: Boolean(token), cmd });
    io.stderr(line + '\n');
    if (io.env.NETWALL_DEBUG && err instanceof Error && err.stack) io.stderr(err.stack + '\n');
    return code === EXIT_ERROR && cmd?.errorExitCode !== undefined ? cmd.errorExitCode : code;
  }
}
