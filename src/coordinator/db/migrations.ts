/**
 * The coordinator's schema, as SQL, one migration per PRAGMA user_version step.
 * Never edit a shipped migration: add the next one. Every column says what it
 * holds; times are ISO-8601 UTC text unless the name ends in `_ms`.
 */
export const MIGRATIONS: readonly string[] = [
  // 1: the initial schema.
  `
  CREATE TABLE meta (
    key   TEXT PRIMARY KEY,     -- setting name, e.g. 'revision'
    value TEXT NOT NULL         -- its value
  );
  INSERT INTO meta (key, value) VALUES ('revision', '0');

  CREATE TABLE tenants (
    id         INTEGER PRIMARY KEY,       -- stable numeric id (interface names use it)
    name       TEXT NOT NULL UNIQUE,      -- DNS-label name
    subnet     TEXT NOT NULL UNIQUE,      -- CIDR allocated from the pool; never overlaps another tenant's
    revision   INTEGER NOT NULL DEFAULT 0,-- global revision of the last change inside this tenant
    created_at TEXT NOT NULL              -- creation time
  );

  CREATE TABLE hosts (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,                          -- host name chosen at enrollment
    kind            TEXT NOT NULL CHECK (kind IN ('node','gateway')),
    identity_key    TEXT NOT NULL UNIQUE,                          -- ed25519 public key (base64); signs its requests
    endpoint_host   TEXT,                                          -- underlay IP peers dial; NULL = behind NAT
    port_base       INTEGER NOT NULL DEFAULT 51820,                -- first WireGuard listen port to hand out
    mgmt_address    TEXT,                                          -- address on the management network
    public_address  TEXT,                                          -- address on the public network
    version         INTEGER NOT NULL DEFAULT 0,                    -- revision of the last change to its desired state
    applied_version INTEGER NOT NULL DEFAULT 0,                    -- version the host last reported applied
    status          TEXT NOT NULL DEFAULT 'enrolled',              -- enrolled | ready | degraded
    status_detail   TEXT,                                          -- JSON of its last status report (errors, drops)
    last_seen       TEXT,                                          -- time of its last authenticated request
    created_at      TEXT NOT NULL
  );

  CREATE TABLE memberships (
    tenant_id      INTEGER NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    host_id        INTEGER NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
    slice          TEXT NOT NULL,   -- the host's slice of the tenant subnet (a gateway's is its /32)
    address        TEXT NOT NULL,   -- the host's own mesh address in the tenant
    listen_port    INTEGER NOT NULL,-- its WireGuard listen port for this tenant
    public_key     TEXT,            -- WireGuard public key the host registered (NULL until it does)
    key_updated_at TEXT,            -- when public_key last changed (rotation)
    PRIMARY KEY (tenant_id, host_id),
    UNIQUE (tenant_id, slice),
    UNIQUE (host_id, listen_port)
  );

  CREATE TABLE workloads (
    id         INTEGER PRIMARY KEY,
    tenant_id  INTEGER NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    host_id    INTEGER NOT NULL REFERENCES hosts(id) ON DELETE CASCADE, -- the node it runs on
    name       TEXT NOT NULL,      -- unique within the tenant
    labels     TEXT NOT NULL,      -- JSON object of label key -> value
    address    TEXT NOT NULL,      -- its /32 inside the node's slice
    created_at TEXT NOT NULL,
    UNIQUE (tenant_id, name),
    UNIQUE (tenant_id, address)
  );
  CREATE INDEX workloads_host ON workloads (host_id);

  CREATE TABLE released_addresses (
    tenant_id      INTEGER NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    address        TEXT NOT NULL,     -- a workload address given back
    released_at_ms INTEGER NOT NULL,  -- when; it is not handed out again until the quarantine has passed
    PRIMARY KEY (tenant_id, address)
  );

  CREATE TABLE policies (
    id         INTEGER PRIMARY KEY,
    tenant_id  INTEGER NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    spec       TEXT NOT NULL,   -- JSON {from, to, allow[]} as validated by the API
    updated_at TEXT NOT NULL,
    UNIQUE (tenant_id, name)
  );

  CREATE TABLE exposures (
    id         INTEGER PRIMARY KEY,
    tenant_id  INTEGER NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    spec       TEXT NOT NULL,   -- JSON {protocol, hostnames, mode, gateways, target, tls, publicPort, proxyProtocol}
    updated_at TEXT NOT NULL,
    UNIQUE (tenant_id, name)
  );

  CREATE TABLE exposure_hostnames (
    hostname    TEXT PRIMARY KEY,  -- a public hostname; unique across all tenants
    exposure_id INTEGER NOT NULL REFERENCES exposures(id) ON DELETE CASCADE
  );

  CREATE TABLE exposure_ports (
    host_id     INTEGER NOT NULL REFERENCES hosts(id) ON DELETE CASCADE, -- the gateway
    port        INTEGER NOT NULL,  -- a public TCP port on it; one exposure per (gateway, port)
    exposure_id INTEGER NOT NULL REFERENCES exposures(id) ON DELETE CASCADE,
    PRIMARY KEY (host_id, port)
  );

  CREATE TABLE exposure_gateways (
    exposure_id INTEGER NOT NULL REFERENCES exposures(id) ON DELETE CASCADE,
    host_id     INTEGER NOT NULL REFERENCES hosts(id) ON DELETE CASCADE, -- a gateway carrying the exposure
    PRIMARY KEY (exposure_id, host_id)
  );

  CREATE TABLE egress_rules (
    id         INTEGER PRIMARY KEY,
    tenant_id  INTEGER NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    spec       TEXT NOT NULL,   -- JSON {gateways, destinations[]}
    updated_at TEXT NOT NULL,
    UNIQUE (tenant_id, name)
  );

  CREATE TABLE egress_gateways (
    egress_id INTEGER NOT NULL REFERENCES egress_rules(id) ON DELETE CASCADE,
    host_id   INTEGER NOT NULL REFERENCES hosts(id) ON DELETE CASCADE, -- an outbound gateway of the rule
    PRIMARY KEY (egress_id, host_id)
  );

  CREATE TABLE tokens (
    id         INTEGER PRIMARY KEY,
    hash       TEXT NOT NULL UNIQUE,  -- sha256 of the token; the token itself is never stored
    kind       TEXT NOT NULL CHECK (kind IN ('tenant','enroll')),
    tenant_id  INTEGER REFERENCES tenants(id) ON DELETE CASCADE, -- tenant tokens: their tenant
    host_kind  TEXT CHECK (host_kind IN ('node','gateway')),      -- enrollment tokens: what may enroll
    name       TEXT NOT NULL,         -- tenant tokens: a label; enrollment tokens: the host name to enroll
    expires_at TEXT,                  -- NULL = no expiry (tenant tokens only)
    used_at    TEXT,                  -- enrollment tokens: when consumed (single use)
    created_at TEXT NOT NULL
  );

  CREATE TABLE audit_log (
    id     INTEGER PRIMARY KEY,
    at     TEXT NOT NULL,   -- when
    actor  TEXT NOT NULL,   -- who: 'admin', 'tenant:<tenant>/<token name>', 'host:<name>', 'enroll:<name>'
    action TEXT NOT NULL,   -- what, e.g. 'workload.create'
    target TEXT NOT NULL,   -- on what, e.g. 'acme/web-1'
    detail TEXT             -- JSON with the change's particulars
  );
  `,
  // 2: router-client keys and the credentials issued for them (tunnel-mode entry points).
  `
  CREATE TABLE router_keys (
    exposure_id INTEGER NOT NULL REFERENCES exposures(id) ON DELETE CASCADE,
    workload_id INTEGER NOT NULL REFERENCES workloads(id) ON DELETE CASCADE,  -- the entry point
    public_key  TEXT NOT NULL,   -- the router client's ed25519 public key; its private key stays on the node
    credential  TEXT NOT NULL,   -- JSON RouterCredential: the grant for that key, signed by the coordinator
    expires_at  TEXT NOT NULL,   -- the grant's expiry; the node registers again before it
    PRIMARY KEY (exposure_id, workload_id)
  );
  `,
  // 3: WireGuard key rotation in two steps: the host switches to its next key first, its peers get it after.
  `
  ALTER TABLE memberships ADD COLUMN next_public_key TEXT;  -- a rotation's new key: in the host's own document only, until the host confirms the switch (then public_key)
  `,
];
