/**
 * Coordinator configuration from flags and NETWALL_* environment variables
 * (flags win), plus the secrets kept beside the database.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { generateSigningKeyPair, generateToken, isKey, type SigningKeyPair } from '../shared/crypto.js';
import { ValidationError } from '../shared/errors.js';
import { writeFileAtomic } from '../shared/fsutil.js';
import { DEFAULT_IPAM, type IpamConfig } from './ipam.js';

export interface CoordinatorConfig {
  host: string;
  port: number;
  dbPath: string;
  ipam: IpamConfig;
  logLevel: string;
}

export const USAGE = `usage: netwall-coordinator [--listen HOST:PORT] [--db PATH] [--pool CIDR]
                           [--tenant-prefix N] [--slice-prefix N] [--log-level LEVEL]
  --listen         management listener (default 127.0.0.1:7300; env NETWALL_LISTEN)
  --db             SQLite database (default /var/lib/netwall/coordinator/netwall.db; env NETWALL_DB)
  --pool           mesh address pool (default ${DEFAULT_IPAM.pool}; env NETWALL_POOL)
  --tenant-prefix  default tenant subnet size (default /${DEFAULT_IPAM.tenantPrefix}; env NETWALL_TENANT_PREFIX)
  --slice-prefix   per-node slice size (default /${DEFAULT_IPAM.slicePrefix}; env NETWALL_SLICE_PREFIX)
  --log-level      pino level (default info; env NETWALL_LOG_LEVEL)
The admin token comes from NETWALL_ADMIN_TOKEN, else from admin.token beside the
database (created with mode 0600 at first start).`;

export function parseConfig(argv: string[], env: NodeJS.ProcessEnv): CoordinatorConfig {
  const { values } = parseArgs({
    args: argv,
    options: {
      listen: { type: 'string' },
      db: { type: 'string' },
      pool: { type: 'string' },
      'tenant-prefix': { type: 'string' },
      'slice-prefix': { type: 'string' },
      'log-level': { type: 'string' },
      help: { type: 'boolean' },
    },
    strict: true,
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const listen = values.listen ?? env.NETWALL_LISTEN ?? '127.0.0.1:7300';
  const m = /^(.+):(\d{1,5})$/.exec(listen);
  if (!m || Number(m[2]) > 65535) throw new ValidationError(`--listen: "${listen}" is not HOST:PORT`);
  const int = (v: string | undefined, fallback: number, flag: string): number => {
    if (v === undefined) return fallback;
    if (!/^\d+$/.test(v)) throw new ValidationError(`${flag}: "${v}" is not a number`);
    return Number(v);
  };
  return {
    host: m[1]!.replace(/^\[|\]$/g, ''),
    port: Number(m[2]),
    dbPath: values.db ?? env.NETWALL_DB ?? '/var/lib/netwall/coordinator/netwall.db',
    ipam: {
      ...DEFAULT_IPAM,
      pool: values.pool ?? env.NETWALL_POOL ?? DEFAULT_IPAM.pool,
      tenantPrefix: int(values['tenant-prefix'] ?? env.NETWALL_TENANT_PREFIX, DEFAULT_IPAM.tenantPrefix, '--tenant-prefix'),
      slicePrefix: int(values['slice-prefix'] ?? env.NETWALL_SLICE_PREFIX, DEFAULT_IPAM.slicePrefix, '--slice-prefix'),
    },
    logLevel: values['log-level'] ?? env.NETWALL_LOG_LEVEL ?? 'info',
  };
}

/** Refuse to use a secret file others can read. */
function readSecret(path: string): string {
  const mode = statSync(path).mode & 0o077;
  if (mode !== 0) throw new Error(`${path} is readable by group/others (mode ${(statSync(path).mode & 0o777).toString(8)}); chmod 600 it`);
  return readFileSync(path, 'utf8').trim();
}

export function loadAdminToken(dbPath: string, env: NodeJS.ProcessEnv): { token: string; source: string } {
  if (env.NETWALL_ADMIN_TOKEN) {
    if (env.NETWALL_ADMIN_TOKEN.length < 20) throw new ValidationError('NETWALL_ADMIN_TOKEN: at least 20 characters');
    return { token: env.NETWALL_ADMIN_TOKEN, source: 'NETWALL_ADMIN_TOKEN' };
  }
  const path = join(dirname(dbPath), 'admin.token');
  if (!existsSync(path)) writeFileAtomic(path, `${generateToken('admin')}\n`, 0o600);
  return { token: readSecret(path), source: path };
}

/** The coordinator's document-signing key, created on first start (0600). */
export function loadSigningKey(dbPath: string): SigningKeyPair {
  const path = join(dirname(dbPath), 'coordinator.key');
  if (!existsSync(path)) writeFileAtomic(path, `${JSON.stringify(generateSigningKeyPair())}\n`, 0o600);
  const kp = JSON.parse(readSecret(path)) as SigningKeyPair;
  if (!isKey(kp.publicKey) || !isKey(kp.secretKey, 64)) throw new Error(`${path}: not a netwall signing key`);
  return kp;
}
