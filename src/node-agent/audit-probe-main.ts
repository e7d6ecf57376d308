#!/usr/bin/env node
/**
 * netwall-audit-probe: the node agent's prober, one process per workload,
 * started by the agent inside the workload's network namespace
 * (`nsenter --net=PATH node audit-probe-main.js`) so every probe leaves
 * from the workload's own interface, through the node's wall:
 *
 *   stdin   {"timeoutMs": 1500, "concurrency": 32,
 *            "probes": [{"i": 0, "protocol": "tcp", "address": "10.240.0.5", "port": 5432, "attempts": 2}, …]}
 *   stdout  one JSON line per probe: {"i": 0, "got": "answered", "ms": 3, "attempts": 1, "detail": "connected"}
 *
 * In-process TCP/UDP (node:net, node:dgram), ICMP through `ping`. Listens on
 * nothing, writes nothing but its results. Exit 0 when every probe ran; 2 on
 * bad input. (src/shared/probe.ts has the probes; src/shared/audit.ts what
 * the outcomes mean.)
 */
import type { Protocol } from '../shared/desired.js';
import { pool, probeWithRetries } from '../shared/probe.js';
import { UDP_RETRY_GAP_MS } from '../shared/audit.js';

interface Input {
  timeoutMs: number;
  concurrency: number;
  probes: { i: number; protocol: Protocol; address: string; port: number | null; attempts: number }[];
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

async function main(): Promise<void> {
  let input: Input;
  try {
    input = JSON.parse(await readStdin()) as Input;
    if (!Array.isArray(input.probes)) throw new Error('probes: not a list');
  } catch (err) {
    process.stderr.write(`netwall-audit-probe: bad input: ${(err as Error).message}\n`);
    process.exit(2);
  }
  const timeoutMs = Math.min(Math.max(Number(input.timeoutMs) || 1500, 100), 10_000);
  const concurrency = Math.min(Math.max(Number(input.concurrency) || 32, 1), 256);
  await pool(input.probes, concurrency, async (p) => {
    const attempts = Math.min(Math.max(p.attempts || 1, 1), 5);
    const r = await probeWithRetries(p, { timeoutMs, attempts, gapMs: p.protocol === 'udp' ? UDP_RETRY_GAP_MS : 200 });
    process.stdout.write(`${JSON.stringify({ i: p.i, got: r.got, ms: r.ms, attempts: r.attempts, detail: r.detail })}\n`);
  });
}

main().then(
  () => process.exit(0),
  (err: Error) => {
    process.stderr.write(`netwall-audit-probe: ${err.message}\n`);
    process.exit(1);
  },
);
