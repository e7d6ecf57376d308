/**
 * Reachability audits as in-memory jobs of the coordinator process (they are
 * ephemeral: nothing is written to the database, a restart forgets them).
 * A job holds its plan (audit-plan.ts), one assignment per node that runs
 * probes, and the results as nodes report them; the comparison with the
 * model (`judge`, src/shared/audit.ts) is made when the job is read.
 *
 * Nodes long-poll for their assignments (`claim`), each signed with the
 * coordinator's key; a node seen too long ago is marked offline at once
 * (its probes: not_run). A job ends when every node has reported its last
 * chunk, or at its deadline (what is missing then: not_run).
 */
import { randomBytes } from 'node:crypto';
import { judge, signAssignment, type AuditAssignment, type AuditSummary, type ProbeOutcome, type ProbeReport, type SignedAssignment } from '../shared/audit.js';
import { ConflictError, NotFoundError, ValidationError } from '../shared/errors.js';
import type { AuditPlan, PlannedProbe } from './audit-plan.js';

export type NodeState = 'pending' | 'running' | 'done' | 'offline' | 'expired';
export type JobStatus = 'running' | 'done' | 'expired';

interface NodeAssignment {
  name: string;
  indices: number[];
  state: NodeState;
  reported: number;
}

interface Job {
  id: string;
  createdAt: number;
  deadline: number;
  finishedAt: number | null;
  probeTimeoutMs: number;
  tenants: string[];
  probes: PlannedProbe[];
  results: (ProbeReport | undefined)[];
  nodes: Map<string, NodeAssignment>;
  waiters: Set<() => void>;
  timer: NodeJS.Timeout;
}

export interface ProbeView extends Omit<PlannedProbe, 'targetKind' | 'fromAddress'> {
  outcome: ProbeOutcome;
  got: ProbeReport['got'] | null;
  ms: number | null;
  attempts: number | null;
  detail?: string;
}

export interface AuditView {
  id: string;
  status: JobStatus;
  createdAt: string;
  finishedAt: string | null;
  deadline: string;
  tenants: string[];
  probeTimeoutMs: number;
  summary: AuditSummary;
  nodes: { name: string; state: NodeState; probes: number; reported: number }[];
  /** Every probe whose outcome is not `match` (while running: without the pending ones). */
  mismatches: ProbeView[];
  /** Every probe, when asked for (`?probes=all`). */
  probes?: ProbeView[];
}

export interface AuditServiceOptions {
  signingKey: string;
  now?: () => number;
  /** Jobs kept (finished ones are dropped oldest first). */
  maxJobs?: number;
  /** Jobs running at once. */
  maxRunning?: number;
  /** Finished jobs are forgotten after this long. */
  retentionMs?: number;
}

export class AuditService {
  private readonly jobs = new Map<string, Job>();
  /** Node name → long-polls waiting for an assignment. */
  private readonly nodeWaiters = new Map<string, Set<() => void>>();
  private readonly now: () => number;

  constructor(private readonly o: AuditServiceOptions) {
    this.now = o.now ?? Date.now;
  }

  create(plan: AuditPlan, opts: { timeoutSeconds: number; probeTimeoutMs: number; offline: ReadonlySet<string> }): Job {
    this.prune();
    const running = [...this.jobs.values()].filter((j) => j.finishedAt === null).length;
    if (running >= (this.o.maxRunning ?? 4)) throw new ConflictError(`${running} audits are running already; wait for one to end`);
    const id = randomBytes(8).toString('hex');
    const createdAt = this.now();
    const nodes = new Map<string, NodeAssignment>();
    for (const [name, indices] of [...plan.nodes].sort(([a], [b]) => (a < b ? -1 : 1))) {
      nodes.set(name, { name, indices, state: opts.offline.has(name) ? 'offline' : 'pending', reported: 0 });
    }
    const job: Job = {
      id,
      createdAt,
      deadline: createdAt + opts.timeoutSeconds * 1000,
      finishedAt: null,
      probeTimeoutMs: opts.probeTimeoutMs,
      tenants: plan.tenants,
      probes: plan.probes,
      results: new Array(plan.probes.length),
      nodes,
      waiters: new Set(),
      timer: setTimeout(() => this.expire(job), opts.timeoutSeconds * 1000),
    };
    job.timer.unref();
    this.jobs.set(id, job);
    this.settle(job);
    for (const n of nodes.values()) if (n.state === 'pending') this.wakeNode(n.name);
    return job;
  }

  /** The pending assignments of a node, waiting up to `waitMs` for one; they become running. */
  async claim(node: string, waitMs: number): Promise<SignedAssignment[]> {
    let found = this.take(node);
    if (found.length === 0 && waitMs > 0) {
      await new Promise<void>((resolve) => {
        const set = this.nodeWaiters.get(node) ?? new Set();
        this.nodeWaiters.set(node, set);
        const done = () => {
          clearTimeout(timer);
          set.delete(done);
          resolve();
        };
        const timer = setTimeout(done, waitMs);
        set.add(done);
      });
      found = this.take(node);
    }
    return found;
  }

  private take(node: string): SignedAssignment[] {
    const out: SignedAssignment[] = [];
    for (const job of this.jobs.values()) {
      const n = job.nodes.get(node);
      if (job.finishedAt !== null || n?.state !== 'pending') continue;
      n.state = 'running';
      const a: AuditAssignment = {
        v: 1,
        id: job.id,
        node,
        issuedAt: new Date(this.now()).toISOString(),
        expiresAt: new Date(job.deadline).toISOString(),
        probeTimeoutMs: job.probeTimeoutMs,
        probes: n.indices.map((i) => {
          const p = job.probes[i]!;
          return { i, tenant: p.tenant, workload: p.from, protocol: p.protocol, address: p.address, port: p.port, expect: p.expect };
        }),
      };
      out.push(signAssignment(a, this.o.signingKey));
    }
    return out;
  }

  private wakeNode(node: string): void {
    for (const w of [...(this.nodeWaiters.get(node) ?? [])]) w();
  }

  /** A node's results (a chunk); `done` on its last. */
  report(node: string, id: string, results: ProbeReport[], done: boolean): { accepted: number } {
    const job = this.jobs.get(id);
    const n = job?.nodes.get(node);
    if (!job || !n) throw new NotFoundError(`audit "${id}" has no assignment for node "${node}"`);
    if (job.finishedAt !== null || n.state === 'expired' || n.state === 'offline') throw new ConflictError(`audit "${id}" is over for node "${node}" (${job.finishedAt !== null ? 'the audit ended' : n.state})`);
    const mine = new Set(n.indices);
    for (const r of results) {
      if (!mine.has(r.i)) throw new ValidationError(`results: probe ${r.i} is not one of node "${node}"'s probes in audit "${id}"`, 'results');
    }
    for (const r of results) {
      if (job.results[r.i] === undefined) n.reported++;
      job.results[r.i] = r;
    }
    if (done) n.state = 'done';
    else if (n.state === 'pending') n.state = 'running';
    this.settle(job);
    return { accepted: results.length };
  }

  /** The job's view, optionally after waiting up to `waitMs` for it to end. */
  async view(id: string, waitMs = 0, all = false): Promise<AuditView> {
    let job = this.get(id);
    if (job.finishedAt === null && waitMs > 0) {
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          job.waiters.delete(done);
          resolve();
        };
        const timer = setTimeout(done, waitMs);
        job.waiters.add(done);
      });
      job = this.get(id);
    }
    return this.render(job, all);
  }

  list(): Omit<AuditView, 'mismatches' | 'probes' | 'nodes'>[] {
    this.prune();
    return [...this.jobs.values()]
      .sort((a, b) => b.createdAt - a.createdAt)
      .map((j) => {
        const { mismatches: _m, probes: _p, nodes: _n, ...rest } = this.render(j, false);
        return rest;
      });
  }

  close(): void {
    for (const job of this.jobs.values()) {
      clearTimeout(job.timer);
      for (const w of [...job.waiters]) w();
    }
    for (const set of this.nodeWaiters.values()) for (const w of [...set]) w();
  }

  private get(id: string): Job {
    const job = this.jobs.get(id);
    if (!job) throw new NotFoundError(`audit "${id}" does not exist (audits are kept in memory for an hour)`);
    return job;
  }

  private expire(job: Job): void {
    if (job.finishedAt !== null) return;
    for (const n of job.nodes.values()) if (n.state === 'pending' || n.state === 'running') n.state = 'expired';
    this.finish(job);
  }

  /** End the job once no node has anything left to report. */
  private settle(job: Job): void {
    if (job.finishedAt !== null) return;
    if ([...job.nodes.values()].every((n) => n.state === 'done' || n.state === 'offline' || n.state === 'expired')) this.finish(job);
  }

  private finish(job: Job): void {
    job.finishedAt = this.now();
    clearTimeout(job.timer);
    for (const w of [...job.waiters]) w();
  }

  private prune(): void {
    const now = this.now();
    const keep = this.o.retentionMs ?? 3_600_000;
    const finished = [...this.jobs.values()].filter((j) => j.finishedAt !== null).sort((a, b) => a.createdAt - b.createdAt);
    let extra = this.jobs.size - (this.o.maxJobs ?? 16) + 1;
    for (const j of finished) {
      if (now - j.finishedAt! > keep || extra > 0) {
        this.jobs.delete(j.id);
        extra--;
      }
    }
  }

  private render(job: Job, all: boolean): AuditView {
    const summary: AuditSummary = { probes: job.probes.length, matched: 0, violations: 0, broken: 0, inconclusive: 0, errors: 0, pending: 0, notRun: 0 };
    const nodeOf = new Map<number, NodeAssignment>();
    for (const n of job.nodes.values()) for (const i of n.indices) nodeOf.set(i, n);
    const views: ProbeView[] = [];
    const mismatches: ProbeView[] = [];
    for (const p of job.probes) {
      const r = job.results[p.i];
      let outcome: ProbeOutcome;
      if (r) outcome = judge(p.expect, p.protocol, r.got);
      else {
        const state = nodeOf.get(p.i)?.state;
        outcome = job.finishedAt !== null || state === 'done' || state === 'offline' || state === 'expired' ? 'not_run' : 'pending';
      }
      const key = ({ match: 'matched', violation: 'violations', broken: 'broken', inconclusive: 'inconclusive', error: 'errors', pending: 'pending', not_run: 'notRun' } as const)[outcome];
      summary[key]++;
      if (outcome === 'match' && !all) continue;
      const { targetKind: _k, fromAddress: _a, ...plan } = p;
      const v: ProbeView = { ...plan, outcome, got: r?.got ?? null, ms: r?.ms ?? null, attempts: r?.attempts ?? null, ...(r?.detail ? { detail: r.detail } : {}) };
      if (all) views.push(v);
      if (outcome !== 'match' && outcome !== 'pending') mismatches.push(v);
    }
    const status: JobStatus = job.finishedAt === null ? 'running' : [...job.nodes.values()].some((n) => n.state === 'expired') ? 'expired' : 'done';
    return {
      id: job.id,
      status,
      createdAt: new Date(job.createdAt).toISOString(),
      finishedAt: job.finishedAt === null ? null : new Date(job.finishedAt).toISOString(),
      deadline: new Date(job.deadline).toISOString(),
      tenants: job.tenants,
      probeTimeoutMs: job.probeTimeoutMs,
      summary,
      nodes: [...job.nodes.values()].map((n) => ({ name: n.name, state: n.state, probes: n.indices.length, reported: n.reported })),
      mismatches,
      ...(all ? { probes: views } : {}),
    };
  }
}
