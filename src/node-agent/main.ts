#!/usr/bin/env node
/**
 * netwall-agent: enroll | run | attach | detach | install-cni | plan | rotate-key
 * Flags win over NETWALL_* environment variables. Errors: one line, exit 1
 * (2 for usage).
 */
import { parseArgs } from 'node:util';
import { ENROLL_OPTIONS, enrollCommand, planCommand } from '../shared/host-commands.js';
import { parsePorts, parseSeconds, required, runMain, stopOnSignals, UsageError } from '../shared/program.js';
import { Agent, FIREWALL_MEMORY_FILE } from './agent.js';
import { DEFAULT_CNI_CONF_DIR } from './cni-config.js';
import { DEFAULT_CNI_BIN_DIR, installCniPlugin } from './cni/install.js';
import { nodeFirewall } from './nftables.js';
import { attachCommand, DEFAULT_AGENT_SOCKET, detachCommand } from './socket.js';
import { rotateKeyCommand } from './rotate-key.js';
import { type WireguardMode } from '../shared/dataplane/wireguard.js';

const USAGE = `usage: netwall-agent <command> [flags]
  enroll  --coordinator URL --token T --name N [--endpoint IP[:PORT]] [--mgmt-address IP] [--public-address IP]
  run     [--socket PATH] [--cni-conf-dir DIR] [--cni-bin-dir DIR] [--no-cni-install] [--interval SECONDS]
          [--wireguard auto|kernel|userspace] [--underlay-restrict] [--underlay-allow-tcp PORT,...] [--underlay-if IF,...]
  plan    [the run flags] print what a reconcile of the cached document would change (nothing is changed)
  attach  --tenant T --name N [--label k=v]... --netns PATH|NAME|PID [--ifname eth0] [--socket PATH] [--json]
  detach  --tenant T --name N [--socket PATH] [--json]
  install-cni [--cni-bin-dir DIR]
  rotate-key --tenant T [--wait SECONDS] [--socket PATH]  new WireGuard key for the tenant's interface: registered
          as the next key, used once the coordinator holds it; the peers get it after the switch
common: --state-dir DIR (default /var/lib/netwall/agent; env NETWALL_STATE_DIR)
env: NETWALL_COORDINATOR, NETWALL_SOCKET, NETWALL_CNI_CONF_DIR, NETWALL_CNI_BIN_DIR, NETWALL_INTERVAL`;

const options = {
  'state-dir': { type: 'string' },
  ...ENROLL_OPTIONS,
  socket: { type: 'string' },
  'cni-conf-dir': { type: 'string' },
  'cni-bin-dir': { type: 'string' },
  'no-cni-install': { type: 'boolean' },
  interval: { type: 'string' },
  wireguard: { type: 'string' },
  'underlay-restrict': { type: 'boolean' },
  'underlay-allow-tcp': { type: 'string' },
  'underlay-if': { type: 'string' },
  tenant: { type: 'string' },
  label: { type: 'string', multiple: true },
  netns: { type: 'string' },
  ifname: { type: 'string' },
  json: { type: 'boolean' },
  wait: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** The firewall options `run` enforces; `plan` must compare against the same. */
function firewallOptions(v: { 'underlay-restrict'?: boolean; 'underlay-allow-tcp'?: string; 'underlay-if'?: string }) {
  return {
    underlay: {
      restrictInput: v['underlay-restrict'] ?? false,
      allowTcpPorts: parsePorts(v['underlay-allow-tcp'] ?? '22', '--underlay-allow-tcp'),
      ...(v['underlay-if'] ? { interfaces: v['underlay-if'].split(',') } : {}),
    },
  };
}

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  const { values: v } = parseArgs({ args: rest, options, strict: true, allowPositionals: false });
  if (!command || ['help', '--help', '-h'].includes(command) || v.help) {
    console.log(USAGE);
    return;
  }
  const env = process.env;
  const stateDir = v['state-dir'] ?? env.NETWALL_STATE_DIR ?? '/var/lib/netwall/agent';
  const socket = v.socket ?? env.NETWALL_SOCKET ?? DEFAULT_AGENT_SOCKET;

  switch (command) {
    case 'enroll':
      await enrollCommand('node', stateDir, v, env);
      return;
    case 'run': {
      const interval = parseSeconds(v.interval ?? env.NETWALL_INTERVAL ?? '10', '--interval', 1, 3600);
      const mode = (v.wireguard ?? 'auto') as WireguardMode;
      if (!['auto', 'kernel', 'userspace'].includes(mode)) throw new UsageError('--wireguard: auto, kernel or userspace');
      const agent = new Agent({
        stateDir,
        socketPath: socket,
        cniConfDir: v['cni-conf-dir'] ?? env.NETWALL_CNI_CONF_DIR ?? DEFAULT_CNI_CONF_DIR,
        cniBinDir: v['cni-bin-dir'] ?? env.NETWALL_CNI_BIN_DIR ?? DEFAULT_CNI_BIN_DIR,
        installCni: !v['no-cni-install'],
        intervalSeconds: interval,
        wireguardMode: mode,
        firewall: firewallOptions(v),
        log: (line) => console.log(line),
      });
      await agent.start();
      stopOnSignals(() => agent.stop(), console.log, 'the data plane stays up');
      return;
    }
    case 'plan':
      await planCommand(stateDir, nodeFirewall(firewallOptions(v)), FIREWALL_MEMORY_FILE, v.json ?? false);
      return;
    case 'attach':
      await attachCommand({
        tenant: required(v.tenant, '--tenant'),
        name: required(v.name, '--name'),
        labels: v.label ?? [],
        netns: required(v.netns, '--netns'),
        ...(v.ifname ? { ifname: v.ifname } : {}),
        socket,
        json: v.json ?? false,
      });
      return;
    case 'detach':
      await detachCommand({ tenant: required(v.tenant, '--tenant'), name: required(v.name, '--name'), socket, json: v.json ?? false });
      return;
    case 'rotate-key':
      await rotateKeyCommand({
        stateDir,
        tenant: required(v.tenant, '--tenant'),
        socket,
        waitSeconds: v.wait === undefined ? 0 : parseSeconds(v.wait, '--wait', 1, 3600),
      });
      return;
    case 'install-cni':
      console.log(`installed ${installCniPlugin({ binDir: v['cni-bin-dir'] ?? env.NETWALL_CNI_BIN_DIR ?? DEFAULT_CNI_BIN_DIR })}`);
      return;
    default:
      throw new UsageError(`unknown command "${command}"`);
  }
}

runMain('netwall-agent', () => main(process.argv.slice(2)));
