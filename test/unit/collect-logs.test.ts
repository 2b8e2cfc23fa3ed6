import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { CommandEngine } from '../../agent/commands/engine.js';
import { CommandRegistry } from '../../agent/commands/registry.js';
import { systemLogCommands } from '../../agent/commands/system.js';
import type { HardwarePaths } from '../../agent/hardware/paths.js';
import { collectSystemLogs, fitLevel, keepTail } from '../../agent/system/collect-logs.js';
import { AgentError, CancelledError } from '../../agent/util/errors.js';
import { createLogger, LogRing } from '../../agent/util/logger.js';
import { findOnPath, runProcess, type RunProcess } from '../../agent/util/run-process.js';

const exec = promisify(execFile);

/*
 * system.collect_logs against a prepared run and proc tree and fake tools on a PATH of their
 * own (some missing, a ps that rejects `aux` as busybox's does, the real df): the archive is
 * extracted with the real `tar -xzf` and read back.
 */

let root: string;
let bin: string;
let paths: HardwarePaths;
let bigLog: Buffer;

const fakeRun: RunProcess = (file, args, options = {}) =>
  runProcess(file, args, { ...options, env: { ...options.env, PATH: bin } });

const writeTool = async (name: string, body: string): Promise<void> => {
  const file = path.join(bin, name);
  await writeFile(file, `#!/bin/sh\n${body}\n`);
  await chmod(file, 0o755);
};

/** Extracts a gzip'd tar with the real tar; every file's bytes by archive name. */
const extract = async (archive: Buffer): Promise<Map<string, Buffer>> => {
  const dir = await mkdtemp(path.join(root, 'x-'));
  const file = path.join(dir, 'logs.tar.gz');
  await writeFile(file, archive);
  const out = path.join(dir, 'out');
  await mkdir(out);
  await exec('tar', ['-xzf', file, '-C', out]);
  const files = new Map<string, Buffer>();
  const walk = async (directory: string, prefix: string): Promise<void> => {
    for (const entry of await readdir(directory, { withFileTypes: true })) {
      const name = `${prefix}${entry.name}`;
      if (entry.isDirectory()) await walk(path.join(directory, entry.name), `${name}/`);
      else files.set(name, await readFile(path.join(directory, entry.name)));
    }
  };
  await walk(out, '');
  return files;
};

const text = (files: Map<string, Buffer>, name: string): string => {
  const data = files.get(name);
  assert.ok(data, `${name} is in the archive (${[...files.keys()].join(', ')})`);
  return data.toString('utf8');
};

before(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'bma-logs-'));
  bin = path.join(root, 'bin');
  const run = path.join(root, 'run');
  const proc = path.join(root, 'proc');
  paths = { sys: path.join(root, 'sys'), dev: path.join(root, 'dev'), proc, run };
  await mkdir(bin);
  await mkdir(path.join(run, 'bm-agent', 'nested.log'), { recursive: true });
  await mkdir(proc);
  await writeTool(
    'ip',
    'case "$1" in\n  addr) printf "1: lo: <LOOPBACK,UP>\\n    inet 127.0.0.1/8 scope host lo\\n" ;;\n  route) printf "default via 192.0.2.1 dev eth0\\n" ;;\n  *) exit 2 ;;\nesac',
  );
  await writeTool(
    'ps',
    'if [ "$1" = aux ]; then echo "ps: invalid option -- a" >&2; exit 1; fi\nprintf "PID   USER     COMMAND\\n    1 root     init\\n"',
  );
  const df = await findOnPath('df');
  assert.ok(df, 'df is installed');
  await symlink(df, path.join(bin, 'df'));
  await writeFile(path.join(run, 'bm-agent', 'init.log'), 'init: mounted /run\ninit: starting bm-agent\n');
  await writeFile(path.join(run, 'bm-agent', 'udev.log'), 'udevd started\n');
  await writeFile(path.join(run, 'bm-agent', 'notes.txt'), 'not a log\n');
  await writeFile(path.join(root, 'secret'), 'not to be archived\n');
  await symlink(path.join(root, 'secret'), path.join(run, 'bm-agent', 'link.log'));
  bigLog = Buffer.from(
    Array.from(
      { length: 40_000 },
      (_, index) => `line ${String(index).padStart(6, '0')} of the modprobe log\n`,
    ).join(''),
  );
  await writeFile(path.join(run, 'bm-agent', 'modprobe.log'), bigLog);
  await writeFile(path.join(proc, 'mounts'), 'proc /proc proc rw 0 0\ntmpfs /run tmpfs rw 0 0\n');
  await writeFile(path.join(proc, 'cmdline'), 'BOOTIF=01-52-54-00-12-34-56 bma-conductor-url=wss://c\n');
});

after(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('system.collect_logs', () => {
  it('archives the agent log, the run logs, tool output and proc files, and notes what is missing', async () => {
    const ring = new LogRing();
    const logger = createLogger({ level: 'info', stream: 'stderr', pretty: true, ring });
    logger.info({ step: 'erase' }, 'the record collect_logs must carry');
    const collected = await collectSystemLogs({ paths, logRing: ring, runProcess: fakeRun });
    const files = await extract(collected.archive);
    assert.deepEqual(collected.files, [
      'bm-agent.log',
      'run/init.log',
      'run/modprobe.log',
      'run/udev.log',
      'ip-addr.txt',
      'ip-route.txt',
      'df.txt',
      'ps.txt',
      'mounts.txt',
      'cmdline.txt',
      'errors.txt',
    ]);
    assert.deepEqual([...files.keys()].sort(), [...collected.files].sort());
    const record = JSON.parse(text(files, 'bm-agent.log').trim()) as Record<string, unknown>;
    assert.equal(record.msg, 'the record collect_logs must carry');
    assert.equal(record.step, 'erase');
    assert.equal(text(files, 'run/init.log'), 'init: mounted /run\ninit: starting bm-agent\n');
    assert.match(text(files, 'ip-addr.txt'), /inet 127\.0\.0\.1\/8/);
    assert.equal(text(files, 'ip-route.txt'), 'default via 192.0.2.1 dev eth0\n');
    assert.match(text(files, 'df.txt'), /Filesystem/);
    assert.match(text(files, 'ps.txt'), /1 root +init/);
    assert.match(text(files, 'mounts.txt'), /tmpfs \/run tmpfs/);
    assert.equal(text(files, 'cmdline.txt'), 'BOOTIF=01-52-54-00-12-34-56 bma-conductor-url=wss://c\n');

    // The 1.4 MiB log keeps its last MiB, starting at a whole line.
    const modprobe = files.get('run/modprobe.log') ?? Buffer.alloc(0);
    assert.ok(bigLog.length > 1024 * 1024 && modprobe.length <= 1024 * 1024 && modprobe.length > 1000 * 1024);
    assert.deepEqual(modprobe, bigLog.subarray(bigLog.length - modprobe.length));
    assert.match(modprobe.toString('latin1', 0, 40), /^line \d{6} of/);

    const errors = text(files, 'errors.txt');
    assert.deepEqual(errors.split('\n').filter(Boolean), collected.errors);
    assert.match(errors, /dmesg\.txt: `dmesg` failed \(TOOL_NOT_FOUND/);
    assert.match(errors, /lsblk\.txt: `lsblk -a -O` failed \(TOOL_NOT_FOUND/);
    assert.doesNotMatch(errors, /lsblk -a`/, 'a missing program is not tried again with other flags');
    assert.match(errors, /ps\.txt: `ps aux` failed \(TOOL_FAILED: .*invalid option.*\); used `ps` instead/);
    assert.match(errors, /run\/modprobe\.log: only the last \d+ of \d+ bytes are included/);
    assert.match(errors, /link\.log: left out \(not a regular file\)/);
    assert.match(errors, /nested\.log: left out \(not a regular file\)/);
    assert.ok(
      ![...files.values()].some((data) => data.includes('not to be archived')),
      'the link was followed',
    );
  });

  it('without a log ring, or a run and proc tree, still makes an archive and says what is missing', async () => {
    const empty = await mkdtemp(path.join(root, 'empty-'));
    const collected = await collectSystemLogs({
      paths: { sys: empty, dev: empty, proc: path.join(empty, 'proc'), run: path.join(empty, 'run') },
      logRing: null,
      runProcess: fakeRun,
    });
    const files = await extract(collected.archive);
    assert.ok(!files.has('bm-agent.log'));
    const errors = text(files, 'errors.txt');
    assert.match(errors, /bm-agent\.log: this agent process keeps no log lines/);
    assert.match(errors, /run\/bm-agent: cannot be listed \(ENOENT\)/);
    assert.match(errors, /mounts\.txt: .*proc\/mounts cannot be read \(ENOENT\)/);
    assert.match(errors, /cmdline\.txt: .*proc\/cmdline cannot be read \(ENOENT\)/);
  });

  it('cuts the largest parts first to keep the archive under its bound, and says so', async () => {
    const dir = await mkdtemp(path.join(root, 'big-'));
    await mkdir(path.join(dir, 'run', 'bm-agent'), { recursive: true });
    await mkdir(path.join(dir, 'proc'));
    // Random text compresses poorly, so the bound is reached on the compressed size.
    const noisy = (bytes: number) =>
      Buffer.from(
        Array.from({ length: Math.ceil(bytes / 65) }, () => `${randomBytes(48).toString('base64')}\n`).join(
          '',
        ),
      );
    const large = noisy(900 * 1024);
    await writeFile(path.join(dir, 'run', 'bm-agent', 'large.log'), large);
    await writeFile(path.join(dir, 'run', 'bm-agent', 'medium.log'), noisy(300 * 1024));
    await writeFile(path.join(dir, 'run', 'bm-agent', 'small.log'), 'a small log stays whole\n');
    const maxArchiveBytes = 256 * 1024;
    const collected = await collectSystemLogs({
      paths: { sys: dir, dev: dir, proc: path.join(dir, 'proc'), run: path.join(dir, 'run') },
      logRing: null,
      runProcess: fakeRun,
      maxArchiveBytes,
    });
    assert.ok(collected.archive.length <= maxArchiveBytes, `${collected.archive.length} bytes`);
    const files = await extract(collected.archive);
    assert.equal(text(files, 'run/small.log'), 'a small log stays whole\n');
    const kept = files.get('run/large.log') ?? Buffer.alloc(0);
    assert.ok(kept.length > 0 && kept.length < large.length);
    assert.deepEqual(kept, large.subarray(large.length - kept.length), 'the end of the log is what is kept');
    assert.match(
      text(files, 'errors.txt'),
      /run\/large\.log: cut to its last \d+ of \d+ bytes to keep the archive under 262144 bytes/,
    );
  });

  it('a cancel stops a tool that hangs', async () => {
    const slow = path.join(root, 'slow-bin');
    await mkdir(slow);
    const sleep = await findOnPath('sleep');
    await writeFile(path.join(slow, 'dmesg'), `#!/bin/sh\nexec ${sleep ?? '/bin/sleep'} 30\n`);
    await chmod(path.join(slow, 'dmesg'), 0o755);
    const controller = new AbortController();
    const started = Date.now();
    setTimeout(() => controller.abort(new CancelledError()), 200);
    await assert.rejects(
      collectSystemLogs(
        {
          paths,
          logRing: null,
          runProcess: (file, args, options = {}) =>
            runProcess(file, args, { ...options, env: { ...options.env, PATH: slow } }),
        },
        { signal: controller.signal },
      ),
      (error: unknown) => AgentError.is(error) && error.code === 'CANCELLED',
    );
    assert.ok(Date.now() - started < 5000, 'the hanging tool was stopped');
  });

  it('as a command: base64 of the archive, its names and its size', async () => {
    const ring = new LogRing();
    ring.write('{"level":30,"msg":"from the ring"}\n');
    const engine = new CommandEngine(
      new CommandRegistry().register(...systemLogCommands({ paths, logRing: ring, runProcess: fakeRun })),
    );
    const outcome = engine.run('logs-1', 'system.collect_logs', {});
    assert.ok(outcome.ok, JSON.stringify(outcome));
    const record = await engine.wait('logs-1');
    assert.equal(record?.status, 'SUCCEEDED', JSON.stringify(record?.error));
    const result = record?.result as { archive: string; files: string[]; bytes: number };
    const archive = Buffer.from(result.archive, 'base64');
    assert.equal(result.bytes, archive.length);
    assert.equal(archive.toString('base64'), result.archive, 'plain base64');
    const files = await extract(archive);
    assert.deepEqual([...files.keys()].sort(), [...result.files].sort());
    assert.equal(text(files, 'bm-agent.log'), '{"level":30,"msg":"from the ring"}\n');
    const rejected = engine.run('logs-2', 'system.collect_logs', { extra: true });
    assert.equal(rejected.ok, false);
  });
});

describe('collect-logs helpers', () => {
  it('fitLevel cuts the largest parts first', () => {
    assert.equal(fitLevel([10, 20, 30], 100), Number.POSITIVE_INFINITY);
    assert.equal(fitLevel([10, 20, 30], 50), 20); // 10 + 20 + 20
    assert.equal(fitLevel([10, 20, 30], 31), 10); // 10 + 10 + 10 (+1 spare)
    assert.equal(fitLevel([10, 20, 30], 0), 0);
  });

  it('keepTail keeps the end, from a whole line when one starts nearby', () => {
    const data = Buffer.from('first line\nsecond line\nthird\n');
    assert.equal(keepTail(data, 100), data);
    assert.equal(keepTail(data, 15).toString(), 'third\n');
    assert.equal(keepTail(Buffer.from('no newline at all'), 4).toString(), ' all');
  });
});
