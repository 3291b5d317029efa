#!/usr/bin/env node
// Run a script under the real MicroPython interpreter (the WebAssembly port from npm,
// @micropython/micropython-webassembly-pyscript), for the firmware tests.
//
// Usage:
//   node tests/tools/micropython_run.mjs [options] SCRIPT.py|-
//
//   --map HOST=DEST   copy a host file or directory (recursively) into the interpreter's
//                     in-memory filesystem at DEST (absolute path inside it); repeatable.
//   --path DIR        put DIR (inside the interpreter) at the front of sys.path; repeatable,
//                     the first given ends up first.
//   --heap BYTES      initial GC heap (suffix k or m allowed; default 4m).  The port grows
//                     the heap in further chunks when it runs out, so this is not a limit.
//   --pystack N       Python stack in words (default 4096).
//   --cwd DIR         working directory inside the interpreter (default /).
//   --export DEST=HOST after the run (also after a failure) copy DEST from the in-memory
//                     filesystem back to HOST on the host; repeatable.
//   --arg VALUE       appended to sys.argv (sys.argv[0] is the script name); repeatable.
//
// The script's stdout goes to stdout, tracebacks to stderr.  Exit status: 0 when the
// script ran to its end, the code of a SystemExit(n), 1 for any other uncaught exception,
// 2 for a usage error.
//
// Stepping: if the script leaves a callable __step__ in its globals, the runner then
// calls it again and again, each call a separate top-level run, until it returns a
// false value.  The WebAssembly port only frees memory between top-level runs (inside
// one, gc.collect() cannot reclaim what that run allocated), so a memory measurement
// that needs a working GC drives its work in steps this way.
//
// Why it copies tests/fakes/asyncio: see tests/fakes/asyncio/README.txt (the test helper
// maps it like any other directory and puts it first on sys.path).

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const pkg = path.resolve(here, '../../node_modules/@micropython/micropython-webassembly-pyscript/micropython.mjs');

function usage(msg) {
  process.stderr.write(`micropython_run: ${msg}\n`);
  process.exit(2);
}

function parseSize(s) {
  const m = /^(\d+)([kKmM]?)$/.exec(s);
  if (!m) usage(`bad size ${s}`);
  return parseInt(m[1], 10) * (m[2] ? (m[2].toLowerCase() === 'k' ? 1024 : 1048576) : 1);
}

const maps = [], paths = [], exports = [], args = [];
let heap = 4 * 1048576, pystack = 4096, cwd = '/', script = null;
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  const next = () => { if (i + 1 >= argv.length) usage(`${a} needs a value`); return argv[++i]; };
  if (a === '--map' || a === '--export') {
    const v = next(), eq = v.indexOf('=');
    if (eq < 1) usage(`${a} wants A=B, got ${v}`);
    (a === '--map' ? maps : exports).push([v.slice(0, eq), v.slice(eq + 1)]);
  } else if (a === '--path') paths.push(next());
  else if (a === '--heap') heap = parseSize(next());
  else if (a === '--pystack') pystack = parseInt(next(), 10);
  else if (a === '--cwd') cwd = next();
  else if (a === '--arg') args.push(next());
  else if (a.startsWith('--')) usage(`unknown option ${a}`);
  else if (script === null) script = a;
  else usage(`unexpected argument ${a}`);
}
if (script === null) usage('no script given');
const source = script === '-' ? fs.readFileSync(0, 'utf8') : fs.readFileSync(script, 'utf8');

const { loadMicroPython } = await import(pathToFileURL(pkg).href);
const mp = await loadMicroPython({
  heapsize: heap,
  pystack,
  linebuffer: false,
  stdout: (bytes) => process.stdout.write(bytes),
  stderr: (bytes) => process.stderr.write(bytes),
});
const FS = mp.FS;

function copyIn(host, dest) {
  const st = fs.statSync(host);
  if (st.isDirectory()) {
    FS.mkdirTree(dest);
    for (const name of fs.readdirSync(host)) {
      if (name === '__pycache__' || name.startsWith('.')) continue;
      copyIn(path.join(host, name), dest + '/' + name);
    }
  } else {
    FS.mkdirTree(path.posix.dirname(dest));
    FS.writeFile(dest, fs.readFileSync(host));
  }
}

function copyOut(src, host) {
  let st;
  try { st = FS.stat(src); } catch { return; }
  if (FS.isDir(st.mode)) {
    fs.mkdirSync(host, { recursive: true });
    for (const name of FS.readdir(src)) {
      if (name === '.' || name === '..') continue;
      copyOut(src + '/' + name, path.join(host, name));
    }
  } else {
    fs.mkdirSync(path.dirname(host), { recursive: true });
    fs.writeFileSync(host, FS.readFile(src));
  }
}

for (const [host, dest] of maps) {
  if (!dest.startsWith('/')) usage(`--map destination must be absolute: ${dest}`);
  if (!fs.existsSync(host)) usage(`no such host path ${host}`);
  copyIn(host, dest);
}
FS.mkdirTree(cwd);

const pre = [
  'import sys',
  `sys.argv[:] = ${JSON.stringify([script, ...args])}`,
  `sys.path[:0] = ${JSON.stringify(paths)}`,
  `import os as _os; _os.chdir(${JSON.stringify(cwd)}); del _os`,
].join('\n');

let status = 0;
try {
  mp.runPython(pre);
  mp.runPython(source);
  mp.runPython("__more__ = callable(globals().get('__step__'))");
  while (mp.globals.get('__more__')) {
    mp.runPython("__more__ = bool(__step__())");
  }
} catch (e) {
  if (e && e.name === 'PythonError') {
    if (e.type === 'SystemExit') {
      const m = /SystemExit: ?(-?\d+)?\s*$/.exec(e.message);
      status = m && m[1] !== undefined ? parseInt(m[1], 10) & 0xff : 0;
      if (!m) { process.stderr.write(e.message); status = 1; }
    } else {
      process.stderr.write(e.message);
      status = 1;
    }
  } else {
    process.stderr.write(String(e && e.stack || e) + '\n');
    status = 1;
  }
}
for (const [src, host] of exports) copyOut(src, host);
process.exitCode = status;
