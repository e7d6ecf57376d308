/**
 * Help text, generated from the command table so it cannot drift from what
 * the parser accepts.
 */
import { DEFAULT_URL } from './client.js';
import type { Command, OptionSpec } from './command.js';

export const GLOBAL_OPTIONS: Readonly<Record<string, OptionSpec>> = {
  url: { type: 'string', arg: 'URL', help: `coordinator URL (env NETWALL_URL; default ${DEFAULT_URL})` },
  token: { type: 'string', arg: 'TOKEN', help: 'admin (nwa_…) or tenant (nwt_…) token (env NETWALL_TOKEN)' },
  json: { type: 'boolean', help: 'print the API\'s JSON instead of tables' },
  help: { type: 'boolean', short: 'h', help: 'show help' },
};

function optionLabel(name: string, o: OptionSpec): string {
  const long = `--${name}${o.type === 'string' ? ` ${o.arg ?? 'VALUE'}` : ''}`;
  return o.short ? `-${o.short}, ${long}` : long;
}

function optionLines(options: Readonly<Record<string, OptionSpec>>): string[] {
  const rows = Object.entries(options).map(([name, o]) => {
    let help = o.help;
    if (o.multiple && !/repeatable/.test(help)) help += '; repeatable';
    if (o.required) help += ' (required)';
    return [optionLabel(name, o), help] as const;
  });
  const w = Math.max(...rows.map(([l]) => l.length)) + 3;
  return rows.map(([l, h]) => `  ${l.padEnd(w)}${h}`);
}

/** `netwall policy set NAME --tenant TENANT --from KEY=VALUE... [--file FILE]`. */
export function usageLine(cmd: Command): string {
  const parts = ['netwall', ...cmd.path, ...(cmd.args ?? []).map((a) => a.toUpperCase()), ...(cmd.rest ? [`[${cmd.rest.toUpperCase()}...]`] : [])];
  for (const [name, o] of Object.entries(cmd.options ?? {})) {
    const text = `--${name}${o.type === 'string' ? ` ${o.arg ?? 'VALUE'}` : ''}${o.multiple ? '...' : ''}`;
    parts.push(o.required ? text : `[${text}]`);
  }
  return parts.join(' ');
}

export function commandHelp(cmd: Command): string {
  const lines = [`Usage: ${usageLine(cmd)}`, '', cmd.summary + '.'];
  if (cmd.description) lines.push('', cmd.description);
  if (cmd.options && Object.keys(cmd.options).length) lines.push('', 'Options:', ...optionLines(cmd.options));
  lines.push('', 'Global options:', ...optionLines(GLOBAL_OPTIONS));
  if (cmd.examples?.length) lines.push('', 'Examples:', ...cmd.examples.map((e) => `  ${e}`));
  return lines.join('\n');
}

function commandList(cmds: readonly Command[]): string[] {
  const rows = cmds.map((c) => [[...c.path, ...(c.args ?? []).map((a) => a.toUpperCase()), ...(c.rest ? [`[${c.rest.toUpperCase()}...]`] : [])].join(' '), c.summary] as const);
  const w = Math.max(...rows.map(([l]) => l.length)) + 3;
  return rows.map(([l, s]) => `  ${l.padEnd(w)}${s}`);
}

/** Help for a noun with several verbs: `netwall tenant --help`. */
export function nounHelp(noun: string, cmds: readonly Command[]): string {
  return [
    `Usage: netwall ${noun} <${cmds.map((c) => c.path[1] ?? '').filter(Boolean).join('|')}> [options]`,
    '',
    'Commands:',
    ...commandList(cmds),
    '',
    `Run 'netwall ${noun} COMMAND --help' for the options of one command.`,
  ].join('\n');
}

export function generalHelp(cmds: readonly Command[]): string {
  return [
    'netwall — manage a netwall WireGuard overlay through its coordinator.',
    '',
    'Usage: netwall [global options] COMMAND [arguments] [options]',
    '',
    'Commands:',
    ...commandList(cmds),
    '',
    'Global options (anywhere on the line):',
    ...optionLines(GLOBAL_OPTIONS),
    '',
    'Tenant-scoped commands (workload, policy, exposure, egress, reachability) take --tenant,',
    'or NETWALL_TENANT from the environment.',
    '',
    "Run 'netwall COMMAND --help' (or 'netwall help COMMAND') for a command's options and examples.",
    'Exit status: 0 success, 1 API or runtime error, 2 usage error;',
    "'policy explain' (like grep): 0 allowed, 1 denied, 2 any error;",
    "'audit': 0 all matched, 1 a violation, 3 broken cells only, 4 incomplete, 2 any error.",
  ].join('\n');
}
