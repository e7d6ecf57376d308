#!/usr/bin/env node
/**
 * netwall-gateway: enroll | run | plan | rotate-key
 * Flags win over NETWALL_* environment variables. Errors: one line, exit 1
 * (2 for usage).
 */
import { parseArgs } from 'node:util';
import { ENROLL_OPTIONS, enrollCommand, planCommand } from '../shared/host-commands.js';
import { rotateKey } from '../shared/dataplane/rotate-key-command.js';
import { type WireguardMode } from '../shared/dataplane/wireguard.js';
import { isIpv4 } from '../shared/ipv4.js';
import { parsePort, parsePorts, parseSeconds, required, runMain, stopOnSignals, UsageError } from '../shared/program.js';
import { FIREWALL_MEMORY_FILE, GatewayDaemon } from './daemon.js';
import { gatewayFirewall } from './firewall.js';
import { DEFAULT_LIMITS, type PublicLimits } from './public/index.js';

const USAGE = `usage: netwall-gateway <command> [flags]
  enroll  --coordinator URL --token T --name N [--endpoint IP[:PORT]] [--mgmt-address IP] [--public-address IP]
  run     [--listen IP] [--http-port N|off] [--https-port N|off] [--cert-dir DIR] [--limit NAME=VALUE]...
          [--admin IP:PORT|off] [--admin-allow-tcp PORT,...] [--interval SECONDS] [--wireguard auto|kernel|userspace]
  plan    [the run flags] print what a reconcile of the cached document would change (nothing is changed)
  rotate-key --tenant T [--wait SECONDS]  new WireGuard key for the tenant's interface: the running gateway
          registers it at once, uses it once the coordinator holds it; the nodes get it after the switch
common: --state-dir DIR (default /var/lib/netwall/gateway; env NETWALL_STATE_DIR)
defaults: --listen 0.0.0.0, --http-port 80, --https-port 443, --admin 127.0.0.1:7401 (health and metrics;
  never bind it to a public address), --admin-allow-tcp 22 (ports open from outside besides the listeners)
limits: ${Object.keys(DEFAULT_LIMITS).join(', ')} (see docs/gateway.md)
env: NETWALL_COORDINATOR, NETWALL_ENROLL_TOKEN, NETWALL_INTERVAL`;

const options = {
  'state-dir': { type: 'string' },
  ...ENROLL_OPTIONS,
  listen: { type: 'string' },
  'http-port': { type: 'string' },
  'https-port': { type: 'string' },
  'cert-dir': { type: 'string' },
  limit: { type: 'string', multiple: true },
  admin: { type: 'string' },
  'admin-allow-tcp': { type: 'string' },
  interval: { type: 'string' },
  wireguard: { type: 'string' },
  tenant: { type: 'string' },
  wait: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

type Values = ReturnType<typeof parseArgs<{ options: typeof options }>>['values'];

const optionalPort = (text: string | undefined, fallback: number, flag: string): number | null =>
  text === 'off' ? null : text === undefined ? fallback : parsePort(text, flag);

function parseLimits(items: readonly string[]): Partial<PublicLimits> {
  const out: Record<string, number> = {};
  for (const item of items) {
    const [name, value] = item.split('=', 2);
    if (!name || !(name in DEFAULT_LIMITS)) throw new UsageError(`--limit: unknown limit "${name}" (one of ${Object.keys(DEFAULT_LIMITS).join(', ')})`);
    const n = Number(value);
    if (value === undefined || !Number.isFinite(n) || n < 0) throw new UsageError(`--limit ${name}: "${value ?? ''}" is not a non-negative number`);
    out[name] = n;
  }
  return out as Partial<PublicLimits>;
}

function parseAdmin(text: string): { host: string; port: number } | null {
  if (text === 'off') return null;
  const i = text.lastIndexOf(':');
  const host = text.slice(0, i);
  if (i < 0 || !(isIpv4(host) || host === 'localhost')) throw new UsageError(`--admin: "${text}" is not IP:PORT or off`);
  return { host, port: parsePort(text.slice(i + 1), '--admin') };
}

function listeners(v: Values) {
  const address = v.listen ?? '0.0.0.0';
  if (!isIpv4(address)) throw new UsageError(`--listen: "${address}" is not an IPv4 address`);
  return { address, http: optionalPort(v['http-port'], 80, '--http-port'), https: optionalPort(v['https-port'], 443, '--https-port') };
}

const adminTcp = (v: Values): number[] => parsePorts(v['admin-allow-tcp'] ?? '22', '--admin-allow-tcp');

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  const { values: v } = parseArgs({ args: rest, options, strict: true, allowPositionals: false });
  if (!command || ['help', '--help', '-h'].includes(command) || v.help) {
    console.log(USAGE);
    return;
  }
  const env = process.env;
  const stateDir = v['state-dir'] ?? env.NETWALL_STATE_DIR ?? '/var/lib/netwall/gateway';

  switch (command) {
    case 'enroll':
      await enrollCommand('gateway', stateDir, v, env);
      return;
    case 'run': {
      const mode = (v.wireguard ?? 'auto') as WireguardMode;
      if (!['auto', 'kernel', 'userspace'].includes(mode)) throw new UsageError('--wireguard: auto, kernel or userspace');
      const daemon = new GatewayDaemon({
        stateDir,
        intervalSeconds: parseSeconds(v.interval ?? env.NETWALL_INTERVAL ?? '10', '--interval', 1, 3600),
        wireguardMode: mode,
        listen: listeners(v),
        ...(v['cert-dir'] ? { certDir: v['cert-dir'] } : {}),
        limits: parseLimits(v.limit ?? []),
        adminTcpPorts: adminTcp(v),
        admin: parseAdmin(v.admin ?? '127.0.0.1:7401'),
        log: (line) => console.log(line),
      });
      await daemon.start();
      stopOnSignals(() => daemon.stop(), console.log, 'WireGuard and the firewall stay up');
      return;
    }
    case 'plan': {
      const l = listeners(v);
      const firewall = gatewayFirewall({ listenerPorts: [l.http, l.https].filter((p): p is number => p !== null), adminTcpPorts: adminTcp(v) });
      await planCommand(stateDir, firewall, FIREWALL_MEMORY_FILE, v.json ?? false);
      return;
    }
    case 'rotate-key':
      // No control socket to notify: the running daemon watches its state directory for the next key.
      await rotateKey({
        stateDir,
        tenant: required(v.tenant, '--tenant'),
        daemon: 'the gateway',
        nextTick: 'at once (it watches its state directory), at its next tick, or when it starts',
        waitSeconds: v.wait === undefined ? 0 : parseSeconds(v.wait, '--wait', 1, 3600),
      });
      return;
    default:
      throw new UsageError(`unknown command "${command}"`);
  }
}

runMain('netwall-gateway', () => main(process.argv.slice(2)));
