#!/usr/bin/env node
/**
 * netwall-agent: enroll | run | attach | detach | install-cni | plan | rotate-key
 * Flags win over NETWALL_* environment variables. Errors: one line, exit 1
 * (2 for usage).
 */
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { NetwallError } from '../shared/errors.js';
import { parsePorts, parseSeconds, required, runMain, stopOnSignals, UsageError } from '../shared/program.js';
import { enrollHost, loadIdentity } from '../shared/host-state.js';
import { loadCachedDocument } from '../shared/host-state.js';
import { ExecaRunner } from '../shared/runner.js';
import { Agent, FIREWALL_MEMORY_FILE } from './agent.js';
import { DEFAULT_CNI_CONF_DIR } from './cni-config.js';
import { DEFAULT_CNI_BIN_DIR, installCniPlugin } from './cni/install.js';
import { describeChange, Reconciler } from '../shared/dataplane/reconcile.js';
import { nodeFirewall } from './nftables.js';
import { attachCommand, DEFAULT_AGENT_SOCKET, detachCommand } from './socket.js';
import { rotateKeyCommand } from './rotate-key.js';
import { ensureTenantKey, type WireguardMode } from '../shared/dataplane/wireguard.js';

const USAGE = `usage: netwall-agent <command> [flags]
  enroll  --coordinator URL --token T --name N [--endpoint IP[:PORT]] [--mgmt-address IP] [--public-address IP]
  run     [--socket PATH] [--cni-conf-dir DIR] [--cni-bin-dir DIR] [--no-cni-install] [--interval SECONDS]
          [--wireguard auto|kernel|userspace] [--underlay-restrict] [--underlay-allow-tcp PORT,...] [--underlay-if IF,...]
  plan    [the run flags] print what a reconcile of the cached document would change (nothing is changed)
  attach  --tenant T --name N [--label k=v]... --netns PATH|NAME|PID [--ifname eth0] [--socket PATH] [--json]
  detach  --tenant T --name N [--socket PATH] [--json]
  install-cni [--cni-bin-dir DIR]
  rotate-key --tenant T [--wait SECONDS] [--socket PATH]  new WireGuard key for the tenant's interface: registered
          first, used once the coordinator distributed it (peers switch with the same version)
common: --state-dir DIR (default /var/lib/netwall/agent; env NETWALL_STATE_DIR)
env: NETWALL_COORDINATOR, NETWALL_SOCKET, NETWALL_CNI_CONF_DIR, NETWALL_CNI_BIN_DIR, NETWALL_INTERVAL`;

const options = {
  'state-dir': { type: 'string' },
  coordinator: { type: 'string' },
  token: { type: 'string' },
  name: { type: 'string' },
  endpoint: { type: 'string' },
  'mgmt-address': { type: 'string' },
  'public-address': { type: 'string' },
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
  if (!command || command === 'help' || v.help) {
    console.log(USAGE);
    return;
  }
  const env = process.env;
  const stateDir = v['state-dir'] ?? env.NETWALL_STATE_DIR ?? '/var/lib/netwall/agent';
  const socket = v.socket ?? env.NETWALL_SOCKET ?? DEFAULT_AGENT_SOCKET;

  switch (command) {
    case 'enroll': {
      const id = await enrollHost(stateDir, 'node', {
        coordinatorUrl: required(v.coordinator ?? env.NETWALL_COORDINATOR, '--coordinator'),
        token: required(v.token ?? env.NETWALL_ENROLL_TOKEN, '--token'),
        name: required(v.name, '--name'),
        ...(v.endpoint ? { endpoint: v.endpoint } : {}),
        ...(v['mgmt-address'] ? { mgmtAddress: v['mgmt-address'] } : {}),
        ...(v['public-address'] ? { publicAddress: v['public-address'] } : {}),
      });
      console.log(`enrolled node ${id.name} with ${id.coordinatorUrl}; identity in ${stateDir}`);
      return;
    }
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
    case 'plan': {
      const id = loadIdentity(stateDir);
      const cached = loadCachedDocument(stateDir, id.coordinatorKey);
      if (!cached) throw new NetwallError(`no cached desired state in ${stateDir}`);
      const rec = new Reconciler({
        runner: new ExecaRunner(),
        log: () => {},
        keyFileFor: (t) => ensureTenantKey(stateDir, t).privateKeyFile,
        firewall: nodeFirewall(firewallOptions(v)),
        firewallMemoryFile: join(stateDir, FIREWALL_MEMORY_FILE),
      });
      const changes = await rec.plan(cached.state);
      if (v.json) console.log(JSON.stringify(changes, null, 2));
      else if (changes.length === 0) console.log(`up to date with version ${cached.state.version}`);
      else for (const c of changes) console.log(describeChange(c));
      return;
    }
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
