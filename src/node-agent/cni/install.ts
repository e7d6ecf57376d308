/**
 * Installs the plugin where runtimes look for it: a tiny shell wrapper
 * `/opt/cni/bin/netwall` that execs node on the built plugin. The agent's
 * `install-cni` step calls installCniPlugin(); the per-tenant network configs
 * come from ../cni-config.ts.
 */
import { chmodSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeFileAtomic } from '../../shared/fsutil.js';
import { ValidationError } from '../../shared/errors.js';
import { PLUGIN_TYPE } from './types.js';

export const DEFAULT_CNI_BIN_DIR = '/opt/cni/bin';

export interface InstallCniOptions {
  /** Default /opt/cni/bin. */
  binDir?: string;
  /** Absolute path of node; default the running node (process.execPath). */
  nodePath?: string;
  /** The plugin entry point; default main.js next to this file (dist/node-agent/cni/main.js). */
  mainPath?: string;
  /** Extra node arguments before the script (e.g. ['--import', '<tsx url>'] to run from source in a lab). */
  nodeArgs?: string[];
  /** Executable name; default `netwall` (the `type` in the network config). */
  name?: string;
}

/** POSIX shell single-quoting. */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

export function renderCniWrapper(nodePath: string, mainPath: string, nodeArgs: readonly string[] = []): string {
  return [
    '#!/bin/sh',
    '# netwall CNI plugin — written by `netwall-agent install-cni`; do not edit.',
    `exec ${[nodePath, ...nodeArgs, mainPath].map(shellQuote).join(' ')} "$@"`,
    '',
  ].join('\n');
}

export function defaultPluginMain(): string {
  return fileURLToPath(new URL('./main.js', import.meta.url));
}

/** Writes `<binDir>/netwall` (mode 0755, atomically) and returns its path. */
export function installCniPlugin(opts: InstallCniOptions = {}): string {
  const nodePath = opts.nodePath ?? process.execPath;
  const mainPath = opts.mainPath ?? defaultPluginMain();
  if (!nodePath.startsWith('/')) throw new ValidationError('nodePath: must be absolute', 'nodePath');
  if (!mainPath.startsWith('/')) throw new ValidationError('mainPath: must be absolute', 'mainPath');
  if (!existsSync(mainPath)) throw new ValidationError(`mainPath: ${mainPath} does not exist (build first: npm run build)`, 'mainPath');
  const path = join(opts.binDir ?? DEFAULT_CNI_BIN_DIR, opts.name ?? PLUGIN_TYPE);
  writeFileAtomic(path, renderCniWrapper(nodePath, mainPath, opts.nodeArgs ?? []), 0o755);
  chmodSync(path, 0o755); // independent of the umask
  return path;
}
