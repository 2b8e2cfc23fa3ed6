import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, open, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, afterEach, describe, it } from 'node:test';
import { diskCommands, type DiskCommandDeps } from '../../agent/commands/disk.js';
import { CommandEngine, type Progress } from '../../agent/commands/engine.js';
import { CommandRegistry } from '../../agent/commands/registry.js';
import { parseZeroFilledLine } from '../../agent/hardware/generic/disks/blkzeroout.js';
import type { CommandRecord } from '../../agent/protocol/schema.js';
import { findOnPath } from '../../agent/util/run-process.js';
import { haveTools, LoopLab, loopLabSkipReason, MIB, sh, type LoopDisk } from '../support/loop-lab.js';

/*
 * disk.erase_metadata {all: true} and disk.erase on real loop devices, each test in a tree that
 * holds only its own loops: every disk is checked before any is touched, read-only disks are
 * skipped, and the zeros are read back from the loops' backing files. blkdiscard is the real one
 * unless a test puts a fake (failing, hanging) on a PATH of its own.
 */

const skip = (await loopLabSkipReason()) ?? (await haveTools('wipefs', 'mkfs.ext4', 'blkdiscard')) ?? false;
if (skip) process.stderr.write(`# skipping whole-disk erase tests: ${skip}\n`);
const skipMount = skip || ((await haveTools('mount', 'umount')) ?? false);
const skipPartitions = skip || ((await haveTools('sgdisk', 'partprobe')) ?? false);

const labs: LoopLab[] = [];
const newLab = async (): Promise<LoopLab> => {
  const lab = await LoopLab.create('erase-all');
  labs.push(lab);
  return lab;
};

afterEach(async () => {
  for (const lab of labs.splice(0)) await lab.cleanup();
});
after(async () => {
  for (const lab of labs.splice(0)) await lab.cleanup();
});

const isZero = (bytes: Buffer): boolean => bytes.every((byte) => byte === 0);

/** What the disk holds, read from the loop's backing file rather than through the device. */
const backing = (disk: LoopDisk): Promise<Buffer> => readFile(disk.file);

const fillRandom = async (disk: LoopDisk): Promise<Buffer> => {
  const data = randomBytes(disk.sizeBytes);
  const handle = await open(disk.real, 'r+');
  try {
    await handle.write(data, 0, data.length, 0);
    await handle.sync();
  } finally {
    await handle.close();
  }
  return data;
};

const signatures = async (device: string): Promise<string> => (await sh('wipefs', [device])).trim();

interface Run {
  record: CommandRecord;
  progress: Progress[];
}

let counter = 0;
const runCommand = async (
  lab: LoopLab,
  name: string,
  params: Record<string, unknown>,
  deps: Partial<DiskCommandDeps> = {},
  whileRunning?: (engine: CommandEngine, id: string, progress: Progress[]) => Promise<void>,
): Promise<Run> => {
  const registry = new CommandRegistry().register(
    ...diskCommands({ paths: lab.paths, includeLoops: true, ...deps }),
  );
  const engine = new CommandEngine(registry, { progressIntervalMs: 0 });
  const progress: Progress[] = [];
  engine.on({ progress: (_id, update) => progress.push(update) });
  const id = `erase-all-${(counter += 1)}`;
  const outcome = engine.run(id, name, params);
  assert.ok(outcome.ok, JSON.stringify(outcome));
  if (whileRunning) await whileRunning(engine, id, progress);
  const record = await engine.wait(id);
  assert.ok(record);
  return { record, progress };
};

/** A directory holding one executable script, to stand in for blkdiscard. */
const fakeBlkdiscard = async (lab: LoopLab, body: string): Promise<string> => {
  const dir = path.join(lab.dir, `bin-${(counter += 1)}`);
  await mkdir(dir);
  await writeFile(path.join(dir, 'blkdiscard'), `#!/bin/sh\n${body}\n`);
  await chmod(path.join(dir, 'blkdiscard'), 0o755);
  return dir;
};

describe('disk.erase_metadata {all: true}', { skip }, () => {
  it(
    'wipes every disk, skips the read-only one, and leaves the middles alone',
    { skip: skipPartitions },
    async () => {
      const lab = await newLab();
      const gpt = await lab.addLoop(40 * MIB, { partitions: true });
      const [part = ''] = await lab.partition(gpt, ['-n', '1:2048:+16M']);
      await sh('mkfs.ext4', ['-q', part]);
      const plain = await lab.addLoop(24 * MIB);
      await sh('mkfs.ext4', ['-q', plain.real]);
      const locked = await lab.addLoop(16 * MIB);
      await sh('mkfs.ext4', ['-q', locked.real]);
      await lab.setReadOnly(locked, true);
      const gptMiddle = await lab.writeMarker(gpt, 30 * MIB, 4096);
      const plainMiddle = await lab.writeMarker(plain, 12 * MIB, 4096);
      const lockedBefore = await backing(locked);

      const { record, progress } = await runCommand(lab, 'disk.erase_metadata', { all: true });
      assert.equal(record.status, 'SUCCEEDED', JSON.stringify(record.error));
      const result = record.result as {
        devices: Array<{ device: string; wiped: string[] }>;
        skipped: Array<{ device: string; reason: string }>;
        seconds: number;
      };
      assert.deepEqual(result.devices.map((entry) => entry.device).sort(), [gpt.node, plain.node].sort());
      const gptResult = result.devices.find((entry) => entry.device === gpt.node);
      assert.ok(gptResult?.wiped.includes(`${gpt.kname}p1: ext4 at 0x438`), JSON.stringify(gptResult));
      assert.ok(gptResult?.wiped.includes('gpt at 0x200'), JSON.stringify(gptResult));
      assert.ok(result.devices.find((entry) => entry.device === plain.node)?.wiped.includes('ext4 at 0x438'));
      assert.deepEqual(result.skipped, [{ device: locked.node, reason: 'read-only (sysfs ro=1)' }]);
      assert.ok(result.seconds >= 0 && result.seconds < 60);

      assert.equal(await signatures(gpt.real), '');
      assert.equal(await signatures(plain.real), '');
      assert.match(await signatures(locked.real), /ext4/);
      assert.deepEqual(await backing(locked), lockedBefore, 'the read-only disk was touched');
      assert.deepEqual(await lab.read(gpt, 30 * MIB, 4096), gptMiddle);
      assert.deepEqual(await lab.read(plain, 12 * MIB, 4096), plainMiddle);
      // One step for the check, then one per disk.
      const last = progress.at(-1);
      assert.equal(last?.unit, 'steps');
      assert.equal(last?.done, 3);
      assert.equal(last?.total, 3);
    },
  );

  it(
    'a mounted disk fails the whole command before any disk is touched, naming it',
    { skip: skipMount },
    async () => {
      const lab = await newLab();
      // Idle disks on both sides of the busy one in listing order: checking as it goes would erase one.
      const idle = [await lab.addLoop(16 * MIB)];
      const busy = await lab.addLoop(16 * MIB);
      idle.push(await lab.addLoop(16 * MIB));
      for (const disk of [...idle, busy]) await sh('mkfs.ext4', ['-q', disk.real]);
      await lab.mount(busy.real);
      const idleBefore = await Promise.all(idle.map(backing));
      const { record } = await runCommand(lab, 'disk.erase_metadata', { all: true });
      assert.equal(record.status, 'FAILED');
      assert.equal(record.error?.code, 'DEVICE_BUSY');
      assert.match(record.error?.message ?? '', new RegExp(`${busy.kname} is mounted`));
      assert.deepEqual(await Promise.all(idle.map(backing)), idleBefore, 'an idle disk was erased');
      for (const disk of idle) assert.match(await signatures(disk.real), /ext4/);
    },
  );

  it('succeeds with nothing to erase, and never counts loop devices unless told to', async () => {
    const empty = await newLab();
    const none = await runCommand(empty, 'disk.erase_metadata', { all: true });
    assert.equal(none.record.status, 'SUCCEEDED', JSON.stringify(none.record.error));
    assert.deepEqual(none.record.result, {
      devices: [],
      skipped: [],
      seconds: (none.record.result as { seconds: number }).seconds,
    });

    const lab = await newLab();
    const disk = await lab.addLoop(16 * MIB);
    await sh('mkfs.ext4', ['-q', disk.real]);
    const { record } = await runCommand(lab, 'disk.erase_metadata', { all: true }, { includeLoops: false });
    assert.equal(record.status, 'SUCCEEDED', JSON.stringify(record.error));
    assert.deepEqual((record.result as { devices: unknown[] }).devices, []);
    assert.match(await signatures(disk.real), /ext4/);
  });

  it('needs exactly one of device, root_device_hints and all', async () => {
    const lab = await newLab();
    const disk = await lab.addLoop(16 * MIB);
    for (const params of [
      {},
      { all: false },
      { all: true, device: disk.kname },
      { all: true, root_device_hints: {} },
    ]) {
      for (const name of ['disk.erase_metadata', 'disk.erase']) {
        const { record } = await runCommand(lab, name, params);
        assert.equal(record.error?.code, 'INVALID_PARAMS', `${name} ${JSON.stringify(params)}`);
      }
    }
  });
});

describe('disk.erase', { skip }, () => {
  it('zeroes a named disk with BLKZEROOUT, reporting bytes', async () => {
    const lab = await newLab();
    const disk = await lab.addLoop(24 * MIB + 4096);
    await fillRandom(disk);
    const { record, progress } = await runCommand(lab, 'disk.erase', { device: disk.kname });
    assert.equal(record.status, 'SUCCEEDED', JSON.stringify(record.error));
    const result = record.result as { devices: unknown[]; skipped: unknown[]; seconds: number };
    assert.deepEqual(result.devices, [{ device: disk.node, bytes: disk.sizeBytes, method: 'blkzeroout' }]);
    assert.deepEqual(result.skipped, []);
    assert.ok(isZero(await backing(disk)), 'the disk is not all zeros');
    const bytes = progress.filter((update) => update.unit === 'bytes');
    assert.ok(bytes.length > 0);
    for (const update of bytes) assert.equal(update.total, disk.sizeBytes);
    assert.equal(bytes.at(-1)?.done, disk.sizeBytes);
    const messages = progress.map((update) => update.message ?? '').join('\n');
    assert.match(messages, new RegExp(`zeroing ${disk.node}\n(.*\n)*zeroed ${disk.node} \\(blkzeroout\\)`));
    assert.ok(bytes.every((update, index) => index === 0 || update.done >= (bytes[index - 1]?.done ?? 0)));
  });

  it('zeroes every disk with all, skipping the read-only one', async () => {
    const lab = await newLab();
    const first = await lab.addLoop(16 * MIB);
    const second = await lab.addLoop(8 * MIB + 512);
    const locked = await lab.addLoop(8 * MIB);
    await fillRandom(first);
    await fillRandom(second);
    const lockedData = await fillRandom(locked);
    await lab.setReadOnly(locked, true);
    const { record, progress } = await runCommand(lab, 'disk.erase', { all: true });
    assert.equal(record.status, 'SUCCEEDED', JSON.stringify(record.error));
    const result = record.result as {
      devices: Array<{ device: string; bytes: number; method: string }>;
      skipped: Array<{ device: string; reason: string }>;
    };
    assert.deepEqual(
      [...result.devices].sort((a, b) => a.bytes - b.bytes),
      [
        { device: second.node, bytes: second.sizeBytes, method: 'blkzeroout' },
        { device: first.node, bytes: first.sizeBytes, method: 'blkzeroout' },
      ],
    );
    assert.deepEqual(result.skipped, [{ device: locked.node, reason: 'read-only (sysfs ro=1)' }]);
    assert.ok(isZero(await backing(first)));
    assert.ok(isZero(await backing(second)));
    assert.deepEqual(await backing(locked), lockedData);
    assert.equal(progress.at(-1)?.done, first.sizeBytes + second.sizeBytes);
    assert.equal(progress.at(-1)?.total, first.sizeBytes + second.sizeBytes);
  });

  it('a mounted disk fails erase {all} before anything is zeroed', { skip: skipMount }, async () => {
    const lab = await newLab();
    const first = await lab.addLoop(16 * MIB);
    const busy = await lab.addLoop(16 * MIB);
    const last = await lab.addLoop(16 * MIB);
    const data = [await fillRandom(first), await fillRandom(last)];
    await sh('mkfs.ext4', ['-q', busy.real]);
    const target = await lab.mount(busy.real);
    const { record } = await runCommand(lab, 'disk.erase', { all: true });
    assert.equal(record.status, 'FAILED');
    assert.equal(record.error?.code, 'DEVICE_BUSY');
    assert.match(record.error?.message ?? '', new RegExp(`${busy.kname} is mounted on ${target}`));
    assert.deepEqual([await backing(first), await backing(last)], data);
  });

  it('writes the zeros itself when blkdiscard is not installed', async () => {
    const lab = await newLab();
    const disk = await lab.addLoop(12 * MIB + 512);
    await fillRandom(disk);
    const emptyBin = path.join(lab.dir, 'no-tools');
    await mkdir(emptyBin);
    const { record, progress } = await runCommand(
      lab,
      'disk.erase',
      { device: disk.kname },
      { toolPath: emptyBin },
    );
    assert.equal(record.status, 'SUCCEEDED', JSON.stringify(record.error));
    assert.deepEqual((record.result as { devices: unknown[] }).devices, [
      { device: disk.node, bytes: disk.sizeBytes, method: 'write' },
    ]);
    assert.ok(isZero(await backing(disk)));
    assert.equal(progress.at(-1)?.done, disk.sizeBytes);
  });

  it('writes the zeros itself when blkdiscard refuses', async () => {
    const lab = await newLab();
    const disk = await lab.addLoop(12 * MIB);
    await fillRandom(disk);
    const bin = await fakeBlkdiscard(
      lab,
      'echo "blkdiscard: $5: BLKZEROOUT ioctl failed: Operation not supported" >&2\nexit 1',
    );
    const { record } = await runCommand(lab, 'disk.erase', { device: disk.kname }, { toolPath: bin });
    assert.equal(record.status, 'SUCCEEDED', JSON.stringify(record.error));
    assert.deepEqual((record.result as { devices: unknown[] }).devices, [
      { device: disk.node, bytes: disk.sizeBytes, method: 'write' },
    ]);
    assert.ok(isZero(await backing(disk)));
  });

  it('continues from where blkdiscard stopped, trusting only what it reported done', async () => {
    const lab = await newLab();
    const disk = await lab.addLoop(16 * MIB);
    const before = await fillRandom(disk);
    // Says it zeroed the first 4 MiB (it did not) and fails: the writes start at 4 MiB.
    const bin = await fakeBlkdiscard(
      lab,
      `echo "$5: Zero-filled ${4 * MIB} bytes from the offset 0"\necho "blkdiscard: $5: BLKZEROOUT ioctl failed: Input/output error" >&2\nexit 1`,
    );
    const { record } = await runCommand(lab, 'disk.erase', { device: disk.kname }, { toolPath: bin });
    assert.equal(record.status, 'SUCCEEDED', JSON.stringify(record.error));
    const data = await backing(disk);
    // The ends are zeroed by the metadata erase whatever happened; the rest of the first 4 MiB
    // shows the writes trusted the report.
    assert.deepEqual(data.subarray(2 * MIB, 4 * MIB), before.subarray(2 * MIB, 4 * MIB));
    assert.ok(isZero(data.subarray(4 * MIB)));
    assert.ok(isZero(data.subarray(0, MIB)));
  });

  it('a device that takes fewer bytes than its size says is ERASE_FAILED', async () => {
    const lab = await newLab();
    const disk = await lab.addLoop(6 * MIB);
    await fillRandom(disk);
    // The tree's sysfs says the disk is 12 MiB, twice what the device holds: the writes run off its end.
    await lab.fakeHolders(disk.kname, []);
    await writeFile(path.join(lab.paths.sys, 'class', 'block', disk.kname, 'size'), `${(12 * MIB) / 512}\n`);
    const noTools = path.join(lab.dir, 'no-tools');
    await mkdir(noTools);
    // With blkdiscard the writes start where it stopped; without, the first 8 MiB write comes
    // back short at 6 MiB and the next one gets nothing.
    for (const [deps, said] of [
      [{}, /blkdiscard reported 6291456 bytes zeroed of the 12582912 the disk holds/],
      [{ toolPath: noTools }, /blkdiscard is not on PATH/],
    ] as const) {
      const { record } = await runCommand(lab, 'disk.erase', { device: disk.kname }, deps);
      assert.equal(record.status, 'FAILED');
      assert.equal(record.error?.code, 'ERASE_FAILED', JSON.stringify(record.error));
      assert.match(record.error?.message ?? '', said);
      assert.match(record.error?.message ?? '', /at byte 6291456 failed: the device accepted no more bytes/);
      assert.equal(record.error?.details.device, disk.node);
      assert.equal(record.error?.details.offset, 6 * MIB);
    }
  });

  it('a cancel stops our own writes at the next block', async () => {
    const lab = await newLab();
    const disk = await lab.addLoop(64 * MIB);
    const before = await fillRandom(disk);
    const noTools = path.join(lab.dir, 'no-tools');
    await mkdir(noTools);
    const { record } = await runCommand(
      lab,
      'disk.erase',
      { device: disk.kname },
      { toolPath: noTools },
      async (engine, id) => {
        // Cancelled from the first report of written bytes, before the next block is written.
        engine.on({
          progress: (commandId, update) => {
            if (commandId === id && update.done > 0) engine.cancel(id);
          },
        });
      },
    );
    assert.equal(record.status, 'CANCELLED', JSON.stringify(record));
    const data = await backing(disk);
    assert.ok(isZero(data.subarray(0, 8 * MIB)), 'the first block was written');
    assert.deepEqual(data.subarray(16 * MIB), before.subarray(16 * MIB), 'writing went on after the cancel');
  });

  it('a cancel stops blkdiscard with SIGTERM, then SIGKILL when it ignores that', async () => {
    const lab = await newLab();
    const disk = await lab.addLoop(8 * MIB);
    const pidFile = path.join(lab.dir, 'blkdiscard.pid');
    const sleep = (await findOnPath('sleep')) ?? '/bin/sleep';
    const bin = await fakeBlkdiscard(
      lab,
      `echo $$ > '${pidFile}'\necho "$5: Zero-filled ${MIB} bytes from the offset 0"\ntrap '' TERM\nexec ${sleep} 60`,
    );
    let cancelledAt = 0;
    const { record, progress } = await runCommand(
      lab,
      'disk.erase',
      { device: disk.kname },
      { toolPath: bin, killGraceMs: 300 },
      async (engine, id, seen) => {
        for (let wait = 0; wait < 100; wait += 1) {
          const pid = await readFile(pidFile, 'utf8').catch(() => '');
          if (pid !== '' && seen.some((update) => update.done === MIB)) break;
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        cancelledAt = Date.now();
        engine.cancel(id);
      },
    );
    const took = Date.now() - cancelledAt;
    assert.equal(record.status, 'CANCELLED', JSON.stringify(record));
    assert.ok(took >= 250 && took < 3000, `ended ${took} ms after the cancel`);
    assert.ok(progress.some((update) => update.done === MIB && update.unit === 'bytes'));
    const pid = Number((await readFile(pidFile, 'utf8')).trim());
    assert.throws(() => process.kill(pid, 0), /ESRCH/, 'blkdiscard is still running');
  });
});

describe('blkdiscard output', () => {
  it('reads the verbose lines of util-linux 2.38', () => {
    assert.deepEqual(parseZeroFilledLine('/dev/loop0: Zero-filled 209715200 bytes from the offset 0'), {
      bytes: 209715200,
      offset: 0,
    });
    assert.deepEqual(
      parseZeroFilledLine('/dev/sda: Zero-filled 67108864 bytes from the offset 134217728\r'),
      {
        bytes: 67108864,
        offset: 134217728,
      },
    );
    assert.equal(parseZeroFilledLine('/dev/sda: Discarded 512 bytes from the offset 0'), null);
    assert.equal(
      parseZeroFilledLine('/dev/sda: Zero-filled 99999999999999999999 bytes from the offset 0'),
      null,
    );
    assert.equal(parseZeroFilledLine(''), null);
  });
});
