// Stands in for the wizer binary when componentize.mjs runs componentize-js, so that
// the same sources always give the same component, byte for byte.
//
// componentize-js 0.23.0 pre-initializes StarlingMonkey with wizer, which snapshots the
// engine's memory after it has loaded the plugin's modules. Left alone, that snapshot
// holds things that change from one build to the next:
//
// - bytes from WASI `random_get` (SpiderMonkey's hash-code scrambler keys, Math.random
//   state, hash table seeds), and values derived from them;
// - readings of WASI `clock_time_get` (GC and engine timestamps);
// - the last file status the engine read (WASI `path_filestat_get`, for a module): its
//   inode number is a hash keyed afresh by every wizer process, its times those of the
//   staged copy;
// - the random temporary directory componentize-js works in (its path is in the runtime
//   arguments the engine keeps, and in the name of a preopened directory), and the
//   absolute path of the directory the sources were staged in;
// - the environment, which the engine keeps too: the shell that runs this script adds
//   PWD (the staging directory) to what componentize-js passes.
//
// So, before running the real wizer, this script
//
// 1. rewrites the engine module so that, until its initialization function has returned,
//    `random_get` fills buffers from a fixed-seed generator, `clock_time_get` reads a
//    counter that advances 1 ms per call, and `path_filestat_get` reports an inode derived
//    from the path and zero times; a global set at the end of initialization (and
//    snapshotted with it) sends every later call straight to the real WASI functions, so
//    a running plugin gets real randomness, time and file status;
// 2. gives the temporary directory a fixed name inside the guest (`/runcap-init`), makes
//    stack traces strip the guest's `/` rather than the host path of the sources, and
//    passes wizer only the environment variables componentize-js set.
//
// It checks that componentize-js called it the way 0.23.0 does and stops otherwise.

import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import binaryen from 'binaryen';
import wizerBin from '@bytecodealliance/wizer';

const INIT_DIR = '/runcap-init';

function die(message) {
  process.stderr.write(`runcap deterministic wizer: ${message}\n`);
  process.exit(1);
}

const args = process.argv.slice(2);
const input = args.at(-1);
const dirIdx = args.findIndex((a) => a.startsWith('--dir='));
const mapIdx = args.findIndex((a) => a.startsWith('--mapdir=/::'));
if (!input?.endsWith('.wasm') || dirIdx < 0 || mapIdx < 0 || !args.includes('--init-func')) {
  die(`unexpected arguments from componentize-js (expected those of 0.23.0): ${args.join(' ')}`);
}
const initDir = args[dirIdx].slice('--dir='.length);
const workspace = args[mapIdx].slice('--mapdir=/::'.length);

const runtimeArgs = readFileSync(0, 'utf8');
const expectedHead = `--initializer-script-path ${initDir}/initializer.js --strip-path-prefix ${workspace}/ `;
if (!runtimeArgs.startsWith(expectedHead)) {
  die(`unexpected runtime arguments from componentize-js: ${runtimeArgs}`);
}
const fixedArgs = `--initializer-script-path ${INIT_DIR}/initializer.js --strip-path-prefix / ${runtimeArgs.slice(expectedHead.length)}`;
args[dirIdx] = `--mapdir=${INIT_DIR}::${initDir}`;

// 1. Deterministic randomness and time during initialization only. The engine module
// depends on the WIT world, not on the plugin's sources, so the rewrite (about 8 s of
// Binaryen) is kept in node_modules/.cache, keyed by the module and this script.
const engine = readFileSync(input);
const key = createHash('sha256').update(readFileSync(fileURLToPath(import.meta.url))).update(engine).digest('hex');
const cacheDir = join(dirname(fileURLToPath(import.meta.url)), '..', 'node_modules', '.cache', 'runcap-wizer');
const rewritten = join(cacheDir, `${key}.wasm`);
if (!existsSync(rewritten)) {
  mkdirSync(cacheDir, { recursive: true });
  const partial = `${rewritten}.${process.pid}.partial`;
  writeFileSync(partial, deterministic(engine));
  renameSync(partial, rewritten);
}
args[args.length - 1] = rewritten;

// 2. Run the real wizer on it. Its guest inherits the environment, which must hold only
// what componentize-js set: the shell that started this script adds PWD and others.
const env = Object.fromEntries(
  Object.entries(process.env).filter(([k]) =>
    /^(DEBUG|SOURCE_NAME|FEATURE_CLOCKS|EXPORT_CNT|IMPORT_CNT|EXPORT\d+_[A-Z]+|IMPORT\d+_[A-Z]+)$/.test(k),
  ),
);
const result = spawnSync(wizerBin, args, { input: fixedArgs, env, stdio: ['pipe', 'inherit', 'inherit'] });
if (result.error) die(`could not run ${wizerBin}: ${result.error.message}`);
process.exit(result.status ?? 1);

/** The engine module with WASI inputs made deterministic until initialization ends. */
function deterministic(engine) {
  // (Binaryen warns that it skips a name subsection it does not know; that is harmless.)
  const writeStderr = process.stderr.write.bind(process.stderr);
  process.stderr.write = (chunk, ...rest) =>
    /^warning: unknown name subsection/.test(String(chunk)) ? true : writeStderr(chunk, ...rest);
  const m = binaryen.readBinary(engine);
  process.stderr.write = writeStderr;
  m.setFeatures(binaryen.Features.All);
  const { i32, i64, none } = binaryen;

  function importedFunction(module, base) {
    const found = [];
    for (let i = 0; i < m.getNumFunctions(); i++) {
      const info = binaryen.getFunctionInfo(m.getFunctionByIndex(i));
      if (info.module === module && info.base === base) found.push(info);
    }
    if (found.length !== 1) die(`expected one import of ${module}.${base}, found ${found.length}`);
    return found[0];
  }

  let initFunc;
  for (let i = 0; i < m.getNumExports(); i++) {
    const e = binaryen.getExportInfo(m.getExportByIndex(i));
    if (e.name === 'componentize.wizer' && e.kind === binaryen.ExternalFunction) initFunc = e.value;
  }
  if (!initFunc) die('the engine exports no componentize.wizer function');

  const DONE = 'runcap$init_done';
  const SEED = 'runcap$init_seed';
  const TICKS = 'runcap$init_ticks';
  m.addGlobal(DONE, i32, true, m.i32.const(0));
  m.addGlobal(SEED, i64, true, m.i64.const(0x4f6cdd1d2545f491n));
  m.addGlobal(TICKS, i64, true, m.i64.const(0n));

  // random_get(buf: i32, len: i32) -> errno
  const random = importedFunction('wasi_snapshot_preview1', 'random_get');
  m.removeFunction(random.name);
  m.addFunctionImport('runcap$random_get', 'wasi_snapshot_preview1', 'random_get', binaryen.createType([i32, i32]), i32);
  const [buf, len, i] = [0, 1, 2];
  m.addFunction(
    random.name,
    binaryen.createType([i32, i32]),
    i32,
    [i32],
    m.block(null, [
      m.if(
        m.global.get(DONE, i32),
        m.return(m.call('runcap$random_get', [m.local.get(buf, i32), m.local.get(len, i32)], i32)),
      ),
      m.local.set(i, m.i32.const(0)),
      m.block('filled', [
        m.loop(
          'next',
          m.block(null, [
            m.br('filled', m.i32.ge_u(m.local.get(i, i32), m.local.get(len, i32))),
            // A 64-bit LCG (Knuth's MMIX constants); each byte is the top byte of the state.
            m.global.set(
              SEED,
              m.i64.add(
                m.i64.mul(m.global.get(SEED, i64), m.i64.const(6364136223846793005n)),
                m.i64.const(1442695040888963407n),
              ),
            ),
            m.i32.store8(
              0,
              1,
              m.i32.add(m.local.get(buf, i32), m.local.get(i, i32)),
              m.i32.wrap(m.i64.shr_u(m.global.get(SEED, i64), m.i64.const(56n))),
            ),
            m.local.set(i, m.i32.add(m.local.get(i, i32), m.i32.const(1))),
            m.br('next'),
          ]),
        ),
      ]),
      m.return(m.i32.const(0)),
    ]),
  );

  // clock_time_get(id: i32, precision: i64, out: i32) -> errno
  const clock = importedFunction('wasi_snapshot_preview1', 'clock_time_get');
  m.removeFunction(clock.name);
  m.addFunctionImport('runcap$clock_time_get', 'wasi_snapshot_preview1', 'clock_time_get', binaryen.createType([i32, i64, i32]), i32);
  m.addFunction(
    clock.name,
    binaryen.createType([i32, i64, i32]),
    i32,
    [],
    m.block(null, [
      m.if(
        m.global.get(DONE, i32),
        m.return(
          m.call('runcap$clock_time_get', [m.local.get(0, i32), m.local.get(1, i64), m.local.get(2, i32)], i32),
        ),
      ),
      m.global.set(TICKS, m.i64.add(m.global.get(TICKS, i64), m.i64.const(1_000_000n))),
      m.i64.store(0, 8, m.local.get(2, i32), m.global.get(TICKS, i64)),
      m.return(m.i32.const(0)),
    ]),
  );

  // path_filestat_get(fd: i32, flags: i32, path: i32, path_len: i32, out: i32) -> errno
  // The engine keeps the last file status it read (a module's). Its inode number is a
  // keyed hash that changes with every wizer process, and its times are those of the
  // staged copy: during initialization the inode becomes an FNV-1a hash of the directory
  // descriptor and the path (the same file still has the same number), and the times 0.
  const stat = importedFunction('wasi_snapshot_preview1', 'path_filestat_get');
  m.removeFunction(stat.name);
  const statParams = binaryen.createType([i32, i32, i32, i32, i32]);
  m.addFunctionImport('runcap$path_filestat_get', 'wasi_snapshot_preview1', 'path_filestat_get', statParams, i32);
  {
    const [fd, flags, path, pathLen, out, errno, k, hash] = [0, 1, 2, 3, 4, 5, 6, 7];
    const get = (idx, type = i32) => m.local.get(idx, type);
    m.addFunction(
      stat.name,
      statParams,
      i32,
      [i32, i32, i64],
      m.block(null, [
        m.local.set(errno, m.call('runcap$path_filestat_get', [get(fd), get(flags), get(path), get(pathLen), get(out)], i32)),
        m.if(
          m.i32.or(m.global.get(DONE, i32), get(errno)),
          m.return(get(errno)),
        ),
        m.local.set(hash, m.i64.xor(m.i64.const(0xcbf29ce484222325n), m.i64.extend_u(get(fd)))),
        m.local.set(k, m.i32.const(0)),
        m.block('hashed', [
          m.loop(
            'byte',
            m.block(null, [
              m.br('hashed', m.i32.ge_u(get(k), get(pathLen))),
              m.local.set(
                hash,
                m.i64.mul(
                  m.i64.xor(get(hash, i64), m.i64.extend_u(m.i32.load8_u(0, 1, m.i32.add(get(path), get(k))))),
                  m.i64.const(0x100000001b3n),
                ),
              ),
              m.local.set(k, m.i32.add(get(k), m.i32.const(1))),
              m.br('byte'),
            ]),
          ),
        ]),
        // filestat: dev @0, ino @8, filetype @16, nlink @24, size @32, atim @40, mtim @48, ctim @56
        m.i64.store(8, 8, get(out), get(hash, i64)),
        m.i64.store(40, 8, get(out), m.i64.const(0n)),
        m.i64.store(48, 8, get(out), m.i64.const(0n)),
        m.i64.store(56, 8, get(out), m.i64.const(0n)),
        m.return(get(errno)),
      ]),
    );
  }

  // The initialization function wizer calls: the engine's, then the switch to real WASI.
  m.removeExport('componentize.wizer');
  m.addFunction(
    'runcap$init',
    none,
    none,
    [],
    m.block(null, [m.call(initFunc, [], none), m.global.set(DONE, m.i32.const(1))]),
  );
  m.addFunctionExport('runcap$init', 'componentize.wizer');

  if (!m.validate()) die('the rewritten engine module does not validate');
  const binary = m.emitBinary();
  m.dispose();
  return binary;
}
