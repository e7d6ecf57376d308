/**
 * CNI_ARGS parsing, workload naming and label conventions.
 *
 * Workload name, first that applies:
 *   1. CNI_ARGS `NETWALL_NAME=<name>` — must already be a valid name (else error 4);
 *   2. CNI_ARGS `K8S_POD_NAME=<name>` — podman passes the container name here
 *      (podman 4 sends `IgnoreUnknown=1;K8S_POD_NAME=<container name>`), sanitised:
 *      lowercased, anything outside [a-z0-9-] becomes `-`, trimmed to 63;
 *   3. `c-` + the first 12 characters of CNI_CONTAINERID, sanitised the same way.
 *
 * Labels, later sources override earlier ones:
 *   1. network config `args.labels` ({"k": "v"}) — static labels for every workload on that network;
 *   2. network config `args.cni.labels` — the CNI convention, an array of {"key", "value"} (an object map is accepted too);
 *   3. CNI_ARGS keys `NETWALL_LABEL_<key>=<value>` or `label.<key>=<value>`.
 *      Podman copies the CNI_ARGS of its own environment into every plugin call, so
 *      `CNI_ARGS='NETWALL_LABEL_app=web' podman run --network netwall-acme …` labels that container.
 */
import { LABEL_KEY_PATTERN, LABEL_VALUE_PATTERN, NAME_RE, type Labels } from '../../shared/names.js';
import { CniCode, CniError } from './types.js';

const LABEL_KEY_RE = new RegExp(LABEL_KEY_PATTERN);
const LABEL_VALUE_RE = new RegExp(LABEL_VALUE_PATTERN);
export const LABEL_ARG_PREFIXES = ['NETWALL_LABEL_', 'label.'] as const;

/** `K1=V1;K2=V2` → ordered pairs. A pair without `=` is invalid (error 4). */
export function parseCniArgs(raw: string | undefined): [string, string][] {
  if (!raw) return [];
  const out: [string, string][] = [];
  for (const part of raw.split(';')) {
    if (part === '') continue;
    const i = part.indexOf('=');
    if (i <= 0) throw new CniError(CniCode.InvalidEnv, `CNI_ARGS: invalid pair ${JSON.stringify(part)}, expected KEY=VALUE`);
    out.push([part.slice(0, i), part.slice(i + 1)]);
  }
  return out;
}

function checkLabel(key: string, value: string, where: string, code: number): void {
  if (!LABEL_KEY_RE.test(key)) throw new CniError(code, `${where}: invalid label key ${JSON.stringify(key)}`);
  if (!LABEL_VALUE_RE.test(value)) throw new CniError(code, `${where}: invalid value ${JSON.stringify(value)} for label ${key}`);
}

export function labelsFromCniArgs(pairs: readonly [string, string][]): Labels {
  const out: Labels = {};
  for (const [k, v] of pairs) {
    const prefix = LABEL_ARG_PREFIXES.find((p) => k.startsWith(p));
    if (!prefix) continue;
    const key = k.slice(prefix.length);
    checkLabel(key, v, 'CNI_ARGS', CniCode.InvalidEnv);
    out[key] = v;
  }
  return out;
}

/** Labels from the network config's `args` (error 7 when malformed). */
export function labelsFromConfigArgs(args: unknown): Labels {
  if (args === undefined || args === null) return {};
  if (typeof args !== 'object' || Array.isArray(args)) throw new CniError(CniCode.InvalidConfig, 'args: must be an object');
  const out: Labels = {};
  const take = (where: string, v: unknown): void => {
    if (v === undefined || v === null) return;
    if (Array.isArray(v)) {
      for (const item of v) {
        const kv = item as { key?: unknown; value?: unknown } | null;
        if (typeof kv?.key !== 'string' || typeof kv?.value !== 'string') {
          throw new CniError(CniCode.InvalidConfig, `${where}: entries must be {"key": string, "value": string}`);
        }
        checkLabel(kv.key, kv.value, where, CniCode.InvalidConfig);
        out[kv.key] = kv.value;
      }
      return;
    }
    if (typeof v !== 'object') throw new CniError(CniCode.InvalidConfig, `${where}: must be an object or a list of {key, value}`);
    for (const [k, val] of Object.entries(v as Record<string, unknown>)) {
      if (typeof val !== 'string') throw new CniError(CniCode.InvalidConfig, `${where}.${k}: must be a string`);
      checkLabel(k, val, where, CniCode.InvalidConfig);
      out[k] = val;
    }
  };
  const a = args as { labels?: unknown; cni?: unknown };
  take('args.labels', a.labels);
  if (a.cni !== undefined && a.cni !== null) {
    if (typeof a.cni !== 'object' || Array.isArray(a.cni)) throw new CniError(CniCode.InvalidConfig, 'args.cni: must be an object');
    take('args.cni.labels', (a.cni as { labels?: unknown }).labels);
  }
  return out;
}

/** Best effort: lowercase, [a-z0-9-] only, no leading/trailing '-', at most 63 characters. */
export function sanitizeName(raw: string): string {
  let s = raw.toLowerCase().replace(/[^a-z0-9-]/g, '-');
  s = s.replace(/^-+/, '').slice(0, 63).replace(/-+$/, '');
  return s;
}

export function workloadName(pairs: readonly [string, string][], containerId: string): string {
  const get = (k: string) => pairs.find(([key]) => key === k)?.[1];
  const explicit = get('NETWALL_NAME');
  if (explicit !== undefined) {
    if (!NAME_RE.test(explicit)) throw new CniError(CniCode.InvalidEnv, `CNI_ARGS: NETWALL_NAME ${JSON.stringify(explicit)} is not a valid name`);
    return explicit;
  }
  const pod = get('K8S_POD_NAME');
  if (pod) {
    const s = sanitizeName(pod);
    if (NAME_RE.test(s)) return s;
  }
  const fallback = sanitizeName(`c-${containerId.slice(0, 12)}`);
  if (!NAME_RE.test(fallback)) throw new CniError(CniCode.InvalidEnv, `CNI_CONTAINERID: cannot derive a workload name from ${JSON.stringify(containerId)}`);
  return fallback;
}
