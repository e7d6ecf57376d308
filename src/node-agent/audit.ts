/**
 * The agent's side of `netwall audit`: beside the desired-state watcher, a
 * long-poll for audit assignments (signed by the coordinator, for this node,
 * not expired — anything else is refused). For each assignment it runs the
 * probes of every local workload inside that workload's network namespace —
 * one prober process per workload (`nsenter --net=PATH node
 * audit-probe-main.js`), a bounded number of workloads at a time, a bounded
 * number of probes in flight in each — and posts the results back in chunks
 * as they come. A workload whose namespace this agent does not know (it was
 * not attached through this agent) gets `error` results, never a guess.
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { attemptsFor, MAX_REPORT_RESULTS, openAssignment, PROBE_GOT, type AssignedProbe, type AuditAssignment, type ProbeReport, type SignedAssignment } from '../shared/audit.js';
import { backoffMs, LoopControl } from '../shared/loop.js';
import type { ChangeLogger, Runner } from '../shared/runner.js';

export interface AuditClient {
  audits(waitSeconds: number, signal?: AbortSignal): Promise<SignedAssignment[]>;
  reportAudit(id: string, results: ProbeReport[], done: boolean): Promise<void>;
}

export interface AuditRunnerOptions {
  node: string;
  coordinatorKey: string;
  client: AuditClient;
  runner: Runner;
  /** The network namespace of a local workload, if this agent attached it. */
  netnsOf(tenant: string, workload: string): string | undefined;
  log: ChangeLogger;
  /** Prober processes at a time (default 4). */
  workloads?: number;
  /** Probes in flight in each prober (default 32). */
  concurrency?: number;
  waitSeconds?: number;
  nodePath?: string;
  proberPath?: string;
  now?: () => number;
}

export class AuditRunner {
  private readonly loop = new LoopControl();
  /** Assignments already run (a re-sent one is not run twice). */
  private readonly seen = new Set<string>();

  constructor(private readonly o: AuditRunnerOptions) {}

  /** Long-poll until stop(); failures back off (a coordinator without audits: once a minute). */
  async run(): Promise<void> {
    let failures = 0;
    while (!this.loop.stopped) {
      try {
        const list = await this.o.client.audits(this.o.waitSeconds ?? 25, this.loop.signal);
        failures = 0;
        for (const s of list) await this.handle(s);
      } catch (err) {
        if (this.loop.stopped) break;
        failures++;
        const e = err as { status?: number; message?: string };
        if (failures === 1) this.o.log(`[netwall] audit: ${e.message ?? String(err)}`);
        await this.loop.sleep(e.status === 404 ? 60_000 : backoffMs(failures, 1000, 30_000));
      }
    }
  }

  stop(): void {
    this.loop.stop();
  }

  private async handle(s: SignedAssignment): Promise<void> {
    const opened = openAssignment(s, this.o.coordinatorKey, this.o.node, (this.o.now ?? Date.now)());
    if ('error' in opened) {
      this.o.log(`[netwall] audit: refusing an assignment: ${opened.error}`);
      return;
    }
    const a = opened.assignment;
    if (this.seen.has(a.id)) return;
    this.seen.add(a.id);
    if (this.seen.size > 1000) this.seen.delete(this.seen.values().next().value as string);
    const t0 = Date.now();
    const lag = ((this.o.now ?? Date.now)() - Date.parse(a.issuedAt)) / 1000;
    this.o.log(`[netwall] audit ${a.id}: ${a.probes.length} probe(s) from ${new Set(a.probes.map((p) => `${p.tenant}/${p.workload}`)).size} workload(s), issued ${lag.toFixed(1)} s ago`);
    const totals = await this.runAssignment(a);
    this.o.log(`[netwall] audit ${a.id}: done in ${((Date.now() - t0) / 1000).toFixed(1)} s (${Object.entries(totals).map(([k, v]) => `${k} ${v}`).join(', ')})`);
  }

  /** Run every probe of the assignment and report all results (the last report says done). */
  async runAssignment(a: AuditAssignment): Promise<Record<string, number>> {
    const groups = new Map<string, AssignedProbe[]>();
    for (const p of a.probes) {
      const k = `${p.tenant}/${p.workload}`;
      const list = groups.get(k);
      if (list) list.push(p);
      else groups.set(k, [p]);
    }
    const totals: Record<string, number> = {};
    let buffer: ProbeReport[] = [];
    let sending: Promise<void> = Promise.resolve();
    const flush = (done: boolean) => {
      const chunk = buffer;
      buffer = [];
      const parts: ProbeReport[][] = [];
      for (let k = 0; k < chunk.length; k += MAX_REPORT_RESULTS) parts.push(chunk.slice(k, k + MAX_REPORT_RESULTS));
      if (done && parts.length === 0) parts.push([]);
      parts.forEach((part, n) => {
        const last = done && n === parts.length - 1;
        sending = sending.then(() =>
          this.o.client.reportAudit(a.id, part, last).catch((err: Error) => this.o.log(`[netwall] audit ${a.id}: report failed: ${err.message}`)),
        );
      });
    };
    const add = (r: ProbeReport) => {
      totals[r.got] = (totals[r.got] ?? 0) + 1;
      buffer.push(r);
      if (buffer.length >= 500) flush(false);
    };

    const entries = [...groups];
    let next = 0;
    const worker = async () => {
      for (let k = next++; k < entries.length && !this.loop.stopped; k = next++) {
        const [key, probes] = entries[k]!;
        const [tenant, workload] = key.split('/') as [string, string];
        const netns = this.o.netnsOf(tenant, workload);
        if (!netns) {
          for (const p of probes) add({ i: p.i, got: 'error', ms: 0, attempts: 0, detail: `no network namespace known for ${key} on this node (not attached through this agent)` });
          continue;
        }
        for (const r of await this.probeFrom(netns, probes, a.probeTimeoutMs)) add(r);
        flush(false);
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, Math.min(this.o.workloads ?? 4, entries.length)) }, worker));
    flush(true);
    await sending;
    return totals;
  }

  /** One prober process in the workload's namespace; every probe gets a result (error if the prober failed). */
  private async probeFrom(netns: string, probes: AssignedProbe[], timeoutMs: number): Promise<ProbeReport[]> {
    const concurrency = this.o.concurrency ?? 32;
    const input = {
      timeoutMs,
      concurrency,
      probes: probes.map((p) => ({ i: p.i, protocol: p.protocol, address: p.address, port: p.port, attempts: attemptsFor(p) })),
    };
    // The slowest case: every round of `concurrency` probes uses all its attempts (UDP: 1.1 s apart).
    const rounds = Math.ceil(probes.length / concurrency);
    const budget = rounds * 3 * (timeoutMs + 1200) + 15_000;
    const argv = ['nsenter', `--net=${netns}`, this.o.nodePath ?? process.execPath, this.o.proberPath ?? join(dirname(fileURLToPath(import.meta.url)), 'audit-probe-main.js')];
    const res = await this.o.runner.run(argv, { input: JSON.stringify(input), allowFailure: true, timeoutMs: budget });
    const got = new Map<number, ProbeReport>();
    for (const line of res.stdout.split('\n')) {
      if (!line.trim()) continue;
      try {
        const r = JSON.parse(line) as ProbeReport;
        if (Number.isInteger(r.i) && PROBE_GOT.includes(r.got)) {
          got.set(r.i, { i: r.i, got: r.got, ms: Math.max(0, Math.round(Number(r.ms) || 0)), attempts: Math.max(0, Math.round(Number(r.attempts) || 0)), ...(r.detail ? { detail: String(r.detail).slice(0, 200) } : {}) });
        }
      } catch {
        /* a torn last line when the prober was killed */
      }
    }
    const why = res.exitCode === 0 ? 'no result from the prober' : `prober failed (exit ${res.exitCode}): ${(res.stderr.trim().split('\n').pop() ?? '').slice(0, 150)}`;
    return probes.map((p) => got.get(p.i) ?? { i: p.i, got: 'error', ms: 0, attempts: 0, detail: why });
  }
}
