/**
 * `netwall audit …`: the reachability audit (run by the node agents from
 * inside every container, compared with the policy model by the
 * coordinator) and the outside scan (run here). Exit status, for CI:
 * 0 every probe matched, 1 a violation (open where the policy says closed),
 * 3 only broken cells (closed where it says open), 4 incomplete (errors,
 * probes not run, inconclusive UDP; nothing else wrong), 2 usage, API or
 * network error.
 */
import type { AuditSummary } from '../shared/audit.js';
import { isIpv4 } from '../shared/ipv4.js';
import { ExecaRunner } from '../shared/runner.js';
import { apiPath } from './client.js';
import { flag, int, str, strs, type Command, type Invocation, type Output } from './command.js';
import { renderTable } from './format.js';
import { CliError, parseInteger, parsePortList, UsageError, type PortItem } from './parse.js';
import { judgeScan, parseSurface, planScan, scanHere, scanNmap, type ScanResult, type Surface } from './scan.js';

type Obj = Record<string, unknown>;

export const AUDIT_EXIT = { ok: 0, violation: 1, error: 2, broken: 3, incomplete: 4 } as const;

/** `80`, `8000-8010` items → every port (ranges of at most `max` ports). */
function expandPorts(items: readonly PortItem[], what: string, max = 1024): number[] {
  return items.flatMap((p) => {
    if (typeof p === 'number') return [p];
    const [a, b] = p.split('-').map(Number) as [number, number];
    if (b - a >= max) throw new UsageError(`${what}: at most ${max} ports in a range`);
    return Array.from({ length: b - a + 1 }, (_, k) => a + k);
  });
}

/** `IP`, `IP:PORT[,PORT]`, `tcp:IP:PORTS`, `udp:IP:PORTS`, `icmp:IP` → extra targets merged per address. */
export function parseExtraTargets(items: readonly string[]): { address: string; tcp?: number[]; udp?: number[]; icmp?: boolean }[] {
  const out = new Map<string, { address: string; tcp?: number[]; udp?: number[]; icmp?: boolean }>();
  for (const item of items) {
    const m = /^(?:(tcp|udp|icmp):)?([0-9.]+)(?::([0-9,-]+))?$/.exec(item);
    if (!m || !isIpv4(m[2]!)) throw new UsageError(`--extra-target '${item}': expected IP, IP:PORTS, tcp:IP:PORTS, udp:IP:PORTS or icmp:IP`);
    const proto = (m[1] ?? 'tcp') as 'tcp' | 'udp' | 'icmp';
    const address = m[2]!;
    const t = out.get(address) ?? { address };
    out.set(address, t);
    if (proto === 'icmp') {
      if (m[3] !== undefined) throw new UsageError(`--extra-target '${item}': icmp has no ports`);
      t.icmp = true;
      continue;
    }
    if (m[3] === undefined) {
      if (m[1] !== undefined) throw new UsageError(`--extra-target '${item}': give the ports (${proto}:${address}:PORTS)`);
      continue; // a bare address: the default ports
    }
    const ports = expandPorts(parsePortList(m[3], `--extra-target '${item}'`), `--extra-target '${item}'`, 32);
    t[proto] = [...new Set([...(t[proto] ?? []), ...ports])];
  }
  return [...out.values()];
}

function exitFor(s: AuditSummary): number {
  if (s.violations > 0) return AUDIT_EXIT.violation;
  if (s.broken > 0) return AUDIT_EXIT.broken;
  if (s.inconclusive + s.errors + s.notRun + s.pending > 0) return AUDIT_EXIT.incomplete;
  return AUDIT_EXIT.ok;
}

const portCell = (p: Obj) => (p.protocol === 'icmp' ? 'icmp' : `${String(p.protocol)}/${String(p.port)}`);

function renderAudit(view: Obj, all: boolean, seconds: number | null): Output {
  const s = (view.summary ?? {}) as AuditSummary;
  const rows = ((all ? view.probes : view.mismatches) ?? []) as Obj[];
  const nodes = (Array.isArray(view.nodes) ? view.nodes : []) as Obj[];
  const lines: string[] = [];
  if (rows.length > 0) {
    lines.push(
      renderTable<Obj>(
        [
          { header: 'outcome', value: (p) => p.outcome },
          { header: 'from', value: (p) => `${String(p.tenant)}/${String(p.from)}` },
          { header: 'to', value: (p) => p.target },
          { header: 'address', value: (p) => p.address },
          { header: 'probe', value: portCell },
          { header: 'expected', value: (p) => p.expect },
          { header: 'got', value: (p) => (p.got === null ? '-' : p.detail ? `${String(p.got)} (${String(p.detail)})` : p.got) },
          { header: 'why', value: (p) => p.why },
        ],
        rows,
      ),
      '',
    );
  }
  const away = nodes.filter((n) => n.state === 'offline' || n.state === 'expired').map((n) => `${String(n.name)} ${String(n.state)}`);
  lines.push(
    `audit ${String(view.id)} ${String(view.status)}: ${s.probes} probes, ${s.matched} matched, ${s.violations} violations, ${s.broken} broken` +
      `${s.inconclusive ? `, ${s.inconclusive} inconclusive` : ''}${s.errors ? `, ${s.errors} errors` : ''}${s.notRun ? `, ${s.notRun} not run` : ''}` +
      ` (${nodes.length} node(s)${away.length ? `: ${away.join(', ')}` : ''}${seconds === null ? '' : `, ${seconds.toFixed(1)} s`})`,
  );
  return { data: view, text: lines.join('\n'), exitCode: exitFor(s) };
}

/** GET the audit until it ends (long-polls of up to 20 s each). */
async function waitFor(inv: Invocation, id: string, all: boolean): Promise<Obj> {
  for (;;) {
    const { body } = await inv.client().get<Obj>(apiPath('v1', 'audits', id), { wait: 20, probes: all ? 'all' : undefined });
    if (body.status !== 'running') return body;
  }
}

const TIMEOUT_OPT = { type: 'string', arg: 'SECONDS', help: 'time the nodes have to run their probes (default 120; 5-600)' } as const;

export function auditCommands(): Command[] {
  return [
    {
      path: ['audit'],
      summary: 'Probe the policy model for real: every container to every other container, host, the coordinator and egress, from inside its network namespace',
      description:
        'The coordinator plans the probes and what each must give from the policy model (as `policy explain` answers it); each node agent runs its ' +
        "containers' probes inside their network namespaces and reports; the difference is printed: violations (open where the policy says closed) and " +
        'broken cells (closed where it says open). Subcommands: `audit show ID`, `audit list`, `audit surface`, `audit scan --from-here` (the outside view). ' +
        'Exit status: 0 all matched, 1 any violation, 3 broken cells only, 4 incomplete (errors, probes not run, inconclusive UDP), 2 usage, API or network error.',
      options: {
        tenant: { type: 'string', multiple: true, arg: 'TENANT', help: "probe from this tenant's workloads only (targets stay every tenant's), repeatable; default every tenant" },
        'extra-target': {
          type: 'string',
          multiple: true,
          arg: '[PROTO:]IP[:PORTS]',
          help: 'probe this address too (e.g. the internet host): 192.0.2.100 (tcp 22,80,443 and icmp), 192.0.2.100:80,443, udp:192.0.2.53:53, icmp:192.0.2.100',
        },
        port: { type: 'string', multiple: true, arg: 'PROTO:PORTS', help: 'more ports to probe on every container, e.g. tcp:6379 (one a policy no longer allows), udp:53,5353' },
        timeout: TIMEOUT_OPT,
        'probe-timeout': { type: 'string', arg: 'MS', help: 'per probe attempt, milliseconds (default 1500; 200-5000)' },
        all: { type: 'boolean', help: 'list every probe, not only the mismatches' },
      },
      errorExitCode: AUDIT_EXIT.error,
      examples: ['netwall audit', 'netwall audit --tenant acme --extra-target 192.0.2.100', 'netwall audit --json | jq .summary'],
      async run(inv) {
        const t0 = Date.now();
        const timeout = int(inv, 'timeout', 5, 600);
        const probeTimeout = int(inv, 'probe-timeout', 200, 5000);
        const tenants = strs(inv, 'tenant');
        const extra = parseExtraTargets(strs(inv, 'extra-target'));
        const ports: { tcp?: number[]; udp?: number[] } = {};
        for (const item of strs(inv, 'port')) {
          const m = /^(tcp|udp):([0-9,-]+)$/.exec(item);
          if (!m) throw new UsageError(`--port '${item}': expected tcp:PORTS or udp:PORTS`);
          const proto = m[1] as 'tcp' | 'udp';
          ports[proto] = [...new Set([...(ports[proto] ?? []), ...expandPorts(parsePortList(m[2]!, `--port '${item}'`), `--port '${item}'`, 32)])];
        }
        const body = {
          ...(tenants.length ? { tenants } : {}),
          ...(extra.length ? { extraTargets: extra } : {}),
          ...(Object.keys(ports).length ? { ports } : {}),
          ...(timeout !== undefined ? { timeoutSeconds: timeout } : {}),
          ...(probeTimeout !== undefined ? { probeTimeoutMs: probeTimeout } : {}),
        };
        const all = flag(inv, 'all') || flag(inv, 'json');
        const { body: started } = await inv.client().post<Obj>(apiPath('v1', 'audits'), body);
        const view = await waitFor(inv, String(started.id), all);
        return renderAudit(view, flag(inv, 'all'), (Date.now() - t0) / 1000);
      },
    },
    {
      path: ['audit', 'show'],
      summary: 'Show an audit the coordinator still holds (the last hour): its summary and mismatches',
      args: ['id'],
      options: { wait: { type: 'boolean', help: 'wait for it to end' }, all: { type: 'boolean', help: 'list every probe' } },
      errorExitCode: AUDIT_EXIT.error,
      examples: ['netwall audit show 3f2a9c0d1e4b5a69 --all'],
      async run(inv) {
        const all = flag(inv, 'all') || flag(inv, 'json');
        if (!/^[0-9a-f]{16}$/.test(inv.args.id!)) throw new UsageError(`'${inv.args.id}' is not an audit id (16 hex digits)`);
        const view = flag(inv, 'wait') ? await waitFor(inv, inv.args.id!, all) : (await inv.client().get<Obj>(apiPath('v1', 'audits', inv.args.id!), { probes: all ? 'all' : undefined })).body;
        return renderAudit(view, flag(inv, 'all'), null);
      },
    },
    {
      path: ['audit', 'list'],
      summary: 'List the audits the coordinator holds, newest first',
      async run(inv) {
        const { body } = await inv.client().get<Obj>(apiPath('v1', 'audits'));
        const list = (Array.isArray(body.audits) ? body.audits : []) as Obj[];
        return {
          data: body,
          text: renderTable<Obj>(
            [
              { header: 'id', value: (a) => a.id },
              { header: 'status', value: (a) => a.status },
              { header: 'created', value: (a) => a.createdAt },
              { header: 'probes', value: (a) => (a.summary as AuditSummary | undefined)?.probes },
              { header: 'violations', value: (a) => (a.summary as AuditSummary | undefined)?.violations },
              { header: 'broken', value: (a) => (a.summary as AuditSummary | undefined)?.broken },
            ],
            list,
          ),
        };
      },
    },
    {
      path: ['audit', 'surface'],
      summary: 'Print what may answer from outside: every node and gateway, its underlay addresses, WireGuard UDP ports and TCP exposure ports',
      description: "Save it with --json for 'audit scan --expect FILE' where the coordinator cannot be reached (e.g. from the internet).",
      async run(inv) {
        const { body } = await inv.client().get<Obj>(apiPath('v1', 'audits', 'surface'));
        const s = parseSurface(body, 'the coordinator');
        return {
          data: body,
          text: renderTable(
            [
              { header: 'host', value: (h: Surface['hosts'][number]) => h.name },
              { header: 'kind', value: (h) => h.kind },
              { header: 'addresses', value: (h) => h.addresses.map((a) => `${a.address} (${a.what})`) },
              { header: 'udp', value: (h) => h.udp },
              { header: 'tcp', value: (h) => h.tcp },
            ],
            s.hosts,
          ),
        };
      },
    },
    {
      path: ['audit', 'scan'],
      summary: 'Scan nodes and gateways from here (e.g. the internet host): only exposed and WireGuard ports may answer',
      description:
        'TARGETs are node or gateway names, `coordinator`, or IPv4 addresses; none: every node and gateway. The allowed set comes from the coordinator ' +
        '(GET /v1/audits/surface) or --expect FILE (the JSON of `audit surface`): WireGuard UDP ports, TCP exposure ports, the gateways\' listener ports ' +
        '(--listener-ports) and --allow-tcp/--allow-udp on every host. Findings: violation (open where nothing may answer), unfiltered (closed: the ' +
        'packet reached the host\'s stack; a violation with --strict). Exit status: 0 clean, 1 a violation, 4 errors, 2 usage, API or network error.',
      rest: 'target',
      options: {
        'from-here': { type: 'boolean', required: true, help: 'scan from the machine the CLI runs on (the only mode)' },
        expect: { type: 'string', arg: 'FILE', help: 'the allowed set from a file (`netwall audit surface --json`) instead of the coordinator' },
        nmap: { type: 'boolean', help: 'scan with nmap (must be installed) instead of in-process probes' },
        'allow-tcp': { type: 'string', arg: 'PORTS', help: 'TCP ports every host may answer on (default 22: ssh)' },
        'allow-udp': { type: 'string', arg: 'PORTS', help: 'UDP ports every host may answer on (default none)' },
        'listener-ports': { type: 'string', arg: 'PORTS', help: "the gateways' HTTP/HTTPS listener ports (default 80,443)" },
        'tcp-ports': { type: 'string', arg: 'PORTS', help: 'more TCP ports to scan' },
        'udp-ports': { type: 'string', arg: 'PORTS', help: 'more UDP ports to scan' },
        'no-sample': { type: 'boolean', help: 'scan only the allowed ports and --tcp-ports/--udp-ports, not the fixed sample' },
        'probe-timeout': { type: 'string', arg: 'MS', help: 'per port, milliseconds (default 1500)' },
        strict: { type: 'boolean', help: 'a closed (RST / port unreachable) port that may not answer is a violation too' },
        all: { type: 'boolean', help: 'list every port, not only the findings' },
      },
      errorExitCode: AUDIT_EXIT.error,
      examples: [
        'netwall audit scan --from-here gateway1 node1',
        'netwall audit surface --json > surface.json   # where the coordinator is reachable',
        'netwall audit scan --from-here --expect surface.json --nmap   # e.g. on the internet host',
      ],
      async run(inv) {
        if (!flag(inv, 'from-here')) throw new UsageError('--from-here is required: the scan runs where this command runs');
        const ports = (name: string, fallback: number[]): number[] => {
          const v = str(inv, name);
          if (v === undefined) return fallback;
          if (v === '' || v === 'none') return [];
          return expandPorts(parsePortList(v, `--${name}`), `--${name}`);
        };
        const options = {
          allowTcp: ports('allow-tcp', [22]),
          allowUdp: ports('allow-udp', []),
          listenerPorts: ports('listener-ports', [80, 443]),
          tcpPorts: ports('tcp-ports', []),
          udpPorts: ports('udp-ports', []),
          sample: !flag(inv, 'no-sample'),
        };
        const timeoutText = str(inv, 'probe-timeout');
        const timeoutMs = timeoutText === undefined ? 1500 : parseInteger(timeoutText, '--probe-timeout', 100, 10_000);
        const file = str(inv, 'expect');
        let surface: Surface;
        if (file !== undefined) {
          let text: string;
          try {
            text = await inv.readFile(file);
          } catch (err) {
            throw new CliError(`${file}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`);
          }
          let parsed: unknown;
          try {
            parsed = JSON.parse(text);
          } catch (err) {
            throw new CliError(`${file}: not valid JSON: ${(err as Error).message}`);
          }
          surface = parseSurface(parsed, file);
        } else {
          surface = parseSurface((await inv.client().get(apiPath('v1', 'audits', 'surface'))).body, 'the coordinator');
        }
        const cells = planScan(surface, inv.rest ?? [], options);
        const t0 = Date.now();
        let notes: string[] = [];
        let states: { state: ScanResult['state']; detail: string }[];
        if (flag(inv, 'nmap')) {
          ({ results: states, notes } = await scanNmap(cells, new ExecaRunner(), { root: process.getuid?.() === 0, timeoutMs }));
        } else {
          states = await scanHere(cells, timeoutMs);
        }
        const strict = flag(inv, 'strict');
        const results: ScanResult[] = cells.map((c, k) => ({ ...c, ...states[k]!, finding: judgeScan(c.allowed, states[k]!.state, strict) }));
        const count = (f: ScanResult['finding']) => results.filter((r) => r.finding === f).length;
        const summary = { cells: results.length, addresses: new Set(results.map((r) => r.address)).size, violations: count('violation'), unfiltered: count('unfiltered'), errors: count('error'), allowed: count('allowed'), ok: count('ok') };
        const shown = flag(inv, 'all') ? results : results.filter((r) => r.finding === 'violation' || r.finding === 'unfiltered' || r.finding === 'error');
        const seconds = (Date.now() - t0) / 1000;
        const table = shown.length
          ? `${renderTable<ScanResult>(
              [
                { header: 'finding', value: (r) => r.finding },
                { header: 'host', value: (r) => r.host },
                { header: 'address', value: (r) => r.address },
                { header: 'port', value: (r) => `${r.protocol}/${r.port}` },
                { header: 'state', value: (r) => r.state },
                { header: 'may answer', value: (r) => r.because ?? 'no' },
              ],
              shown,
            )}\n\n`
          : '';
        const text =
          `${table}scan from here${flag(inv, 'nmap') ? ' (nmap)' : ''}: ${summary.cells} ports on ${summary.addresses} address(es), ${summary.violations} violations, ` +
          `${summary.unfiltered} unfiltered, ${summary.errors} errors (${seconds.toFixed(1)} s)`;
        const exitCode = summary.violations > 0 ? AUDIT_EXIT.violation : summary.errors > 0 ? AUDIT_EXIT.incomplete : AUDIT_EXIT.ok;
        return { data: { summary, results, notes }, text, ...(notes.length ? { note: notes.join('\n') } : {}), exitCode };
      },
    },
  ];
}
