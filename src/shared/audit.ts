/**
 * The reachability audit's wire contract (coordinator ↔ node agent) and its
 * one judging rule. The coordinator plans probes from the policy model
 * (src/coordinator/audit-plan.ts), hands each node the probes of its
 * workloads as a signed assignment, the agent runs them inside the
 * workloads' network namespaces (src/node-agent/audit.ts) and reports what
 * each saw; the coordinator compares (`judge`).
 *
 * What a probe saw (`ProbeGot`):
 * - `answered`: the target's service answered — TCP connected, a UDP reply, an ICMP echo reply;
 * - `refused`: the target's own stack answered "nothing here" — a TCP RST, an ICMP port
 *   unreachable for UDP. The packet got through the wall: the destination is reachable;
 * - `silent`: nothing came back within the timeout (what the wall's drops look like);
 * - `unreachable`: an ICMP host/net unreachable from a router on the way, or no route:
 *   the packet never reached the target;
 * - `error`: the probe could not run (no network namespace known for the workload, no
 *   `ping`, a local socket error).
 */
import { sign, sha256hex, verify } from './crypto.js';
import type { Protocol } from './desired.js';

export type ProbeExpect = 'allowed' | 'denied';
export type ProbeGot = 'answered' | 'refused' | 'silent' | 'unreachable' | 'error';
export const PROBE_GOT: readonly ProbeGot[] = ['answered', 'refused', 'silent', 'unreachable', 'error'];

/**
 * How a probe compares with the model: `match`; `violation` (open where the
 * policy says closed); `broken` (closed where it says open); `inconclusive`
 * (an allowed UDP flow met silence: no reply and no port-unreachable, even
 * after retries — a UDP service that never answers, or a drop); `error` (the
 * probe could not run); `pending` (no result yet); `not_run` (the audit ended
 * without a result: the node was offline or did not report in time).
 */
export type ProbeOutcome = 'match' | 'violation' | 'broken' | 'inconclusive' | 'error' | 'pending' | 'not_run';

/**
 * The rule. Denied: only no answer at all (silent, unreachable) matches;
 * anything from the target — even a RST or a port-unreachable — means the
 * packet got through: a violation. Allowed: the target's service or at least
 * its stack must answer (answered, refused); silence is broken, except for
 * UDP, where silence is inconclusive (the agent retries allowed UDP probes,
 * spaced past the kernel's ICMP rate limit, before reporting silence).
 */
export function judge(expect: ProbeExpect, protocol: Protocol, got: ProbeGot): ProbeOutcome {
  if (got === 'error') return 'error';
  const reached = got === 'answered' || got === 'refused';
  if (expect === 'denied') return reached ? 'violation' : 'match';
  if (reached) return 'match';
  return protocol === 'udp' && got === 'silent' ? 'inconclusive' : 'broken';
}

/** One probe as a node runs it: from a workload's network namespace to an address. */
export interface AssignedProbe {
  /** The probe's index in the audit (results are reported by it). */
  i: number;
  tenant: string;
  workload: string;
  protocol: Protocol;
  address: string;
  /** tcp/udp; null for icmp. */
  port: number | null;
  /** The agent only uses it to give allowed probes more attempts. */
  expect: ProbeExpect;
}

/** What a node is asked to run, signed by the coordinator (the agent acts on nothing unsigned). */
export interface AuditAssignment {
  v: 1;
  id: string;
  node: string;
  /** ISO times: the agent drops an assignment past `expiresAt`. */
  issuedAt: string;
  expiresAt: string;
  /** Per attempt. */
  probeTimeoutMs: number;
  probes: AssignedProbe[];
}

export interface SignedAssignment {
  /** AuditAssignment as exact JSON text (what the signature covers). */
  assignment: string;
  signature: string;
}

/** One probe's result as a node reports it. */
export interface ProbeReport {
  i: number;
  got: ProbeGot;
  /** Time of the last attempt, ms. */
  ms: number;
  attempts: number;
  /** A short reason (`connected`, `ECONNREFUSED`, `timeout after 1500 ms`, …). */
  detail?: string;
}

/** At most this many results per report; a node sends its results in chunks. */
export const MAX_REPORT_RESULTS = 5000;

/** Attempts per probe: denied probes run once; allowed ones get a second chance (a WireGuard handshake), UDP a third. */
export function attemptsFor(p: Pick<AssignedProbe, 'expect' | 'protocol'>): number {
  if (p.expect === 'denied') return 1;
  return p.protocol === 'udp' ? 3 : 2;
}

/** Wait between attempts of an allowed UDP probe: past Linux's ICMP rate limit (1/s per peer after a burst of 6). */
export const UDP_RETRY_GAP_MS = 1100;

const signingText = (text: string): string => `netwall-audit-v1\n${sha256hex(text)}`;

export function signAssignment(a: AuditAssignment, secretKey: string): SignedAssignment {
  const assignment = JSON.stringify(a);
  return { assignment, signature: sign(signingText(assignment), secretKey) };
}

/** Verify and parse; null (with the reason) when it is not ours, not for this node, or expired. */
export function openAssignment(s: SignedAssignment, coordinatorKey: string, node: string, now = Date.now()): { assignment: AuditAssignment } | { error: string } {
  if (typeof s?.assignment !== 'string' || typeof s?.signature !== 'string') return { error: 'not a signed assignment' };
  if (!verify(signingText(s.assignment), s.signature, coordinatorKey)) return { error: 'bad signature (not from our coordinator)' };
  let a: AuditAssignment;
  try {
    a = JSON.parse(s.assignment) as AuditAssignment;
  } catch {
    return { error: 'not JSON' };
  }
  if (a.v !== 1 || !Array.isArray(a.probes)) return { error: 'unknown assignment version' };
  if (a.node !== node) return { error: `assigned to node "${a.node}", not to us` };
  if (!(Date.parse(a.expiresAt) > now)) return { error: `expired at ${a.expiresAt}` };
  return { assignment: a };
}

/** How an audit's probes came out, counted (the coordinator's `GET /v1/audits/:id` and the CLI). */
export interface AuditSummary {
  probes: number;
  matched: number;
  violations: number;
  broken: number;
  inconclusive: number;
  errors: number;
  pending: number;
  notRun: number;
}
