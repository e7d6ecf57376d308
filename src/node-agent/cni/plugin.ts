/**
 * The netwall CNI plugin as a function: (environment, stdin, injected deps) →
 * (stdout, stderr, exit code). main.ts only wires real deps and process I/O,
 * so unit tests drive every path with a FakeRunner and a fake agent.
 *
 * Division of labour: ADD and DEL go to the agent's unix socket — the agent
 * holds the node identity, asks the coordinator for the address
 * (HostClient.createWorkload), builds the veth (attach.ts) and reconciles the
 * firewall at once. The plugin stays thin and unprivileged in logic. CHECK is
 * local and read-only (observe + plan from attach.ts through the runner), so
 * it works even when the agent is down. If the agent is unreachable on DEL,
 * the plugin removes the veth itself (traffic stops) and answers code 11 "try
 * again later", because the coordinator has not released the workload yet.
 *
 * Every input is validated before anything is touched: a bad environment,
 * stdin or config yields a CNI error object on stdout, a non-zero exit, and no
 * command run and no agent call.
 */
import type { Runner } from '../../shared/runner.js';
import { NetwallError, ValidationError } from '../../shared/errors.js';
import { NAME_RE } from '../../shared/names.js';
import { checkWorkload, CONTAINER_ID_RE, detachWorkload, isValidIfname, isValidMtu } from '../attach.js';
import { DEFAULT_AGENT_SOCKET, UnavailableError, type AttachRequest, type AttachResponse, type DetachRequest, type DetachResponse } from '../socket.js';
import { labelsFromCniArgs, labelsFromConfigArgs, parseCniArgs, workloadName } from './args.js';
import {
  CNI_VERSION,
  CniCode,
  CniError,
  PLUGIN_TYPE,
  SUPPORTED_VERSIONS,
  type CniErrorOutput,
  type CniResult,
  type CniVersionOutput,
  type NetwallNetConf,
  type SupportedVersion,
} from './types.js';

export type CniEnv = Record<string, string | undefined>;

/** The part of AgentClient the plugin uses. */
export interface AgentApi {
  attach(req: AttachRequest): Promise<AttachResponse>;
  detach(req: DetachRequest): Promise<DetachResponse>;
}

export interface PluginDeps {
  runner: Runner;
  /** Builds the agent client for the config's socket path. */
  agent: (socketPath: string) => AgentApi;
  netnsExists: (path: string) => boolean;
}

export interface PluginOutput {
  stdout: string;
  stderr: string;
  exitCode: number;
}

const COMMANDS = ['ADD', 'DEL', 'CHECK', 'VERSION', 'GC'] as const;
type Command = (typeof COMMANDS)[number];

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Decode and validate the network configuration on stdin (codes 6, 1, 7). */
export function parseNetConf(stdin: string): NetwallNetConf {
  if (!stdin.trim()) throw new CniError(CniCode.DecodeFailure, 'stdin: empty, expected the network configuration as JSON');
  let raw: unknown;
  try {
    raw = JSON.parse(stdin);
  } catch (err) {
    throw new CniError(CniCode.DecodeFailure, 'stdin: malformed network configuration JSON', (err as Error).message);
  }
  if (!isObject(raw)) throw new CniError(CniCode.DecodeFailure, 'stdin: network configuration must be a JSON object');
  const v = raw.cniVersion;
  if (typeof v !== 'string' || !(SUPPORTED_VERSIONS as readonly string[]).includes(v)) {
    throw new CniError(
      CniCode.IncompatibleVersion,
      `cniVersion: ${v === undefined ? 'missing' : JSON.stringify(v)} is not supported`,
      `supported versions: ${SUPPORTED_VERSIONS.join(', ')}`,
    );
  }
  const bad = (msg: string): never => {
    throw new CniError(CniCode.InvalidConfig, msg);
  };
  if (typeof raw.name !== 'string' || raw.name === '') bad('name: the network name is required');
  if (raw.type !== PLUGIN_TYPE) bad(`type: expected "${PLUGIN_TYPE}", got ${JSON.stringify(raw.type)}`);
  if (typeof raw.tenant !== 'string' || !NAME_RE.test(raw.tenant)) bad(`tenant: invalid tenant name ${JSON.stringify(raw.tenant)}`);
  if (raw.agentSocket !== undefined && (typeof raw.agentSocket !== 'string' || !raw.agentSocket.startsWith('/'))) {
    bad('agentSocket: must be an absolute path');
  }
  if (raw.mtu !== undefined && !isValidMtu(raw.mtu)) bad(`mtu: must be an integer 576..65535, got ${JSON.stringify(raw.mtu)}`);
  if (raw.runtimeConfig !== undefined && !isObject(raw.runtimeConfig)) bad('runtimeConfig: must be an object');
  if (raw.prevResult !== undefined && !isObject(raw.prevResult)) bad('prevResult: must be an object');
  const labels = labelsFromConfigArgs(raw.args);
  return {
    cniVersion: v as SupportedVersion,
    name: raw.name as string,
    type: PLUGIN_TYPE,
    tenant: raw.tenant as string,
    ...(raw.agentSocket !== undefined ? { agentSocket: raw.agentSocket as string } : {}),
    ...(raw.mtu !== undefined ? { mtu: raw.mtu as number } : {}),
    labels,
    ...(raw.prevResult !== undefined ? { prevResult: raw.prevResult as unknown as CniResult } : {}),
  };
}

interface Invocation {
  containerId: string;
  netns: string | null;
  ifname: string;
  args: [string, string][];
}

/** The CNI_* variables a command needs (code 4 when missing or malformed). */
export function parseEnv(env: CniEnv, command: Command): Invocation {
  const need = (key: string): string => {
    const v = env[key];
    if (v === undefined || v === '') throw new CniError(CniCode.InvalidEnv, `${key}: required for ${command}`);
    return v;
  };
  const containerId = need('CNI_CONTAINERID');
  if (!CONTAINER_ID_RE.test(containerId)) throw new CniError(CniCode.InvalidEnv, `CNI_CONTAINERID: invalid container id ${JSON.stringify(containerId)}`);
  // DEL may come without a namespace (the container is already gone).
  const netns = command === 'DEL' ? env.CNI_NETNS || null : need('CNI_NETNS');
  if (netns !== null && !netns.startsWith('/')) throw new CniError(CniCode.InvalidEnv, `CNI_NETNS: must be an absolute path, got ${JSON.stringify(netns)}`);
  const ifname = need('CNI_IFNAME');
  if (!isValidIfname(ifname)) throw new CniError(CniCode.InvalidEnv, `CNI_IFNAME: invalid interface name ${JSON.stringify(ifname)}`);
  need('CNI_PATH');
  return { containerId, netns, ifname, args: parseCniArgs(env.CNI_ARGS) };
}

/** Maps an error from the agent (or the runner) to a CNI error. */
export function toCniError(err: unknown, fallback: number = CniCode.Internal): CniError {
  if (err instanceof CniError) return err;
  if (err instanceof UnavailableError) return new CniError(CniCode.TryAgainLater, 'netwall agent unavailable, try again later', err.message);
  if (err instanceof NetwallError) {
    switch (err.code) {
      case 'invalid': {
        const field = err instanceof ValidationError ? err.field : undefined;
        const envField = field && ['netns', 'ifname', 'containerId'].includes(field);
        return new CniError(envField ? CniCode.InvalidEnv : CniCode.InvalidConfig, 'netwall agent rejected the request', err.message);
      }
      case 'conflict':
        return new CniError(CniCode.Conflict, 'workload name already in use on this node', err.message);
      case 'exhausted':
      case 'not_found':
      case 'forbidden':
      case 'unauthorized':
        return new CniError(CniCode.AllocationFailed, 'netwall could not place the workload', err.message);
      case 'rate_limited':
        return new CniError(CniCode.TryAgainLater, 'coordinator rate-limited the request, try again later', err.message);
      default:
        return new CniError(fallback, 'netwall attach failed', err.message);
    }
  }
  return new CniError(fallback, 'netwall plugin failed', err instanceof Error ? err.message : String(err));
}

/** The ADD result in the version the config asked for. */
export function buildResult(version: SupportedVersion, res: AttachResponse): CniResult {
  const a = res.attachment;
  return {
    cniVersion: version,
    interfaces: [
      { name: a.hostInterface.name, mac: a.hostInterface.mac },
      { name: a.containerInterface.name, mac: a.containerInterface.mac, sandbox: a.containerInterface.sandbox },
    ],
    ips: [
      {
        ...(version === '0.4.0' ? { version: '4' as const } : {}),
        address: `${a.address}/32`,
        gateway: a.gateway,
        interface: 1,
      },
    ],
    routes: a.routes,
    dns: {},
  };
}

function errorOutput(version: string, err: CniError): PluginOutput {
  const body: CniErrorOutput = { cniVersion: version, code: err.code, msg: err.msg, ...(err.details ? { details: err.details } : {}) };
  return { stdout: `${JSON.stringify(body)}\n`, stderr: '', exitCode: 1 };
}

function addressFromPrevResult(prev: CniResult | undefined): string {
  if (!prev) throw new CniError(CniCode.InvalidConfig, 'prevResult: required for CHECK');
  const ip = (Array.isArray(prev.ips) ? prev.ips : []).find((x) => typeof x?.address === 'string' && /^\d+\.\d+\.\d+\.\d+\/32$/.test(x.address));
  if (!ip) throw new CniError(CniCode.InvalidConfig, 'prevResult: no IPv4 /32 address in ips');
  return ip.address.slice(0, -3);
}

/** Runs one plugin invocation. Never throws: failures become CNI error objects. */
export async function runCniPlugin(env: CniEnv, stdin: string, deps: PluginDeps): Promise<PluginOutput> {
  let version: string = CNI_VERSION;
  try {
    const command = env.CNI_COMMAND;
    if (!command) throw new CniError(CniCode.InvalidEnv, 'CNI_COMMAND: required');
    if (!(COMMANDS as readonly string[]).includes(command)) throw new CniError(CniCode.InvalidEnv, `CNI_COMMAND: unsupported command ${JSON.stringify(command)}`);
    if (command === 'VERSION') {
      const out: CniVersionOutput = { cniVersion: CNI_VERSION, supportedVersions: [...SUPPORTED_VERSIONS] };
      return { stdout: `${JSON.stringify(out)}\n`, stderr: '', exitCode: 0 };
    }
    const conf = parseNetConf(stdin);
    version = conf.cniVersion;
    // GC (spec 1.1): nothing to do here — the agent collects orphaned veths itself (attach.listAttached).
    if (command === 'GC') return { stdout: '', stderr: '', exitCode: 0 };
    const inv = parseEnv(env, command as Command);
    const labels = { ...conf.labels, ...labelsFromCniArgs(inv.args) };
    const name = workloadName(inv.args, inv.containerId);
    const socketPath = conf.agentSocket ?? DEFAULT_AGENT_SOCKET;

    if (command === 'ADD') {
      if (!deps.netnsExists(inv.netns as string)) throw new CniError(CniCode.InvalidEnv, `CNI_NETNS: ${inv.netns} does not exist`);
      let res: AttachResponse;
      try {
        res = await deps.agent(socketPath).attach({
          tenant: conf.tenant,
          name,
          labels,
          netns: inv.netns as string,
          ifname: inv.ifname,
          containerId: inv.containerId,
          ...(conf.mtu !== undefined ? { mtu: conf.mtu } : {}),
        });
      } catch (err) {
        throw toCniError(err, CniCode.InterfaceFailed);
      }
      return { stdout: `${JSON.stringify(buildResult(conf.cniVersion, res))}\n`, stderr: '', exitCode: 0 };
    }

    if (command === 'CHECK') {
      const address = addressFromPrevResult(conf.prevResult);
      if (!deps.netnsExists(inv.netns as string)) throw new CniError(CniCode.InvalidEnv, `CNI_NETNS: ${inv.netns} does not exist`);
      let problems: string[];
      try {
        problems = await checkWorkload(deps.runner, {
          netns: inv.netns as string,
          tenant: conf.tenant,
          name,
          address,
          ifname: inv.ifname,
          containerId: inv.containerId,
          ...(conf.mtu !== undefined ? { mtu: conf.mtu } : {}),
        });
      } catch (err) {
        throw toCniError(err, CniCode.CheckFailed);
      }
      if (problems.length > 0) throw new CniError(CniCode.CheckFailed, `netwall attachment of ${conf.tenant}/${name} is not as expected`, problems.join('; '));
      return { stdout: '', stderr: '', exitCode: 0 };
    }

    // DEL: idempotent; "already gone" is success.
    try {
      await deps.agent(socketPath).detach({ tenant: conf.tenant, name, ifname: inv.ifname, containerId: inv.containerId });
      return { stdout: '', stderr: '', exitCode: 0 };
    } catch (err) {
      if (!(err instanceof UnavailableError)) throw toCniError(err);
      let local = 'veth removed locally';
      try {
        const r = await detachWorkload(deps.runner, { tenant: conf.tenant, name, containerId: inv.containerId });
        local = r.foreign ? 'veth belongs to another container, left alone' : r.removed ? 'veth removed locally' : 'no veth was present';
      } catch (e) {
        local = `local veth removal failed: ${(e as Error).message}`;
      }
      throw new CniError(
        CniCode.TryAgainLater,
        `netwall agent unavailable: ${conf.tenant}/${name} not released, try again later`,
        `${err.message}; ${local}`,
      );
    }
  } catch (err) {
    return errorOutput(version, toCniError(err));
  }
}
