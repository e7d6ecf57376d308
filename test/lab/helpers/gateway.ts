/**
 * Probes for the gateway lab test (test/lab/gateway.test.ts), as functions of
 * a LabWorld: the gateway's loopback admin endpoint (health, Prometheus
 * metrics), public HTTP/HTTPS/TCP requests from the internet host, bounded
 * nmap scans, nftables counters, podman on a node, and a raw router-protocol
 * handshake run inside a container's network namespace (to present answers
 * the real router client would never send: a wrong key, a replay).
 *
 * Every probe is bounded in time; everything runs inside lab namespaces.
 */
import { type GatewayName, type HostName, type LabWorld, type NodeName, run, type RunResult } from '../../../scripts/lab-world.js';

// ------------------------------------------------------------------ admin endpoint

/** `GET http://127.0.0.1:7401PATH` inside the gateway's network namespace (null if it does not answer). */
export async function gatewayAdmin(world: LabWorld, g: GatewayName, path: string, seconds = 3): Promise<string | null> {
  const out = await run(['nsenter', `--net=${world.nsPath(g)}`, 'curl', '-sS', '-m', String(seconds), `http://127.0.0.1:7401${path}`], {
    allowFailure: true,
    timeoutMs: (seconds + 3) * 1000,
  });
  return out.status === 0 ? out.stdout : null;
}

export interface GatewayHealth {
  ok: boolean;
  errors: string[];
  router: { listening: string[]; sessions: Record<string, number>; authFailures: Record<string, number> } | null;
  /** Mesh-mode upstream: connections opened to entry points, failures. */
  mesh: { opens: number; active: number; connectFailures: number; openRejected: number } | null;
}

export async function gatewayHealth(world: LabWorld, g: GatewayName): Promise<GatewayHealth | null> {
  const text = await gatewayAdmin(world, g, '/healthz');
  if (text === null) return null;
  try {
    return JSON.parse(text) as GatewayHealth;
  } catch {
    return null;
  }
}

/** Prometheus text → `name{labels}` → value (the labels exactly as printed). */
export function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

export async function gatewayMetrics(world: LabWorld, g: GatewayName): Promise<Map<string, number>> {
  const text = await gatewayAdmin(world, g, '/metrics');
  if (text === null) throw new Error(`${g}: /metrics did not answer`);
  return parseMetrics(text);
}

/** The router server's refusals by reason (`netwall_gateway_router_auth_failures_total{reason=…}`). */
export async function authFailures(world: LabWorld, g: GatewayName): Promise<Record<string, number>> {
  const m = await gatewayMetrics(world, g);
  const out: Record<string, number> = {};
  for (const [k, v] of m) {
    const r = /^netwall_gateway_router_auth_failures_total\{reason="([^"]+)"\}$/.exec(k);
    if (r) out[r[1] as string] = v;
  }
  return out;
}

/** Live router sessions per `tenant/exposure` on a gateway (from /healthz). */
export async function routerSessions(world: LabWorld, g: GatewayName): Promise<Record<string, number>> {
  return (await gatewayHealth(world, g))?.router?.sessions ?? {};
}

// ------------------------------------------------------------------ public requests

export interface HttpAnswer {
  /** curl's exit status (0: a response came back). */
  exit: number;
  /** HTTP status, 0 when none. */
  code: number;
  body: string;
  stderr: string;
}

/**
 * `curl` from a namespace to a gateway's public address, with `host` resolved
 * to it (so Host and SNI are `host`). `https` verifies against `cacert` when
 * given (and the system store otherwise).
 */
export async function publicRequest(
  world: LabWorld,
  netns: string,
  o: { address: string; host: string; https?: boolean; port?: number; path?: string; cacert?: string; insecure?: boolean; seconds?: number },
): Promise<HttpAnswer> {
  const seconds = o.seconds ?? 3;
  const port = o.port ?? (o.https ? 443 : 80);
  const args = ['curl', '-sS', '-m', String(seconds), '-o', '-', '-w', '\n%{http_code}', '--resolve', `${o.host}:${port}:${o.address}`];
  if (o.cacert) args.push('--cacert', o.cacert);
  if (o.insecure) args.push('-k');
  args.push(`${o.https ? 'https' : 'http'}://${o.host}:${port}${o.path ?? '/'}`);
  const out = await run(['nsenter', `--net=${netns}`, ...args], { allowFailure: true, timeoutMs: (seconds + 3) * 1000 });
  const nl = out.stdout.lastIndexOf('\n');
  return { exit: out.status, code: Number(out.stdout.slice(nl + 1)) || 0, body: out.stdout.slice(0, Math.max(nl, 0)), stderr: out.stderr };
}

/** A raw TCP exchange: send `input`, return what came back (empty when nothing did) within `seconds`. */
export async function tcpExchange(netns: string, address: string, port: number, seconds = 3, input = 'probe\n'): Promise<string> {
  const out = await run(['nsenter', `--net=${netns}`, 'socat', `-T${seconds}`, `-t${seconds}`, '-', `TCP:${address}:${port},connect-timeout=${seconds}`], {
    input,
    allowFailure: true,
    timeoutMs: (seconds + 3) * 1000,
  });
  return out.stdout;
}

// ------------------------------------------------------------------ scans

export interface ScanResult {
  open: number[];
  /** Ports whose probe reached the target's stack and was refused (RST, ICMP port unreachable): not dropped. */
  closed: number[];
  /** nmap's exit status and grepable output, for the failure message. */
  status: number;
  output: string;
}

/**
 * `nmap -Pn` (TCP SYN) of `target` from a namespace, bounded: one retry,
 * -T4, a minimum rate and a host timeout. `ports` is nmap's -p syntax.
 */
export async function scan(netns: string, target: string | string[], ports: string, o: { seconds?: number; udp?: boolean } = {}): Promise<ScanResult> {
  const seconds = o.seconds ?? 60;
  const argv = [
    'nsenter', `--net=${netns}`,
    'nmap', '-n', '-Pn', o.udp ? '-sU' : '-sS', '-T4', '--max-retries', '1', '--min-rate', '5000',
    '--host-timeout', `${seconds}s`, '-p', ports, '-oG', '-', ...(Array.isArray(target) ? target : [target]),
  ];
  const out = await run(argv, { allowFailure: true, timeoutMs: (seconds + 15) * 1000 });
  const inState = (state: string) => [...new Set([...out.stdout.matchAll(new RegExp(`(\\d+)/${state}/`, 'g'))].map((m) => Number(m[1])))].sort((a, b) => a - b);
  const timedOut = /Status: Timeout|timed out/i.test(out.stdout);
  return { open: inState('open'), closed: inState('closed'), status: timedOut ? -2 : out.status, output: `${out.stdout}\n${out.stderr}`.trim() };
}

// ------------------------------------------------------------------ nftables counters

/** Named counters of a table in a lab host's namespace: name → packets. */
export async function nftCounters(world: LabWorld, host: HostName, table: string): Promise<Record<string, number>> {
  const out = await run(['nsenter', `--net=${world.nsPath(host)}`, 'nft', '-j', 'list', 'counters', 'table', 'inet', table], { allowFailure: true, timeoutMs: 10_000 });
  if (out.status !== 0) throw new Error(`nft list counters table inet ${table} on ${host}: ${out.stderr.trim()}`);
  const parsed = JSON.parse(out.stdout) as { nftables: { counter?: { name: string; packets: number } }[] };
  const res: Record<string, number> = {};
  for (const x of parsed.nftables) if (x.counter) res[x.counter.name] = x.counter.packets;
  return res;
}

// ------------------------------------------------------------------ podman on a node

export function podman(world: LabWorld, node: NodeName, args: readonly string[], timeoutMs = 60_000): Promise<RunResult> {
  const p = world.podmanArgv(node);
  return run([...p.argv, ...args], { env: p.env, allowFailure: true, timeoutMs });
}

// ------------------------------------------------------------------ raw router handshake

export interface RouterCredentialFile {
  grant: string;
  signature: string;
}

export type HandshakeSpec =
  /** Answer the hello like a router client, signing with `secretKey` (not necessarily the grant's key). */
  | { kind: 'answer'; credential: RouterCredentialFile; secretKey: string; send?: boolean }
  /** Send this auth message as it is (a replay of a recorded answer). */
  | { kind: 'raw'; message: unknown };

export interface HandshakeOutcome {
  /** The connection was made and the gateway said hello. */
  connected: boolean;
  hello?: { type: string; gateway: string; challenge: string };
  /** The auth message computed (for `answer`), to be replayed later. */
  answer?: unknown;
  /** The gateway's result frame (welcome / refused); absent when `send: false`. */
  result?: { type: string; reason?: string };
  error?: string;
}

/**
 * One router-protocol handshake from inside a network namespace (a container's),
 * to `address:port`, using the built protocol code (dist/shared/router-protocol.js).
 * The connection is closed right after the result.
 */
export async function routerHandshake(world: LabWorld, netns: string, address: string, port: number, spec: HandshakeSpec, seconds = 6): Promise<HandshakeOutcome> {
  const proto = `file://${world.dist('shared/router-protocol.js')}`;
  const code = `
import net from 'node:net';
import { readFileSync } from 'node:fs';
import { readFrame, encodeFrame, authSigningText } from ${JSON.stringify(proto)};
import { sign } from ${JSON.stringify(`file://${world.dist('shared/crypto.js')}`)};
const spec = JSON.parse(readFileSync(0, 'utf8'));
const out = { connected: false };
const sock = net.connect(${port}, ${JSON.stringify(address)});
sock.on('error', (e) => { out.error = e.message; });
const done = () => { sock.destroy(); process.stdout.write(JSON.stringify(out)); process.exit(0); };
setTimeout(() => { out.error = out.error ?? 'timeout'; done(); }, ${seconds * 1000 - 500});
sock.once('connect', async () => {
  try {
    out.connected = true;
    const hello = await readFrame(sock, Date.now() + 4000);
    out.hello = hello;
    let msg;
    if (spec.kind === 'raw') msg = spec.message;
    else {
      const grant = JSON.parse(spec.credential.grant);
      msg = { type: 'auth', v: 1, credential: spec.credential, signature: sign(authSigningText(hello.challenge, hello.gateway, spec.credential, grant), spec.secretKey) };
      out.answer = msg;
      if (spec.send === false) return done();
    }
    sock.write(encodeFrame(msg));
    out.result = await readFrame(sock, Date.now() + 4000);
  } catch (e) { out.error = e.message; }
  done();
});
sock.once('close', () => { if (!out.connected) done(); });
`;
  const out = await run(['nsenter', `--net=${netns}`, process.execPath, '--input-type=module', '-e', code], {
    input: JSON.stringify(spec),
    allowFailure: true,
    timeoutMs: (seconds + 5) * 1000,
  });
  try {
    return JSON.parse(out.stdout) as HandshakeOutcome;
  } catch {
    return { connected: false, error: `handshake probe: exit ${out.status}: ${out.stderr.trim() || out.stdout.trim()}` };
  }
}

