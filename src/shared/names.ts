/** Name rules shared by the API, the CLI and the agents. */

/** Tenants, hosts, workloads, policies, exposures, egress rules: a DNS label. */
export const NAME_PATTERN = '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$';
export const NAME_RE = new RegExp(NAME_PATTERN);

/** Label keys may carry a prefix like `app.kubernetes.io/name`. */
export const LABEL_KEY_PATTERN = '^[a-z0-9A-Z]([a-zA-Z0-9._/-]{0,61}[a-zA-Z0-9])?$';
export const LABEL_VALUE_PATTERN = '^([a-zA-Z0-9]([a-zA-Z0-9._-]{0,61}[a-zA-Z0-9])?)?$';

/** Hostnames served by gateways (HTTP Host / TLS SNI); lowercase, no trailing dot. */
export const HOSTNAME_PATTERN =
  '^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\\.([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?))+$';

export type Labels = Record<string, string>;

/** A selector matches a workload when every key/value it names is on the workload. */
export function matchesSelector(selector: Labels, labels: Labels): boolean {
  for (const k in selector) if (labels[k] !== selector[k]) return false;
  return true;
}

/** Stable text form of a selector, e.g. `app=web,tier=front`; `*` for the empty selector. */
export function selectorKey(selector: Labels): string {
  const keys = Object.keys(selector).sort();
  if (keys.length === 0) return '*';
  return keys.map((k) => `${k}=${selector[k]}`).join(',');
}
