#!/usr/bin/env node
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { isIpv4 } from '../shared/ipv4.js';
import { buildApp } from './app.js';
import { loadAdminToken, loadSigningKey, parseConfig, USAGE } from './config.js';

async function main(): Promise<void> {
  let config;
  try {
    config = parseConfig(process.argv.slice(2), process.env);
  } catch (err) {
    console.error(`netwall-coordinator: ${(err as Error).message}\n${USAGE}`);
    process.exit(2);
  }
  mkdirSync(dirname(config.dbPath), { recursive: true, mode: 0o700 });
  const admin = loadAdminToken(config.dbPath, process.env);
  const app = await buildApp({
    db: config.dbPath,
    adminToken: admin.token,
    signingKey: loadSigningKey(config.dbPath),
    ipam: config.ipam,
    logger: { level: config.logLevel },
    // A specific listen address is one containers must never reach (0.0.0.0 and loopback say nothing).
    coordinatorAddresses: isIpv4(config.host) && config.host !== '0.0.0.0' && !config.host.startsWith('127.') ? [config.host] : [],
  });
  const shutdown = (signal: string) => {
    app.log.info({ signal }, 'shutting down');
    app.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once('SIGTERM', shutdown);
  process.once('SIGINT', shutdown);
  await app.listen({ host: config.host, port: config.port });
  app.log.info({ db: config.dbPath, adminToken: admin.source, pool: config.ipam.pool }, 'netwall coordinator ready');
}

main().catch((err: Error) => {
  console.error(`netwall-coordinator: ${err.message}`);
  process.exit(1);
});
