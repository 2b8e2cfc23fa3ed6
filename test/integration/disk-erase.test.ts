import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { diskCommands } from '../../agent/commands/disk.js';
import { CommandEngine } from '../../agent/commands/engine.js';
import { CommandRegistry } from '../../agent/commands/registry.js';
import { listCandidateDisks } from '../../agent/hardware/generic/disks/candidates.js';
import type { CommandRecord } from '../../agent/protocol/schema.js';
import { haveTools, LoopLab, loopLabSkipReason, MIB, sh } from '../support/loop-lab.js';
import { runCli } from '../support/spawn-agent.js';

/*
 * disk.erase_metadata on real loop devices through a tree that holds only them: what is wiped
 * (both GPT headers, the partitions' filesystems), what is not (the middle of the disk), and
 * that a disk in use is refused untouched. Runs the real CLI as well as the command.
 */

const skip = (await loopLabSkipReason()) ?? (await haveTools('wipefs', 'mkfs.ext4')) ?? false;
if (skip) process.stderr.write(`# skipping disk erase tests: ${skip}\n`);
const skipPartitions = skip || ((await haveTools('sgdisk', 'partprobe')) ?? false);
if (!skip && skipPartitions) process.stderr.write(`# skipping the GPT erase case: ${skipPartitions}\n`);
const skipMount = skip || ((await haveTools('mount', 'umount')) ?? false);

const isZero = (bytes: Buffer): boolean => bytes.every((byte) => byte === 0);

/** What wipefs (listing only) finds on a device: one line per signature, empty when clean. */
const signatures = async (device: string): Promise<string> => (await sh('wipefs', [device])).trim();

describe('disk.erase_metadata on loop devices', { skip }, () => {
  let lab: LoopLab;
  let counter = 0;

  before(async () => {
    lab = await LoopLab.create('erase');
  });
  after(async () => {
    await lab?.cleanup();
  });

  const env = () => ({
    BMA_SYS: lab.paths.sys,
    BMA_DEV: lab.paths.dev,
    BMA_PROC: lab.paths.proc,
    BMA_RUN: lab.paths.run,
  });

  /** Runs the command through the engine, optionally with the test's loops as hint candidates. */
  const erase = async (params: Record<string, unknown>, includeLoops = false): Promise<CommandRecord> => {
    const registry = new CommandRegistry().register(
      ...diskCommands({
        paths: lab.paths,
        ...(includeLoops
          ? {
              select: {
                listCandidates: (paths, signal) => listCandidateDisks(paths, { signal, includeLoops }),
              },
            }
          : {}),
      }),
    );
    const engine = new CommandEngine(registry);
    const id = `erase-${(counter += 1)}`;
    const outcome = engine.run(id, 'disk.erase_metadata', params);
    assert.ok(outcome.ok, JSON.stringify(outcome));
    const record = await engine.wait(id);
    assert.ok(record);
    return record;
  };

  it(
    'wipes the GPT at both ends and the partitions’ filesystems, and leaves the middle alone',
    { skip: skipPartitions },
    async () => {
      // Not a whole number of MiB, so the last MiB does not start on a MiB boundary.
      const size = 64 * MIB + 4096;
      const disk = await lab.addLoop(size, { partitions: true });
      const [first = '', second = ''] = await lab.partition(disk, ['-n', '1:2048:+16M', '-n', '2:0:+16M']);
      await sh('mkfs.ext4', ['-q', first]);
      await sh('mkfs.ext4', ['-q', second]);
      const middle = 48 * MIB; // past both partitions
      const marker = await lab.writeMarker(disk, middle, 256 * 1024);

      assert.match(await signatures(disk.real), /gpt/);
      assert.match(await signatures(disk.real), /PMBR/);
      assert.match(await signatures(first), /ext4/);
      assert.equal((await lab.read(disk, size - 512, 8)).toString('latin1'), 'EFI PART', 'backup GPT header');

      const run = await runCli(['disk', 'erase-metadata', '--device', disk.kname, '--json'], { env: env() });
      assert.equal(run.code, 0, run.stderr);
      const result = JSON.parse(run.stdout) as { device: string; wiped: string[]; seconds: number };
      assert.equal(result.device, disk.node);
      assert.ok(result.seconds >= 0 && result.seconds < 60);
      for (const entry of [
        `${disk.kname}p1: ext4 at 0x438`,
        `${disk.kname}p2: ext4 at 0x438`,
        'gpt at 0x200',
        `gpt at 0x${(size - 512).toString(16)}`,
        'PMBR at 0x1fe',
        `zeroed ${MIB} bytes at 0`,
        `zeroed ${MIB} bytes at ${size - MIB}`,
      ])
        assert.ok(result.wiped.includes(entry), `${entry} missing from ${JSON.stringify(result.wiped)}`);

      assert.equal(await signatures(disk.real), '');
      assert.ok(isZero(await lab.read(disk, 0, MIB)), 'first MiB');
      assert.ok(isZero(await lab.read(disk, size - MIB, MIB)), 'last MiB');
      assert.deepEqual(await lab.read(disk, middle, marker.length), marker, 'the middle was touched');
      // The ext4 magic of each partition (0xEF53 at 0x438 into it) is gone, the rest of it stays.
      assert.ok(isZero(await lab.read(disk, 1 * MIB + 0x438, 2)));
      assert.ok(isZero(await lab.read(disk, 17 * MIB + 0x438, 2)));
      // The re-read told the kernel: the partitions are gone.
      let left = true;
      for (let wait = 0; wait < 30 && left; wait += 1) {
        left = await readFile(`/sys/class/block/${disk.kname}p1/dev`).then(
          () => true,
          () => false,
        );
        if (left) await sleep(100);
      }
      assert.equal(left, false, 'the kernel still shows the partitions');
    },
  );

  it('erases the disk the root device hints choose', async () => {
    const disk = await lab.addLoop(32 * MIB + 512);
    await sh('mkfs.ext4', ['-q', disk.real]);
    const tail = await lab.writeMarker(disk, disk.sizeBytes - 4096, 4096);
    const record = await erase({ root_device_hints: { name: disk.kname, size: '< 1' } }, true);
    assert.equal(record.status, 'SUCCEEDED', JSON.stringify(record.error));
    const result = record.result as { device: string; wiped: string[] };
    assert.equal(result.device, disk.node);
    assert.ok(result.wiped.includes('ext4 at 0x438'), JSON.stringify(result.wiped));
    assert.equal(await signatures(disk.real), '');
    assert.ok(isZero(await lab.read(disk, disk.sizeBytes - 4096, tail.length)));
  });

  it('refuses a mounted disk and leaves it as it was', { skip: skipMount }, async () => {
    const disk = await lab.addLoop(32 * MIB);
    await sh('mkfs.ext4', ['-q', disk.real]);
    const target = await lab.mount(disk.real);
    try {
      // Read while mounted: mounting and unmounting update the superblock themselves.
      const head = await lab.read(disk, 0, MIB);
      const tail = await lab.read(disk, disk.sizeBytes - MIB, MIB);
      const record = await erase({ device: disk.kname });
      assert.equal(record.status, 'FAILED');
      assert.equal(record.error?.code, 'DEVICE_BUSY');
      assert.match(record.error?.message ?? '', /umount/);
      assert.deepEqual(await lab.read(disk, 0, MIB), head, 'the first MiB changed');
      assert.deepEqual(await lab.read(disk, disk.sizeBytes - MIB, MIB), tail, 'the last MiB changed');
    } finally {
      await lab.unmount(target);
    }
    assert.match(await signatures(disk.real), /ext4/);
  });

  it('needs exactly one of device and root_device_hints', async () => {
    const disk = await lab.addLoop(16 * MIB);
    for (const params of [{}, { device: disk.kname, root_device_hints: { size: 1 } }]) {
      const record = await erase(params);
      assert.equal(record.error?.code, 'INVALID_PARAMS', JSON.stringify(record));
    }
  });

  it('from the CLI: --all erases every disk of the tree, and disk erase zeroes one', async () => {
    const first = await lab.addLoop(8 * MIB);
    const second = await lab.addLoop(8 * MIB);
    for (const disk of [first, second]) {
      await sh('mkfs.ext4', ['-q', '-F', disk.real]);
      assert.match(await signatures(disk.real), /ext4/);
    }
    // Loop devices count as disks only when asked: without it, --all finds none.
    const none = await runCli(['disk', 'erase-metadata', '--all'], { env: env() });
    assert.equal(none.code, 0, none.stderr);
    assert.match(none.stdout, /no disk to erase/);
    assert.match(await signatures(first.real), /ext4/);
    const all = await runCli(['disk', 'erase-metadata', '--all', '--include-loop-disks', '--json'], {
      env: env(),
    });
    assert.equal(all.code, 0, all.stderr);
    const erased = (JSON.parse(all.stdout) as { devices: Array<{ device: string }> }).devices.map(
      (entry) => entry.device,
    );
    for (const disk of [first, second]) {
      assert.ok(erased.includes(disk.node), `${disk.node} in ${JSON.stringify(erased)}`);
      assert.equal(await signatures(disk.real), '');
    }
    await writeFile(first.real, randomBytes(MIB), { flag: 'r+' });
    const zeroed = await runCli(['disk', 'erase', '--device', first.kname], { env: env() });
    assert.equal(zeroed.code, 0, zeroed.stderr);
    assert.match(zeroed.stdout, new RegExp(`zeroed ${8 * MIB} bytes of ${first.node}`));
    assert.ok(isZero(await lab.read(first, 0, 8 * MIB)));
    const both = await runCli(['disk', 'erase', '--all', '--device', first.kname], { env: env() });
    assert.equal(both.code, 2, 'one way to name the disks');
  });

  it('from the CLI: refuses /etc/passwd, and hints find nothing in a tree of loops', async () => {
    const passwd = await runCli(['disk', 'erase-metadata', '--device', '/etc/passwd'], { env: env() });
    assert.equal(passwd.code, 1);
    assert.match(passwd.stderr, /INVALID_DEVICE: \/etc\/passwd is not under the device directory/);
    // The real agent offers no loop device to hints, and this machine's disks are not in the tree.
    const hinted = await runCli(['disk', 'erase-metadata', '--hint', 'size=>= 1', '--json'], { env: env() });
    assert.equal(hinted.code, 1);
    assert.match(hinted.stderr, /NO_MATCHING_DISK/);
    const usage = await runCli(['disk', 'erase-metadata', '--hint', 'nonsense'], { env: env() });
    assert.equal(usage.code, 2);
  });
});
