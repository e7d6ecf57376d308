/**
 * The command table: every coordinator operation in docs/api.md as a
 * noun-verb command. Each entry declares its arguments and flags (used for
 * parsing and help) and a `run` that calls the API and returns both the raw
 * JSON (for `--json`) and the rendered text.
 */
import { readFileSync } from 'node:fs';
import { ConflictError } from '../shared/errors.js';
import { auditCommands } from './audit.js';
import { apiPath, displayUrl } from './client.js';
import {
  bodyFromFile,
  duration,
  flag,
  int,
  need,
  needList,
  str,
  strs,
  tenantOf,
  type Command,
  type Invocation,
  type OptionSpec,
  type Output,
} from './command.js';
import {
  Block,
  cell,
  formatAllowRules,
  formatCounts,
  formatDetail,
  formatDestination,
  formatFlowPorts,
  formatLabels,
  formatTime,
  renderFields,
  renderTable,
  type Column,
} from './format.js';
import { parseAllowRules, parseEgressDestination, parseInteger, parseLabels, parsePort, UsageError } from './parse.js';

// Loose views of the API's answers: the CLI shows what it gets and never
// fails on a field it does not know or a field that is missing.
type Obj = Record<string, unknown>;

const list = (body: unknown, key: string): Obj[] => {
  const v = (body as Obj | undefined)?.[key];
  return Array.isArray(v) ? (v as Obj[]) : [];
};
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const labelsOf = (v: unknown) => (v && typeof v === 'object' ? (v as Record<string, string>) : undefined);

const TENANT_OPT: OptionSpec = { type: 'string', arg: 'TENANT', required: true, help: 'the tenant (default: $NETWALL_TENANT)' };
const FILE_OPT: OptionSpec = { type: 'string', arg: 'FILE', help: 'take the whole JSON body from FILE (`-` for stdin) instead of the flags above' };
const TTL_HELP = 'lifetime: seconds, or with a unit (90s, 15m, 12h, 30d); default: the server\'s';

/* ---------------------------------------------------------------- tenants */

const tenantColumns: Column<Obj>[] = [
  { header: 'name', value: (t) => t.name },
  { header: 'subnet', value: (t) => t.subnet },
  { header: 'created', value: (t) => formatTime(t.createdAt) },
];

const tenantFields = (t: Obj) =>
  renderFields([
    ['Name', t.name],
    ['Subnet', t.subnet],
    ['Created', formatTime(t.createdAt)],
  ]);

function tokenOutput(body: unknown, fields: [string, unknown][]): Output {
  return {
    data: body,
    text: renderFields(fields),
    note: 'The token is shown only this once; store it now.',
  };
}

/* ------------------------------------------------------------------ hosts */

function hostColumns(kind: 'node' | 'gateway'): Column<Obj>[] {
  return [
    { header: 'name', value: (h) => h.name },
    { header: 'status', value: (h) => h.status },
    { header: 'endpoint', value: (h) => h.endpoint },
    ...(kind === 'gateway' ? [{ header: 'public', value: (h: Obj) => h.publicAddress }] : []),
    { header: 'tenants', value: (h) => arr(h.tenants).map((t) => (t as Obj).tenant) },
    { header: 'version', value: (h) => h.version },
    { header: 'applied', value: (h) => h.appliedVersion },
    { header: 'last seen', value: (h) => formatTime(h.lastSeen) },
  ];
}

const hostTenantColumns: Column<Obj>[] = [
  { header: 'tenant', value: (t) => t.tenant },
  { header: 'slice', value: (t) => t.slice },
  { header: 'address', value: (t) => t.address },
  { header: 'port', value: (t) => t.listenPort },
  { header: 'public key', value: (t) => t.publicKey },
];

const hostFields = (h: Obj) =>
  renderFields([
    ['Name', h.name],
    ['Kind', h.kind],
    ['Status', h.status],
    ['Endpoint', h.endpoint],
    ['Mgmt address', h.mgmtAddress],
    ['Public address', h.publicAddress],
    ['Identity key', h.identityKey],
    ['Last seen', formatTime(h.lastSeen)],
    ['Version', h.version],
    ['Applied version', h.appliedVersion],
    ['Errors', arr(h.errors).length ? arr(h.errors) : undefined],
    ['Drops', formatCounts(h.drops)],
    ['Tenants', arr(h.tenants).length ? new Block(renderTable(hostTenantColumns, arr(h.tenants) as Obj[], '  ')) : undefined],
  ]);

function hostCommands(kind: 'node' | 'gateway'): Command[] {
  const plural = kind === 'node' ? 'nodes' : 'gateways';
  return [
    {
      path: [kind, 'list'],
      summary: `List enrolled ${plural}`,
      examples: [`netwall ${kind} list`],
      async run(inv) {
        const { body } = await inv.client().get(apiPath('v1', plural));
        return { data: body, text: renderTable(hostColumns(kind), list(body, plural)) };
      },
    },
    {
      path: [kind, 'show'],
      summary: `Show one ${kind}: status, versions, drops and its tenants`,
      args: ['name'],
      examples: [`netwall ${kind} show ${kind}1`],
      async run(inv) {
        const { body } = await inv.client().get(apiPath('v1', plural, inv.args.name!));
        return { data: body, text: hostFields(body as Obj) };
      },
    },
    {
      path: [kind, 'delete'],
      summary: `Remove a ${kind} (its peers drop it on their next sync)`,
      args: ['name'],
      examples: [`netwall ${kind} delete ${kind}1`],
      async run(inv) {
        await inv.client().delete(apiPath('v1', plural, inv.args.name!));
        return { data: undefined, text: `deleted ${kind} ${inv.args.name}` };
      },
    },
  ];
}

/* ------------------------------------------------- tenant-scoped resources */

interface ScopedResource {
  noun: string;
  /** How people call one: `an exposure`, `an egress rule`. */
  one: string;
  many: string;
  /** URL segment and list key: `policies`, `exposures`, `egress`, `workloads`. */
  collection: string;
  columns: Column<Obj>[];
  fields: (o: Obj) => string;
  example: string;
}

function scopedReadCommands(r: ScopedResource): Command[] {
  return [
    {
      path: [r.noun, 'list'],
      summary: `List a tenant's ${r.many}`,
      options: { tenant: TENANT_OPT },
      examples: [`netwall ${r.noun} list --tenant acme`],
      async run(inv) {
        const { body } = await inv.client().get(apiPath('v1', 'tenants', tenantOf(inv), r.collection));
        return { data: body, text: renderTable(r.columns, list(body, r.collection)) };
      },
    },
    {
      path: [r.noun, 'show'],
      summary: `Show ${r.one}`,
      args: ['name'],
      options: { tenant: TENANT_OPT },
      examples: [`netwall ${r.noun} show --tenant acme ${r.example}`],
      async run(inv) {
        const { body } = await inv.client().get(apiPath('v1', 'tenants', tenantOf(inv), r.collection, inv.args.name!));
        return { data: body, text: r.fields(body as Obj) };
      },
    },
    {
      path: [r.noun, 'delete'],
      summary: `Delete ${r.one}`,
      args: ['name'],
      options: { tenant: TENANT_OPT },
      examples: [`netwall ${r.noun} delete --tenant acme ${r.example}`],
      async run(inv) {
        await inv.client().delete(apiPath('v1', 'tenants', tenantOf(inv), r.collection, inv.args.name!));
        return { data: undefined, text: `deleted ${r.one.replace(/^an? /, '')} ${inv.args.name} of tenant ${tenantOf(inv)}` };
      },
    },
  ];
}

/** `PUT` the body built by `build` (or read from `--file`) and show the answer. */
function setCommand(
  r: ScopedResource,
  spec: Pick<Command, 'summary' | 'description' | 'examples'> & {
    options: Record<string, OptionSpec>;
    build: (inv: Invocation) => Obj;
  },
): Command {
  const bodyFlags = Object.keys(spec.options);
  return {
    path: [r.noun, 'set'],
    summary: spec.summary,
    description: spec.description,
    args: ['name'],
    options: { tenant: TENANT_OPT, ...spec.options, file: FILE_OPT },
    examples: spec.examples,
    async run(inv) {
      const body = (await bodyFromFile(inv, bodyFlags)) ?? spec.build(inv);
      const { body: answer } = await inv.client().put(apiPath('v1', 'tenants', tenantOf(inv), r.collection, inv.args.name!), body);
      return { data: answer, text: r.fields((answer ?? body) as Obj) };
    },
  };
}

const workloads: ScopedResource = {
  noun: 'workload',
  one: 'a workload',
  many: 'workloads',
  collection: 'workloads',
  example: 'web1',
  columns: [
    { header: 'name', value: (w) => w.name },
    { header: 'node', value: (w) => w.node },
    { header: 'address', value: (w) => w.address },
    { header: 'labels', value: (w) => formatLabels(labelsOf(w.labels)) },
    { header: 'created', value: (w) => formatTime(w.createdAt) },
  ],
  fields: (w) =>
    renderFields([
      ['Name', w.name],
      ['Tenant', w.tenant],
      ['Node', w.node],
      ['Address', w.address],
      ['Labels', formatLabels(labelsOf(w.labels))],
      ['Created', formatTime(w.createdAt)],
    ]),
};

const policies: ScopedResource = {
  noun: 'policy',
  one: 'a policy',
  many: 'policies',
  collection: 'policies',
  example: 'allow-web-db',
  columns: [
    { header: 'name', value: (p) => p.name },
    { header: 'from', value: (p) => formatLabels(labelsOf(p.from)) },
    { header: 'to', value: (p) => formatLabels(labelsOf(p.to)) },
    { header: 'allow', value: (p) => formatAllowRules(p.allow) },
  ],
  fields: (p) =>
    renderFields([
      ['Name', p.name],
      ['Tenant', p.tenant],
      ['From', formatLabels(labelsOf(p.from))],
      ['To', formatLabels(labelsOf(p.to))],
      ['Allow', formatAllowRules(p.allow)],
      ...(p.updatedAt !== undefined ? [['Updated', formatTime(p.updatedAt)] as const] : []),
    ]),
};

const target = (e: Obj): string => {
  const t = (e.target ?? {}) as Obj;
  return `${formatLabels(labelsOf(t.selector))}:${cell(t.port)}`;
};
const exposurePublic = (e: Obj): string[] => [
  ...arr(e.hostnames).map(String),
  ...(e.publicPort !== null && e.publicPort !== undefined ? [`port ${cell(e.publicPort)}`] : []),
];

const exposures: ScopedResource = {
  noun: 'exposure',
  one: 'an exposure',
  many: 'exposures',
  collection: 'exposures',
  example: 'web',
  columns: [
    { header: 'name', value: (e) => e.name },
    { header: 'protocol', value: (e) => (e.tls ? `${cell(e.protocol)}/${cell(e.tls)}` : e.protocol) },
    { header: 'public', value: exposurePublic },
    { header: 'mode', value: (e) => e.mode },
    { header: 'gateways', value: (e) => e.gateways },
    { header: 'target', value: target },
  ],
  fields: (e) =>
    renderFields([
      ['Name', e.name],
      ['Tenant', e.tenant],
      ['Protocol', e.protocol],
      ['Hostnames', e.hostnames],
      ['Public port', e.publicPort],
      ['TLS', e.tls],
      ['Mode', e.mode],
      ['Gateways', e.gateways],
      ['Target', target(e)],
      ['Proxy protocol', e.proxyProtocol === undefined ? undefined : e.proxyProtocol ? 'yes' : 'no'],
    ]),
};

const egress: ScopedResource = {
  noun: 'egress',
  one: 'an egress rule',
  many: 'egress rules',
  collection: 'egress',
  example: 'internet',
  columns: [
    { header: 'name', value: (e) => e.name },
    { header: 'gateways', value: (e) => e.gateways },
    { header: 'destinations', value: (e) => arr(e.destinations).map((d) => formatDestination(d as Obj)).join(' ') },
  ],
  fields: (e) =>
    renderFields([
      ['Name', e.name],
      ['Tenant', e.tenant],
      ['Gateways', e.gateways],
      ['Destinations', arr(e.destinations).map((d) => formatDestination(d as Obj))],
    ]),
};

/* ------------------------------------------------------ policy questions */

const POLICY_BODY_OPTIONS: Record<string, OptionSpec> = {
  from: { type: 'string', multiple: true, arg: 'KEY=VALUE', required: true, help: 'source selector, repeatable (`*` = all workloads)' },
  to: { type: 'string', multiple: true, arg: 'KEY=VALUE', required: true, help: 'destination selector, repeatable (`*` = all workloads)' },
  allow: { type: 'string', multiple: true, arg: 'PROTO[:PORTS]', required: true, help: 'tcp:5432, tcp:80,443, tcp:8000-8080, udp:53, icmp, tcp (all ports); repeatable' },
};

function policyBody(inv: Invocation): Obj {
  return {
    from: parseLabels(needList(inv, 'from'), '--from'),
    to: parseLabels(needList(inv, 'to'), '--to'),
    allow: parseAllowRules(needList(inv, 'allow')),
  };
}

/** A policy rule, egress destination or entry point an explanation cites, in one line. */
function ruleMatch(r: Obj): string {
  if (r.kind === 'policy') return `${formatLabels(labelsOf(r.from))} -> ${formatLabels(labelsOf(r.to))} ${formatFlowPorts(r)}`;
  if (r.kind === 'egress') return `${formatDestination({ ...r, ports: formatFlowPorts(r) === r.protocol ? undefined : r.ports })} via ${cell(r.gateway)}`;
  return `router client -> ${cell(r.gateway)} ${formatFlowPorts(r)}`;
}

/** Flows grouped per (from, to): `tcp:5432 icmp`. */
function flowRows(flows: Obj[], extra: (f: Obj) => Obj = () => ({})): Obj[] {
  const rows: Obj[] = [];
  for (const f of flows) {
    const last = rows[rows.length - 1];
    if (last && last.from === f.from && last.to === f.to && last.sign === extra(f).sign) {
      (last.allow as string[]).push(formatFlowPorts(f));
      for (const p of arr(f.policies)) if (!(last.policies as unknown[]).includes(p)) (last.policies as unknown[]).push(p);
    } else {
      rows.push({ from: f.from, to: f.to, allow: [formatFlowPorts(f)], policies: [...arr(f.policies)], ...extra(f) });
    }
  }
  return rows;
}

const allowCell = (r: Obj): string => (r.allow as string[]).join(' ');

function reachabilityCommands(): Command[] {
  return [
    {
      path: ['policy', 'explain'],
      summary: 'Say whether a flow from a workload is allowed, and which rules allow it (or that nothing does)',
      description:
        "--to is a workload of the tenant or an IPv4 address (another tenant's, a host's, or outside the mesh, where egress rules decide). " +
        'Without --port, tcp/udp ask which ports are allowed. The answer comes from the policy model, as the nodes enforce it for new connections. ' +
        'Exit status, for scripts (like grep): 0 allowed, 1 denied, 2 usage, API or network error.',
      options: {
        tenant: TENANT_OPT,
        from: { type: 'string', arg: 'WORKLOAD', required: true, help: 'the source workload' },
        to: { type: 'string', arg: 'WORKLOAD|IP', required: true, help: 'the destination: a workload of the tenant or an IPv4 address' },
        proto: { type: 'string', arg: 'PROTO', choices: ['tcp', 'udp', 'icmp'], required: true, help: 'tcp, udp or icmp' },
        port: { type: 'string', arg: 'PORT', help: 'the destination port (tcp/udp); omit to list the allowed ports' },
      },
      errorExitCode: 2,
      examples: [
        'netwall policy explain --tenant acme --from web1 --to db1 --proto tcp --port 5432',
        'netwall policy explain --tenant acme --from web1 --to 203.0.113.10 --proto tcp',
        'netwall policy explain --tenant acme --from web1 --to db1 --proto tcp --port 22 || echo denied',
      ],
      async run(inv) {
        const protocol = need(inv, 'proto');
        const portText = str(inv, 'port');
        if (portText !== undefined && protocol === 'icmp') throw new UsageError('--port: icmp has no ports');
        const body = { from: need(inv, 'from'), to: need(inv, 'to'), protocol, ...(portText !== undefined && { port: parsePort(portText) }) };
        const { body: answer } = await inv.client().post(apiPath('v1', 'tenants', tenantOf(inv), 'reachability', 'explain'), body);
        const a = (answer ?? {}) as Obj;
        const rules = arr(a.rules) as Obj[];
        const table = rules.length
          ? `\n\n${renderTable<Obj>(
              [
                { header: 'kind', value: (r) => r.kind },
                { header: 'name', value: (r) => r.name },
                { header: 'match', value: ruleMatch },
              ],
              rules,
            )}`
          : '';
        return {
          data: answer,
          text: `${cell(a.verdict)}${table}`,
          ...(typeof a.warning === 'string' && { note: `warning: ${cell(a.warning)}` }),
          exitCode: a.allowed === true ? 0 : 1,
        };
      },
    },
    {
      path: ['policy', 'what-if'],
      summary: 'Show how the reachability matrix would change if a policy were set (or deleted), without changing anything',
      description:
        "Takes the same flags (or --file) as 'policy set', or --delete. The server validates the policy exactly as 'policy set' would. " +
        'Prints the flows (or ports) that would become allowed (+) and those that would stop being allowed (-).',
      args: ['name'],
      options: {
        tenant: TENANT_OPT,
        ...Object.fromEntries(Object.entries(POLICY_BODY_OPTIONS).map(([k, o]) => [k, { ...o, required: false }])),
        file: FILE_OPT,
        delete: { type: 'boolean', help: 'what deleting the policy would change (no other flags)' },
      },
      examples: [
        'netwall policy what-if --tenant acme allow-web-db --from app=web --to app=db --allow tcp:5432',
        'netwall policy what-if --tenant acme allow-web-db --file policy.json',
        'netwall policy what-if --tenant acme allow-web-db --delete',
      ],
      async run(inv) {
        const path = apiPath('v1', 'tenants', tenantOf(inv), 'policies', inv.args.name!, 'what-if');
        let answer: unknown;
        if (flag(inv, 'delete')) {
          const clash = ['from', 'to', 'allow', 'file'].filter((f) => inv.values[f] !== undefined);
          if (clash.length) throw new UsageError(`--delete cannot be combined with ${clash.map((f) => `--${f}`).join(', ')}`);
          ({ body: answer } = await inv.client().delete(path));
        } else {
          const body = (await bodyFromFile(inv, Object.keys(POLICY_BODY_OPTIONS))) ?? policyBody(inv);
          ({ body: answer } = await inv.client().put(path, body));
        }
        const a = (answer ?? {}) as Obj;
        const added = list(a, 'added');
        const removed = list(a, 'removed');
        const what = a.op === 'delete' ? `Deleting policy ${cell(a.policy)}` : `${a.created === true ? 'Creating' : 'Replacing'} policy ${cell(a.policy)}`;
        if (added.length + removed.length === 0) return { data: answer, text: `${what} would change no flow.` };
        const rows = [...flowRows(added, () => ({ sign: '+' })), ...flowRows(removed, () => ({ sign: '-' }))];
        const text = renderTable<Obj>(
          [
            { header: 'change', value: (r) => r.sign },
            { header: 'from', value: (r) => r.from },
            { header: 'to', value: (r) => r.to },
            { header: 'flows', value: allowCell },
          ],
          rows,
        );
        return { data: answer, text: `${what} would allow ${added.length} and deny ${removed.length} flow(s) (+ newly allowed, - no longer allowed):\n${text}` };
      },
    },
    {
      path: ['reachability'],
      summary: "Print a tenant's reachability matrix: every allowed workload-to-workload flow and the policies allowing it",
      description: 'Computed from the policies (never observed). A pair of workloads not listed is denied everything; replies to allowed connections always pass.',
      options: { tenant: TENANT_OPT },
      examples: ['netwall reachability --tenant acme', 'netwall reachability --tenant acme --json | jq .flows'],
      async run(inv) {
        const { body } = await inv.client().get(apiPath('v1', 'tenants', tenantOf(inv), 'reachability'));
        const rows = flowRows(list(body, 'flows'));
        const text = renderTable<Obj>(
          [
            { header: 'from', value: (r) => r.from },
            { header: 'to', value: (r) => r.to },
            { header: 'allow', value: allowCell },
            { header: 'policies', value: (r) => r.policies },
          ],
          rows,
        );
        const workloads = arr((body as Obj | undefined)?.workloads).length;
        return { data: body, text, note: `${workloads} workload(s); pairs not listed are denied.` };
      },
    },
  ];
}

/* ------------------------------------------------------------ the table */

function cliVersion(): string {
  try {
    // src/cli/ and dist/cli/ both sit two levels below package.json.
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: string };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

export const commands: readonly Command[] = [
  // tenants
  {
    path: ['tenant', 'create'],
    summary: 'Create a tenant and allocate its private subnet',
    args: ['name'],
    options: { 'prefix-length': { type: 'string', arg: 'N', help: 'size of the tenant subnet, e.g. 20 for a /20 (default: the server\'s)' } },
    examples: ['netwall tenant create acme', 'netwall tenant create acme --prefix-length 20'],
    async run(inv) {
      const prefixLength = int(inv, 'prefix-length', 0, 32);
      const { body } = await inv.client().post(apiPath('v1', 'tenants'), { name: inv.args.name, ...(prefixLength !== undefined && { prefixLength }) });
      return { data: body, text: tenantFields(body as Obj) };
    },
  },
  {
    path: ['tenant', 'list'],
    summary: 'List tenants',
    examples: ['netwall tenant list', 'netwall tenant list --json'],
    async run(inv) {
      const { body } = await inv.client().get(apiPath('v1', 'tenants'));
      return { data: body, text: renderTable(tenantColumns, list(body, 'tenants')) };
    },
  },
  {
    path: ['tenant', 'show'],
    summary: 'Show one tenant',
    args: ['name'],
    examples: ['netwall tenant show acme'],
    async run(inv) {
      const { body } = await inv.client().get(apiPath('v1', 'tenants', inv.args.name!));
      return { data: body, text: tenantFields(body as Obj) };
    },
  },
  {
    path: ['tenant', 'delete'],
    summary: 'Delete a tenant (refused while it has workloads, unless --force)',
    args: ['name'],
    options: { force: { type: 'boolean', help: 'delete it together with its workloads, policies, exposures and egress' } },
    examples: ['netwall tenant delete acme', 'netwall tenant delete acme --force'],
    async run(inv) {
      try {
        await inv.client().delete(apiPath('v1', 'tenants', inv.args.name!), { force: flag(inv, 'force') ? 'true' : undefined });
      } catch (err) {
        // The server speaks of its query parameter; point at the flag.
        if (err instanceof ConflictError && !flag(inv, 'force')) throw new ConflictError(`${err.message.replace(/ or pass force=true$/, '')} (or use --force)`);
        throw err;
      }
      return { data: undefined, text: `deleted tenant ${inv.args.name}` };
    },
  },
  {
    path: ['tenant', 'token'],
    summary: 'Issue a tenant token (nwt_…) limited to this tenant; printed once',
    args: ['tenant'],
    options: {
      name: { type: 'string', arg: 'NAME', help: 'a name for the token, to tell tokens apart in the audit log' },
      ttl: { type: 'string', arg: 'DURATION', help: TTL_HELP },
    },
    examples: ['netwall tenant token acme --name ci --ttl 30d', 'export NETWALL_TOKEN=$(netwall tenant token acme --json | jq -r .token)'],
    async run(inv) {
      const name = str(inv, 'name');
      const ttlSeconds = duration(inv, 'ttl');
      const { body } = await inv.client().post(apiPath('v1', 'tenants', inv.args.tenant!, 'tokens'), {
        ...(name !== undefined && { name }),
        ...(ttlSeconds !== undefined && { ttlSeconds }),
      });
      const b = body as Obj;
      return tokenOutput(body, [
        ['Token', b.token],
        ['Name', b.name],
        ['Tenant', b.tenant],
        ['Expires', formatTime(b.expiresAt)],
      ]);
    },
  },

  // enrollment
  {
    path: ['enroll-token', 'create'],
    summary: 'Issue a single-use enrollment token for a node or gateway; printed once',
    description: 'Give the token to `netwall-agent` or `netwall-gateway` on the host named by --name; it enrolls once with it.',
    options: {
      kind: { type: 'string', arg: 'KIND', choices: ['node', 'gateway'], required: true, help: 'what will enroll with it' },
      name: { type: 'string', arg: 'NAME', required: true, help: 'the host name it will enroll as' },
      ttl: { type: 'string', arg: 'DURATION', help: TTL_HELP },
    },
    examples: ['netwall enroll-token create --kind node --name node1 --ttl 1h', 'netwall enroll-token create --kind gateway --name gateway1'],
    async run(inv) {
      const kind = need(inv, 'kind');
      const name = need(inv, 'name');
      const ttlSeconds = duration(inv, 'ttl');
      const { body } = await inv.client().post(apiPath('v1', 'enrollment-tokens'), { kind, name, ...(ttlSeconds !== undefined && { ttlSeconds }) });
      const b = body as Obj;
      return tokenOutput(body, [
        ['Token', b.token],
        ['Kind', b.kind],
        ['Name', b.name],
        ['Expires', formatTime(b.expiresAt)],
      ]);
    },
  },

  // hosts
  ...hostCommands('node'),
  ...hostCommands('gateway'),

  // workloads
  {
    path: ['workload', 'create'],
    summary: 'Place a workload on a node and allocate its address',
    description: 'Usually the CNI plugin does this when a container starts; this is for attach-by-netns and tests.',
    args: ['name'],
    options: {
      tenant: TENANT_OPT,
      node: { type: 'string', arg: 'NODE', required: true, help: 'the node it runs on' },
      label: { type: 'string', multiple: true, arg: 'KEY=VALUE', help: 'a label, repeatable (or comma-separated: app=web,tier=front)' },
    },
    examples: ['netwall workload create --tenant acme web1 --node node1 --label app=web'],
    async run(inv) {
      const tenant = tenantOf(inv);
      const body = { name: inv.args.name, node: need(inv, 'node'), labels: parseLabels(strs(inv, 'label')) };
      const { body: answer } = await inv.client().post(apiPath('v1', 'tenants', tenant, 'workloads'), body);
      return { data: answer, text: workloads.fields(answer as Obj) };
    },
  },
  ...scopedReadCommands(workloads),

  // policies
  setCommand(policies, {
    summary: 'Create or replace a policy: allow traffic from workloads matching --from to those matching --to',
    description:
      'Policies are allow-lists; all traffic inside a tenant that no policy allows is dropped. Selectors match workload labels; `*` matches every workload of the tenant. ' +
      "Try a change first with 'netwall policy what-if'.",
    options: POLICY_BODY_OPTIONS,
    examples: [
      'netwall policy set --tenant acme allow-web-db --from app=web --to app=db --allow tcp:5432 --allow tcp:8000-8080 --allow icmp',
      'netwall policy set --tenant acme allow-web-db --file policy.json',
    ],
    build: policyBody,
  }),
  ...scopedReadCommands(policies),
  ...reachabilityCommands(),

  // exposures
  setCommand(exposures, {
    summary: 'Create or replace an exposure: publish workloads through gateways',
    description:
      'protocol http routes by Host, tls by SNI (--tls passthrough|terminate), tcp by --public-port. ' +
      'Mode tunnel: the entry point dials the gateway (router client); mesh: the gateway reaches it over the tenant mesh. ' +
      'Hostnames are unique across all tenants.',
    options: {
      protocol: { type: 'string', arg: 'PROTO', choices: ['http', 'tls', 'tcp'], required: true, help: 'http, tls or tcp' },
      hostname: { type: 'string', multiple: true, arg: 'HOST', help: 'public hostname (http/tls), repeatable' },
      mode: { type: 'string', arg: 'MODE', choices: ['tunnel', 'mesh'], required: true, help: 'tunnel (entry points dial the gateway) or mesh' },
      gateway: { type: 'string', multiple: true, arg: 'GATEWAY', required: true, help: 'a gateway to serve it, repeatable' },
      selector: { type: 'string', multiple: true, arg: 'KEY=VALUE', required: true, help: 'entry-point workloads, repeatable (`*` = all)' },
      port: { type: 'string', arg: 'PORT', required: true, help: 'the port the entry points listen on' },
      tls: { type: 'string', arg: 'TLS', choices: ['passthrough', 'terminate'], help: 'for protocol tls: passthrough or terminate' },
      'public-port': { type: 'string', arg: 'PORT', help: 'public port on the gateway (required for tcp)' },
      'proxy-protocol': { type: 'boolean', help: 'send a PROXY protocol header with the client address' },
    },
    examples: [
      'netwall exposure set --tenant acme web --protocol http --hostname web.acme.test --mode tunnel --gateway gateway1 --gateway gateway2 --selector app=web --port 8080',
      'netwall exposure set --tenant acme db --protocol tcp --public-port 15432 --mode mesh --gateway gateway1 --selector app=db --port 5432 --proxy-protocol',
      'netwall exposure set --tenant acme web --file exposure.json',
    ],
    build: (inv) => {
      const publicPort = str(inv, 'public-port');
      return {
        protocol: need(inv, 'protocol'),
        hostnames: strs(inv, 'hostname'),
        mode: need(inv, 'mode'),
        gateways: needList(inv, 'gateway'),
        target: { selector: parseLabels(needList(inv, 'selector'), '--selector'), port: parsePort(need(inv, 'port')) },
        tls: str(inv, 'tls') ?? null,
        publicPort: publicPort === undefined ? null : parsePort(publicPort, '--public-port'),
        proxyProtocol: flag(inv, 'proxy-protocol'),
      };
    },
  }),
  ...scopedReadCommands(exposures),

  // egress
  setCommand(egress, {
    summary: 'Create or replace an egress rule: let the tenant reach outside destinations through gateways',
    description: 'Egress is denied unless a rule allows it; allowed traffic leaves NATed through the named gateways.',
    options: {
      gateway: { type: 'string', multiple: true, arg: 'GATEWAY', required: true, help: 'a gateway to leave through, repeatable' },
      allow: {
        type: 'string',
        multiple: true,
        arg: 'PROTO:CIDR[:PORTS]',
        required: true,
        help: 'tcp:203.0.113.10/32:80, udp:192.0.2.53/32:53, tcp:198.51.100.0/24:80,443, icmp:0.0.0.0/0; repeatable',
      },
    },
    examples: [
      'netwall egress set --tenant acme internet --gateway gateway1 --allow tcp:203.0.113.10/32:80',
      'netwall egress set --tenant acme dns --gateway gateway1 --allow udp:192.0.2.53/32:53 --allow tcp:192.0.2.53/32:53',
    ],
    build: (inv) => ({
      gateways: needList(inv, 'gateway'),
      destinations: needList(inv, 'allow').map((a) => parseEgressDestination(a)),
    }),
  }),
  ...scopedReadCommands(egress),

  // reachability audit (src/cli/audit.ts)
  ...auditCommands(),

  // operations
  {
    path: ['audit-log'],
    summary: 'Show the audit log, newest first',
    options: { limit: { type: 'string', arg: 'N', help: 'at most N entries (default: the server\'s)' } },
    examples: ['netwall audit-log --limit 20'],
    async run(inv) {
      const limit = str(inv, 'limit');
      const { body } = await inv.client().get(apiPath('v1', 'audit'), { limit: limit === undefined ? undefined : parseInteger(limit, '--limit', 1) });
      return {
        data: body,
        text: renderTable<Obj>(
          [
            { header: 'id', value: (e) => e.id },
            { header: 'at', value: (e) => formatTime(e.at) },
            { header: 'actor', value: (e) => e.actor },
            { header: 'action', value: (e) => e.action },
            { header: 'target', value: (e) => e.target },
            { header: 'detail', value: (e) => formatDetail(e.detail) },
          ],
          list(body, 'entries'),
        ),
      };
    },
  },
  {
    path: ['health'],
    summary: 'Check that the coordinator answers (no token needed)',
    examples: ['netwall health'],
    async run(inv) {
      const client = inv.client();
      const { body } = await client.get(apiPath('healthz'));
      return { data: body, text: `${cell((body as Obj | undefined)?.status)} (${displayUrl(client.baseUrl)})` };
    },
  },
  {
    path: ['metrics'],
    summary: 'Print the coordinator\'s Prometheus metrics',
    examples: ['netwall metrics | grep netwall_'],
    async run(inv) {
      const { body } = await inv.client().request<string>('GET', apiPath('metrics'), { text: true });
      return { data: body, text: body.replace(/\n$/, ''), raw: true };
    },
  },
  {
    path: ['openapi'],
    summary: 'Print the coordinator\'s OpenAPI document (JSON)',
    examples: ['netwall openapi > openapi.json'],
    async run(inv) {
      const { body } = await inv.client().get(apiPath('openapi.json'));
      return { data: body, text: JSON.stringify(body, null, 2) };
    },
  },
  {
    path: ['version'],
    summary: 'Print the CLI version',
    async run() {
      const version = cliVersion();
      return { data: { version }, text: `netwall ${version}` };
    },
  },
];
