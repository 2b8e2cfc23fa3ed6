/**
 * The ramdisk's agent start: image-build/agent-loader.cjs (its /usr/lib/bm-agent/main.js) running a
 * CommonJS bundle from V8's code cache, and image-build/bundle-agent.sh making the real bundle and
 * cache. Real node processes on files in a temporary folder.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, copyFile, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, describe, it } from 'node:test';
import { AGENT_VERSION } from '../../agent/version.js';

const run = promisify(execFile);
const LOADER = fileURLToPath(new URL('../../../image-build/agent-loader.cjs', import.meta.url));
const BUNDLE_AGENT = fileURLToPath(new URL('../../../image-build/bundle-agent.sh', import.meta.url));

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
});

const tempDir = async (prefix: string): Promise<string> => {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
};

/**
 * What the bundle saw, as JSON on stdout: its module variables, whether it runs strict, its
 * arguments, and whether the loader's variable reached it. Exits with the status it is given.
 */
const PROBE_BUNDLE = `"use strict";
const path = require('node:path');
process.stdout.write(JSON.stringify({
  filename: __filename,
  dirname: __dirname,
  exportsIsThis: this === module.exports,
  moduleFilename: module.filename,
  strict: (function () { return this; })() === undefined,
  builtin: typeof path.join,
  args: process.argv.slice(2),
  writeVariable: process.env.BMA_CODE_CACHE_WRITE ?? null,
}));
process.exitCode = Number(process.env.PROBE_STATUS ?? 0);
`;

/** A loader folder as the image has it: main.js and agent.js (and agent.cache when given). */
const loaderDir = async (bundle = PROBE_BUNDLE): Promise<string> => {
  const dir = await tempDir('bma-loader-');
  await copyFile(LOADER, path.join(dir, 'main.js'));
  await writeFile(path.join(dir, 'agent.js'), bundle);
  return dir;
};

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

const runNode = async (args: string[], env: Record<string, string> = {}): Promise<Outcome> => {
  try {
    const { stdout, stderr } = await run(process.execPath, args, { env: { PATH: process.env.PATH, ...env } });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code?: unknown; stdout?: string; stderr?: string };
    if (typeof failed.code !== 'number') throw error;
    return { code: failed.code, stdout: failed.stdout ?? '', stderr: failed.stderr ?? '' };
  }
};

const probe = (outcome: Outcome): Record<string, unknown> =>
  JSON.parse(outcome.stdout) as Record<string, unknown>;

describe('the agent loader', () => {
  it('runs the bundle as a strict CommonJS module of its own folder, with the arguments and exit status', async () => {
    const dir = await loaderDir();
    const outcome = await runNode([path.join(dir, 'main.js'), 'run', '--x'], { PROBE_STATUS: '3' });
    assert.equal(outcome.code, 3);
    assert.equal(outcome.stderr, '');
    assert.deepEqual(probe(outcome), {
      filename: path.join(dir, 'agent.js'),
      dirname: dir,
      exportsIsThis: true,
      moduleFilename: path.join(dir, 'agent.js'),
      strict: true,
      builtin: 'function',
      args: ['run', '--x'],
      writeVariable: null,
    });
  });

  it('writes a code cache when asked, which the next start takes without a word', async () => {
    const dir = await loaderDir();
    const cache = path.join(dir, 'agent.cache');
    const made = await runNode([path.join(dir, 'main.js')], { BMA_CODE_CACHE_WRITE: cache });
    assert.equal(made.code, 0, made.stderr);
    // The variable is the loader's: the bundle and its children never see it.
    assert.equal(probe(made).writeVariable, null);
    assert.ok((await stat(cache)).size > 0);

    const again = await runNode([path.join(dir, 'main.js')]);
    assert.equal(again.code, 0);
    assert.equal(again.stderr, '');
    assert.equal(probe(again).filename, path.join(dir, 'agent.js'));
  });

  it('says so on stderr and compiles the bundle when the cache belongs to another bundle', async () => {
    const other = await loaderDir(`${PROBE_BUNDLE}\n// another build\n`);
    await runNode([path.join(other, 'main.js')], { BMA_CODE_CACHE_WRITE: path.join(other, 'agent.cache') });
    const dir = await loaderDir();
    await copyFile(path.join(other, 'agent.cache'), path.join(dir, 'agent.cache'));

    const outcome = await runNode([path.join(dir, 'main.js'), 'run'], { PROBE_STATUS: '0' });
    assert.equal(outcome.code, 0);
    assert.match(outcome.stderr, /V8 rejected .*agent\.cache .*compiling the bundle instead/);
    assert.deepEqual(probe(outcome).args, ['run']);
  });

  it('says so and still starts when the cache file is not a cache at all', async () => {
    const dir = await loaderDir();
    await writeFile(path.join(dir, 'agent.cache'), Buffer.alloc(4096, 0x5a));
    const outcome = await runNode([path.join(dir, 'main.js')]);
    assert.equal(outcome.code, 0);
    assert.match(outcome.stderr, /V8 rejected/);
    assert.equal(probe(outcome).strict, true);
  });

  it('ignores the cache with BMA_CODE_CACHE=off, and starts silently without one', async () => {
    const dir = await loaderDir();
    await writeFile(path.join(dir, 'agent.cache'), Buffer.alloc(4096, 0x5a));
    const off = await runNode([path.join(dir, 'main.js')], { BMA_CODE_CACHE: 'off' });
    assert.equal(off.code, 0);
    assert.equal(off.stderr, '');

    await rm(path.join(dir, 'agent.cache'));
    const none = await runNode([path.join(dir, 'main.js')]);
    assert.equal(none.code, 0);
    assert.equal(none.stderr, '');
  });
});

describe('bundle-agent.sh', () => {
  const bundle = async (node = process.execPath): Promise<{ dir: string; stderr: string }> => {
    const dir = path.join(await tempDir('bma-bundle-'), 'out');
    const { stderr } = await run(BUNDLE_AGENT, [dir, node], { timeout: 120_000 });
    return { dir, stderr };
  };

  /** A node that runs differently while the build makes the cache: `mode` says how. */
  const nodeWrapper = async (mode: 'other-flags' | 'fails'): Promise<string> => {
    const file = path.join(await tempDir('bma-node-'), 'node');
    const making =
      mode === 'fails'
        ? 'exit 1'
        : `exec ${JSON.stringify(process.execPath)} --no-lazy-feedback-allocation "$@"`;
    await writeFile(
      file,
      `#!/bin/sh\nif [ -n "$BMA_CODE_CACHE_WRITE" ]; then ${making}; fi\nexec ${JSON.stringify(process.execPath)} "$@"\n`,
    );
    await chmod(file, 0o755);
    return file;
  };

  it('makes the loader, the bundle, its worker and a code cache that the agent starts from, the same bytes each time', async () => {
    const first = await bundle();
    assert.equal(first.stderr, '');
    for (const name of ['main.js', 'agent.js', 'hash-worker-entry.js', 'package.json', 'agent.cache'])
      assert.ok((await stat(path.join(first.dir, name))).size > 0, name);
    assert.deepEqual(JSON.parse(await readFile(path.join(first.dir, 'package.json'), 'utf8')), {
      type: 'commonjs',
    });
    // The worker is found beside the bundle, by the bundle's own URL.
    assert.match(
      await readFile(path.join(first.dir, 'agent.js'), 'latin1'),
      /new URL\("\.\/hash-worker-entry\.js", __bmaModuleUrl\)/,
    );

    const version = await runNode([path.join(first.dir, 'main.js'), '--version']);
    assert.equal(version.code, 0);
    assert.equal(version.stdout.trim(), AGENT_VERSION);
    assert.equal(version.stderr, '', 'the cache was rejected');

    const second = await bundle();
    assert.deepEqual(
      await readFile(path.join(second.dir, 'agent.cache')),
      await readFile(path.join(first.dir, 'agent.cache')),
      'two caches of the same bundle differ',
    );
  });

  it('leaves the cache out, with a warning, when the node that made it runs with other flags', async () => {
    const made = await bundle(await nodeWrapper('other-flags'));
    assert.match(made.stderr, /the code cache does not load/);
    await assert.rejects(stat(path.join(made.dir, 'agent.cache')), { code: 'ENOENT' });
    const version = await runNode([path.join(made.dir, 'main.js'), '--version']);
    assert.equal(version.stdout.trim(), AGENT_VERSION);
  });

  it('leaves the cache out, with the agent output, when the agent could not make one', async () => {
    const made = await bundle(await nodeWrapper('fails'));
    assert.match(made.stderr, /no code cache was made/);
    await assert.rejects(stat(path.join(made.dir, 'agent.cache')), { code: 'ENOENT' });
  });
});
