/**
 * The `netwall` CNI plugin executable (built to dist/node-agent/cni/main.js and
 * installed as /opt/cni/bin/netwall, a shell wrapper — see install.ts).
 * Reads CNI_* from the environment and the network config from stdin, prints
 * the result or the CNI error object on stdout, exits non-zero on error.
 */
import { existsSync } from 'node:fs';
import { ExecaRunner } from '../../shared/runner.js';
import { AgentClient } from '../socket.js';
import { runCniPlugin } from './plugin.js';

async function readStdin(): Promise<string> {
  if (process.stdin.isTTY) return '';
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

async function main(): Promise<void> {
  let stdin = '';
  try {
    stdin = await readStdin();
  } catch (err) {
    process.stdout.write(`${JSON.stringify({ cniVersion: '1.0.0', code: 5, msg: 'cannot read stdin', details: (err as Error).message })}\n`);
    process.exitCode = 1;
    return;
  }
  const out = await runCniPlugin(process.env, stdin, {
    runner: new ExecaRunner(),
    agent: (path) => new AgentClient(path),
    netnsExists: existsSync,
  });
  if (out.stderr) process.stderr.write(out.stderr.endsWith('\n') ? out.stderr : `${out.stderr}\n`);
  process.exitCode = out.exitCode;
  process.stdout.write(out.stdout);
}

await main();
