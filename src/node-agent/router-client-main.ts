#!/usr/bin/env node
/**
 * netwall-router-client: the router client as its own process, so the node
 * agent can start it inside an entry-point container's network namespace (or
 * an operator can run it by hand inside an image):
 *
 *   node dist/node-agent/router-client-main.js \
 *     --gateway gw1@10.77.0.1:7400 --gateway gw2@10.77.0.2:7400 \
 *     --key /run/netwall/rc/web.key --credential /run/netwall/rc/web.credential.json \
 *     --target 127.0.0.1:8080
 *
 * The key and credential files are read again before every dial, so the agent
 * renews a credential by rewriting its file (atomically). It listens on
 * nothing. Logs go to stderr, one line each. SIGTERM/SIGINT: GOAWAY to every
 * gateway, up to 5 s for open streams, exit 0. Errors: one line, exit 1 (2 for usage).
 */
import { parseArgs } from 'node:util';
import { ROUTER_PORT } from '../shared/desired.js';
import { ValidationError } from '../shared/errors.js';
import { loadAuth, parseGatewayArg, parseHostPort, RouterClient, type RouterAuth } from './router-client.js';

const USAGE = `usage: netwall-router-client --gateway [NAME@]ADDRESS[:PORT]... --key FILE --credential FILE --target HOST:PORT
  --gateway     a gateway's mesh address (default port ${ROUTER_PORT}); repeat for each gateway.
                With NAME@ the gateway must call itself NAME in its hello (recommended).
  --key         the router client's ed25519 secret key: base64 (64 bytes, tweetnacl form) or JSON {"secretKey": ...}
  --credential  the coordinator-issued credential, JSON {"grant": ..., "signature": ...}
  --target      the app inside this network namespace, e.g. 127.0.0.1:8080`;

class UsageError extends Error {}

async function main(argv: string[]): Promise<void> {
  const { values: v } = parseArgs({
    args: argv,
    options: {
      gateway: { type: 'string', multiple: true },
      key: { type: 'string' },
      credential: { type: 'string' },
      target: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: false,
  });
  if (v.help) {
    console.log(USAGE);
    return;
  }
  if (!v.gateway?.length) throw new UsageError('at least one --gateway is required');
  if (!v.key) throw new UsageError('--key is required');
  if (!v.credential) throw new UsageError('--credential is required');
  if (!v.target) throw new UsageError('--target is required');
  const gateways = v.gateway.map(parseGatewayArg);
  const target = parseHostPort(v.target, null, '--target');
  const keyFile = v.key;
  const credentialFile = v.credential;
  const first = loadAuth(keyFile, credentialFile);
  const log = (line: string) => process.stderr.write(`${new Date().toISOString()} router-client ${first.grant.tenant}/${first.grant.exposure}: ${line}\n`);

  let last: RouterAuth = first;
  const client = new RouterClient({
    gateways,
    credential: first.credential,
    secretKey: first.secretKey,
    // Re-read before each dial; keep the last good pair if the files are mid-rewrite or broken.
    auth: () => {
      try {
        last = loadAuth(keyFile, credentialFile);
      } catch (e) {
        log(`keeping the previous credential: ${(e as Error).message}`);
      }
      return last;
    },
    target,
    log,
  });
  for (const g of gateways) if (g.anyName) log(`gateway ${g.meshAddress}:${g.routerPort} not pinned by name (use NAME@ADDRESS)`);
  client.on('error-gateway', () => {}); // logged by the client
  client.start();
  log(`serving ${target.host}:${target.port} through ${gateways.map((g) => `${g.host}@${g.meshAddress}:${g.routerPort}`).join(', ')}`);

  await new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      log(`${sig}: closing`);
      void client.stop(5000).then(resolve);
      // Whatever a dead path still holds open, the process ends.
      setTimeout(() => {
        log('streams did not close in time: exiting');
        resolve();
      }, 8000).unref();
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}

main(process.argv.slice(2)).then(
  () => process.exit(0),
  (err: unknown) => {
    if (err instanceof UsageError || err instanceof ValidationError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      console.error(`netwall-router-client: ${(err as Error).message}\n${USAGE}`);
      process.exit(2);
    }
    console.error(`netwall-router-client: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
