// node build/componentize.mjs SRC_DIR OUT.wasm [WORLD]
//
// Builds a runcap plugin written in JavaScript into a component with componentize-js.
//
// componentize-js loads one ES module and the modules it imports by relative path; it
// has no node_modules resolution. So this script stages the plugin first, in a
// temporary directory:
//
//   entry.js          imports runcap-plugin/wit.js (the host adapter), then the plugin's
//                     entry module, and exports its describe, validate and run
//   runcap-plugin/    the SDK's modules (not testing.js)
//   plugin/           the plugin's modules, following imports from its entry
//                     (package.json `main`, else index.js); `runcap-plugin` imports are
//                     rewritten to the staged SDK
//
// and runs componentize-js on entry.js against the repository's wit/ directory, with the
// WASI features `http` and `fetch-event` disabled (the component then imports no
// wasi:http; plugins reach the network through runcap:plugin/http), and with wizer.mjs
// in place of wizer so that the output depends on the sources only.

import { mkdtemp, mkdir, readFile, writeFile, rm, rename, readdir, realpath, stat } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

import { init, parse } from 'es-module-lexer';
import { componentize } from '@bytecodealliance/componentize-js';

const SDK_DIR = dirname(dirname(fileURLToPath(import.meta.url)));
const ROOT = dirname(SDK_DIR);
const WIT_DIR = join(ROOT, 'wit');
const SDK_NAME = 'runcap-plugin';
/** WASI features of StarlingMonkey the component does without (see sdk-js/README.md). */
const DISABLED_FEATURES = ['http', 'fetch-event'];

class BuildError extends Error {}

function shellQuote(s) {
  return `'${s.replaceAll("'", "'\\''")}'`;
}

async function entryOf(srcDir) {
  let main = 'index.js';
  try {
    const pkg = JSON.parse(await readFile(join(srcDir, 'package.json'), 'utf8'));
    if (typeof pkg.main === 'string') main = pkg.main;
  } catch (e) {
    if (e.code !== 'ENOENT') throw new BuildError(`${join(srcDir, 'package.json')}: ${e.message}`);
  }
  const path = resolve(srcDir, main);
  try {
    await stat(path);
  } catch {
    throw new BuildError(`${srcDir} has no entry module ${main} (set "main" in its package.json)`);
  }
  return path;
}

function relativeSpecifier(fromFile, toFile) {
  let r = relative(dirname(fromFile), toFile).split(sep).join('/');
  if (!r.startsWith('.')) r = `./${r}`;
  return r;
}

/** Copies the plugin's module graph from `srcDir` into `stage/plugin`, rewriting SDK imports. */
async function stagePlugin(srcDir, entry, stage) {
  await init;
  const pluginDir = join(stage, 'plugin');
  const sdkEntry = join(stage, SDK_NAME, 'index.js');
  const queue = [entry];
  const seen = new Set(queue);
  while (queue.length) {
    const file = queue.shift();
    const rel = relative(srcDir, file);
    const source = await readFile(file, 'utf8');
    let imports;
    try {
      [imports] = parse(source, rel);
    } catch (e) {
      throw new BuildError(`${file}: cannot parse: ${e.message}`);
    }
    const target = join(pluginDir, rel);
    const edits = [];
    for (const im of imports) {
      if (im.d === -2) continue; // import.meta
      if (im.d > -1) {
        throw new BuildError(`${file}: dynamic import() is not supported in a plugin; import modules statically`);
      }
      const spec = im.n;
      if (spec === SDK_NAME) {
        edits.push([im.s, im.e, relativeSpecifier(target, sdkEntry)]);
      } else if (spec.startsWith(`${SDK_NAME}/`)) {
        throw new BuildError(`${file}: imports ${spec}, which is for unit tests only; the plugin imports ${SDK_NAME}`);
      } else if (spec.startsWith('./') || spec.startsWith('../')) {
        const dep = resolve(dirname(file), spec);
        const inside = relative(srcDir, dep);
        if (inside === '..' || inside.startsWith(`..${sep}`)) {
          throw new BuildError(`${file}: imports ${spec}, outside ${srcDir}; a plugin's modules live in its directory`);
        }
        try {
          await stat(dep);
        } catch {
          throw new BuildError(`${file}: imports ${spec}, but ${dep} does not exist (write the file name in full, with .js)`);
        }
        if (!seen.has(dep)) {
          seen.add(dep);
          queue.push(dep);
        }
      } else if (spec.startsWith('runcap:plugin/')) {
        // A WIT import of the world: componentize-js provides it.
      } else {
        throw new BuildError(
          `${file}: imports ${spec}; a plugin may import ${SDK_NAME}, its own modules by relative path, and runcap:plugin/* interfaces (componentize-js does not resolve packages)`,
        );
      }
    }
    let out = source;
    for (const [s, e, replacement] of edits.sort((a, b) => b[0] - a[0])) {
      out = out.slice(0, s) + replacement + out.slice(e);
    }
    await mkdir(dirname(target), { recursive: true });
    await writeFile(target, out);
  }
  return relativeSpecifier(join(stage, 'entry.js'), join(pluginDir, relative(srcDir, entry)));
}

async function stageSdk(stage) {
  const dir = join(stage, SDK_NAME);
  await mkdir(dir, { recursive: true });
  const names = (await readdir(join(SDK_DIR, 'src'))).filter((n) => n.endsWith('.js') && n !== 'testing.js').sort();
  for (const name of names) {
    await writeFile(join(dir, name), await readFile(join(SDK_DIR, 'src', name)));
  }
}

function entrySource(pluginEntry) {
  return `// Generated by runcap-plugin's build: the component's root module.
import './${SDK_NAME}/wit.js';
import definition from ${JSON.stringify(pluginEntry)};

if (definition === null || typeof definition !== 'object' || typeof definition.run !== 'function' || typeof definition.describe !== 'function' || typeof definition.validate !== 'function') {
  throw new Error(${JSON.stringify(`${pluginEntry.slice(2)} must \`export default plugin({ ... })\` with plugin from ${SDK_NAME}`)});
}

export const describe = definition.describe;
export const validate = definition.validate;
export const run = definition.run;
`;
}

export async function build(srcDir, outPath, world = 'check') {
  srcDir = await realpath(resolve(srcDir));
  outPath = resolve(outPath);
  const entry = await entryOf(srcDir);
  const work = await mkdtemp(join(tmpdir(), 'runcap-js-'));
  const cwd = process.cwd();
  try {
    await mkdir(join(work, 'src'));
    const stage = await realpath(join(work, 'src'));
    await stageSdk(stage);
    const pluginEntry = await stagePlugin(srcDir, entry, stage);
    await writeFile(join(stage, 'entry.js'), entrySource(pluginEntry));

    const wizer = join(work, 'wizer');
    await writeFile(
      wizer,
      `#!/bin/sh\nexec ${shellQuote(process.execPath)} ${shellQuote(join(SDK_DIR, 'build', 'wizer.mjs'))} "$@"\n`,
      { mode: 0o755 },
    );

    // componentize-js maps the current directory to the guest's `/` when the source is
    // inside it, so module paths (and stack traces) read `plugin/index.js`.
    process.chdir(stage);
    let component;
    try {
      ({ component } = await componentize({
        sourcePath: join(stage, 'entry.js'),
        witPath: WIT_DIR,
        worldName: world,
        disableFeatures: DISABLED_FEATURES,
        wizerBin: wizer,
      }));
    } catch (e) {
      throw new BuildError(String(e.message ?? e).replaceAll(`${stage}/`, ''));
    } finally {
      process.chdir(cwd);
    }

    await mkdir(dirname(outPath), { recursive: true });
    const partial = `${outPath}.partial`;
    await writeFile(partial, component);
    await rename(partial, outPath);
    return { bytes: component.length, sha256: createHash('sha256').update(component).digest('hex') };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [srcDir, outPath, world] = process.argv.slice(2);
  if (!srcDir || !outPath) {
    process.stderr.write('usage: node build/componentize.mjs SRC_DIR OUT.wasm [WORLD]\n');
    process.exit(2);
  }
  const started = Date.now();
  try {
    const { bytes, sha256 } = await build(srcDir, outPath, world);
    const secs = ((Date.now() - started) / 1000).toFixed(1);
    process.stdout.write(`built ${outPath} (${(bytes / 1048576).toFixed(1)} MiB, sha256 ${sha256}) in ${secs}s\n`);
  } catch (e) {
    process.stderr.write(`error: ${e instanceof BuildError ? e.message : (e.stack ?? e)}\n`);
    process.exit(1);
  }
}
