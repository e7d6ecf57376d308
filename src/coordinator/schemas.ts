/**
 * JSON Schemas for every route body, parameter and answer. Unknown fields are
 * refused (additionalProperties: false) so a typo is a 400, not silence.
 */
import { KEY_PATTERN } from '../shared/crypto.js';
import { HOSTNAME_PATTERN, LABEL_KEY_PATTERN, LABEL_VALUE_PATTERN, NAME_PATTERN } from '../shared/names.js';

export const name = { type: 'string', pattern: NAME_PATTERN, minLength: 1, maxLength: 63 } as const;
const labels = {
  type: 'object',
  maxProperties: 32,
  propertyNames: { pattern: LABEL_KEY_PATTERN, maxLength: 63 },
  additionalProperties: { type: 'string', pattern: LABEL_VALUE_PATTERN, maxLength: 63 },
} as const;
const protocol = { type: 'string', enum: ['tcp', 'udp', 'icmp'] } as const;
const port = { type: 'integer', minimum: 1, maximum: 65535 } as const;
const ports = {
  type: 'array',
  maxItems: 64,
  items: { anyOf: [port, { type: 'string', pattern: '^\\d{1,5}(-\\d{1,5})?$' }] },
} as const;
const cidr = { type: 'string', pattern: '^[0-9.]{7,15}/\\d{1,2}$' } as const;
const ipv4 = { type: 'string', pattern: '^[0-9.]{7,15}$' } as const;
/** A workload name (NAME_PATTERN) or a dotted quad (checked further by isIpv4). */
const WORKLOAD_OR_IPV4 = '^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?|[0-9]{1,3}(\\.[0-9]{1,3}){3})$';
const ttlSeconds = { type: 'integer', minimum: 60, maximum: 365 * 24 * 3600 } as const;

export const errorBody = {
  type: 'object',
  properties: { error: { type: 'object', properties: { code: { type: 'string' }, message: { type: 'string' } }, required: ['code', 'message'] } },
  required: ['error'],
} as const;

const obj = (properties: Record<string, unknown>, required: string[] = []) => ({
  type: 'object',
  additionalProperties: false,
  properties,
  required,
});

export const params = {
  tenant: obj({ tenant: name }, ['tenant']),
  tenantName: obj({ tenant: name, name }, ['tenant', 'name']),
  host: obj({ name }, ['name']),
  hostTenant: obj({ name, tenant: name }, ['name', 'tenant']),
  hostWorkload: obj({ name, tenant: name, workload: name }, ['name', 'tenant', 'workload']),
  hostRouterKey: obj({ name, tenant: name, exposure: name, workload: name }, ['name', 'tenant', 'exposure', 'workload']),
};

export const bodies = {
  createTenant: obj({ name, prefixLength: { type: 'integer', minimum: 8, maximum: 28 } }, ['name']),
  createTenantToken: obj({ name, ttlSeconds }),
  createEnrollmentToken: obj({ kind: { type: 'string', enum: ['node', 'gateway'] }, name, ttlSeconds: { type: 'integer', minimum: 60, maximum: 7 * 24 * 3600 } }, ['kind', 'name']),
  enroll: obj(
    {
      token: { type: 'string', minLength: 20, maxLength: 200 },
      name,
      kind: { type: 'string', enum: ['node', 'gateway'] },
      identityKey: { type: 'string', pattern: KEY_PATTERN },
      endpoint: { type: 'string', maxLength: 21 },
      mgmtAddress: ipv4,
      publicAddress: ipv4,
    },
    ['token', 'name', 'identityKey'],
  ),
  createWorkload: obj({ name, node: name, labels }, ['name', 'node']),
  createNodeWorkload: obj({ tenant: name, name, labels }, ['tenant', 'name']),
  policy: obj(
    {
      from: labels,
      to: labels,
      allow: { type: 'array', minItems: 1, maxItems: 32, items: obj({ protocol, ports }, ['protocol']) },
    },
    ['from', 'to', 'allow'],
  ),
  exposure: obj(
    {
      protocol: { type: 'string', enum: ['http', 'tls', 'tcp'] },
      hostnames: { type: 'array', maxItems: 16, uniqueItems: true, items: { type: 'string', pattern: HOSTNAME_PATTERN, maxLength: 253 } },
      mode: { type: 'string', enum: ['tunnel', 'mesh'] },
      gateways: { type: 'array', minItems: 1, maxItems: 16, uniqueItems: true, items: name },
      target: obj({ selector: labels, port }, ['selector', 'port']),
      tls: { type: ['string', 'null'], enum: ['passthrough', 'terminate', null] },
      publicPort: { anyOf: [port, { type: 'null' }] },
      proxyProtocol: { type: 'boolean' },
    },
    ['protocol', 'mode', 'gateways', 'target'],
  ),
  egress: obj(
    {
      gateways: { type: 'array', minItems: 1, maxItems: 16, uniqueItems: true, items: name },
      destinations: { type: 'array', minItems: 1, maxItems: 256, items: obj({ cidr, protocol, ports }, ['cidr', 'protocol']) },
    },
    ['gateways', 'destinations'],
  ),
  /** A flow to explain: `to` is a workload name or an IPv4 address. */
  explain: obj(
    {
      from: name,
      to: { type: 'string', minLength: 1, maxLength: 63, pattern: WORKLOAD_OR_IPV4 },
      protocol,
      port,
    },
    ['from', 'to', 'protocol'],
  ),
  registerKey: obj({ publicKey: { type: 'string', pattern: KEY_PATTERN } }, ['publicKey']),
  // inUse false: a rotation's next key (the host switches once its document names it); true or absent: the key the host uses.
  registerWireguardKey: obj({ publicKey: { type: 'string', pattern: KEY_PATTERN }, inUse: { type: 'boolean' } }, ['publicKey']),
  status: obj(
    {
      appliedVersion: { type: 'integer', minimum: 0 },
      errors: { type: 'array', maxItems: 100, items: { type: 'string', maxLength: 2000 } },
      drops: { type: 'object', maxProperties: 64, additionalProperties: { type: 'integer', minimum: 0 } },
      details: { type: 'object' },
    },
    ['appliedVersion', 'errors', 'drops'],
  ),
};

export const queries = {
  desired: obj({
    after: { type: 'string', pattern: '^\\d{1,15}$' },
    wait: { type: 'string', pattern: '^\\d{1,2}$' },
  }),
  force: obj({ force: { type: 'string', enum: ['true', 'false'] } }),
  limit: obj({ limit: { type: 'string', pattern: '^\\d{1,5}$' } }),
};

const str = { type: 'string' } as const;
const nullableStr = { type: ['string', 'null'] } as const;
const labelMap = { type: 'object', additionalProperties: { type: 'string' } } as const;

const portRanges = { type: 'array', items: { type: 'object', properties: { from: { type: 'integer' }, to: { type: 'integer' } }, required: ['from', 'to'] } } as const;
const flow = { from: str, to: str, protocol: str, ports: portRanges } as const;

export const answers = {
  tenant: { type: 'object', properties: { name: str, subnet: str, createdAt: str }, required: ['name', 'subnet', 'createdAt'] },
  workload: { type: 'object', properties: { name: str, tenant: str, node: str, address: str, labels: labelMap, createdAt: str } },
  explanation: {
    type: 'object',
    properties: {
      allowed: { type: 'boolean' },
      reason: nullableStr,
      verdict: str,
      from: { type: 'object', properties: { workload: str, address: str, node: str } },
      to: { type: 'object', properties: { workload: nullableStr, address: str } },
      protocol: str,
      port: { type: ['integer', 'null'] },
      ports: portRanges,
      rules: {
        type: 'array',
        items: {
          type: 'object',
          properties: { kind: { type: 'string', enum: ['policy', 'egress', 'exposure'] }, name: str, from: labelMap, to: labelMap, protocol: str, ports: portRanges, cidr: str, gateway: str },
          required: ['kind', 'name'],
        },
      },
      warning: str,
    },
    required: ['allowed', 'reason', 'verdict', 'from', 'to', 'protocol', 'port', 'rules'],
  },
  reachability: {
    type: 'object',
    properties: {
      tenant: str,
      workloads: { type: 'array', items: str },
      flows: { type: 'array', items: { type: 'object', properties: { ...flow, policies: { type: 'array', items: str } }, required: ['from', 'to', 'protocol', 'policies'] } },
    },
    required: ['tenant', 'workloads', 'flows'],
  },
  whatIf: {
    type: 'object',
    properties: {
      tenant: str,
      op: { type: 'string', enum: ['put', 'delete'] },
      policy: str,
      created: { type: 'boolean' },
      added: { type: 'array', items: { type: 'object', properties: flow, required: ['from', 'to', 'protocol'] } },
      removed: { type: 'array', items: { type: 'object', properties: flow, required: ['from', 'to', 'protocol'] } },
    },
    required: ['tenant', 'op', 'policy', 'created', 'added', 'removed'],
  },
  host: {
    type: 'object',
    properties: {
      name: str,
      kind: str,
      identityKey: str,
      endpoint: nullableStr,
      mgmtAddress: nullableStr,
      publicAddress: nullableStr,
      status: str,
      lastSeen: nullableStr,
      version: { type: 'integer' },
      appliedVersion: { type: 'integer' },
      errors: { type: 'array', items: str },
      drops: { type: 'object', additionalProperties: { type: 'integer' } },
      tenants: {
        type: 'array',
        items: { type: 'object', properties: { tenant: str, slice: str, address: str, listenPort: { type: 'integer' }, publicKey: nullableStr, nextPublicKey: nullableStr } },
      },
    },
  },
};
