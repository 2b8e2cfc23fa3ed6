import assert from 'node:assert/strict';
import { constants as fsConstants } from 'node:fs';
import { mkdir, open, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { listCandidateDisks } from '../../agent/hardware/generic/disks/candidates.js';
import { selectTargetDisk, type SelectDeps } from '../../agent/hardware/generic/disks/select.js';
import type { SelectDiskOptions } from '../../agent/image/contracts.js';
import { GIB, haveTools, LoopLab, loopLabSkipReason, MIB, sh, type LoopDisk } from '../support/loop-lab.js';
import { rejectsWithCode } from '../support/agent-errors.js';

/*
 * Disk selection and every refusal on real loop devices, seen through a tree (BMA_SYS/BMA_DEV
 * style) that holds only the loops this test made.
 */

const skip = (await loopLabSkipReason()) ?? false;
if (skip) process.stderr.write(`# skipping disk selection tests: ${skip}\n`);
const skipPartitions = skip || ((await haveTools('sgdisk', 'partprobe', 'mkfs.ext4', 'mount')) ?? false);
if (!skip && skipPartitions) process.stderr.write(`# skipping partition cases: ${skipPartitions}\n`);
const skipMount = skip || ((await haveTools('mkfs.ext4', 'mount', 'umount')) ?? false);
const skipSwap = skip || ((await haveTools('mkswap', 'swapon', 'swapoff')) ?? false);

// The agent never offers loop devices unless named; these tests drive hints over their own.
const withLoops: SelectDeps = {
  listCandidates: (paths, signal) => listCandidateDisks(paths, { signal, includeLoops: true }),
};

describe('target disk selection on loop devices', { skip }, () => {
  let lab: LoopLab;
  let small: LoopDisk; // 64 MiB: under IPA's 4 GiB floor
  let five: LoopDisk; // 5 GiB: the default choice
  let six: LoopDisk; // 6 GiB
  const select = (options: Omit<SelectDiskOptions, 'paths'>, deps: SelectDeps = {}) =>
    selectTargetDisk({ paths: lab.paths, ...options }, deps);

  before(async () => {
    lab = await LoopLab.create('select');
    six = await lab.addLoop(6 * GIB);
    small = await lab.addLoop(64 * MIB);
    five = await lab.addLoop(5 * GIB);
  });
  after(async () => {
    await lab?.cleanup();
  });

  it('lists only the test’s loop devices as candidates, never this machine’s disks', async (t) => {
    const ours = lab.loops.map((disk) => disk.node).sort();
    const candidates = await listCandidateDisks(lab.paths, { includeLoops: true });
    assert.deepEqual(candidates.map((disk) => disk.name).sort(), ours);
    // What the agent itself offers from this tree: nothing (loops only when named).
    assert.deepEqual(await listCandidateDisks(lab.paths), []);
    // The machine has other block devices (its own disks, other loops) that lsblk does list.
    const machine = JSON.parse(await sh('lsblk', ['-J', '-d', '-o', 'KNAME'])) as {
      blockdevices: Array<{ kname: string }>;
    };
    const others = machine.blockdevices.filter(
      (device) => !lab.loops.some((disk) => disk.kname === device.kname),
    );
    t.diagnostic(
      `block devices outside the tree, never offered: ${others.map((d) => d.kname).join(', ') || 'none'}`,
    );
  });

  it('without hints picks the smallest disk of at least 4 GiB', async () => {
    const disk = await select({}, withLoops);
    assert.deepEqual(disk, {
      path: five.node,
      kname: five.kname,
      sizeBytes: 5 * GIB,
      logicalSectorBytes: 512,
      physicalSectorBytes: 512,
    });
  });

  it('with hints picks the first disk matching all of them', async () => {
    assert.equal((await select({ hints: { size: 6 } }, withLoops)).kname, six.kname);
    assert.equal((await select({ hints: { size: '>= 5' } }, withLoops)).kname, six.kname); // lsblk order
    assert.equal((await select({ hints: { size: '< 1' } }, withLoops)).kname, small.kname);
    assert.equal((await select({ hints: { name: small.kname } }, withLoops)).kname, small.kname);
    assert.equal((await select({ hints: { name: `/dev/${five.kname}` } }, withLoops)).kname, five.kname);
    assert.equal(
      (await select({ hints: { name: `<or> /dev/nope <or> ${five.kname}`, size: '<= 5' } }, withLoops)).kname,
      five.kname,
    );
  });

  it('reports NO_MATCHING_DISK with the candidates when nothing matches', async () => {
    const error = await rejectsWithCode(select({ hints: { size: '>= 100' } }, withLoops), 'NO_MATCHING_DISK');
    const names = (error.details.candidates as Array<{ name: string }>).map((disk) => disk.name).sort();
    assert.deepEqual(names, lab.loops.map((disk) => `/dev/${disk.kname}`).sort());
  });

  it('offers a loop device only when it is named', async () => {
    await rejectsWithCode(select({ hints: { name: five.kname } }), 'NO_MATCHING_DISK');
    await rejectsWithCode(select({}), 'NO_MATCHING_DISK', /no disks were found/);
    for (const device of [five.kname, `/dev/${five.kname}`, five.node])
      assert.equal((await select({ device })).path, five.node);
  });

  it('checks hints before listing anything', async () => {
    const error = await rejectsWithCode(select({ hints: { sise: 10 } }, withLoops), 'INVALID_PARAMS', /sise/);
    assert.equal(error.details.field, 'root_device_hints.sise');
    await rejectsWithCode(select({ device: five.kname, hints: { size: 5 } }), 'INVALID_PARAMS', /not both/);
  });

  it('refuses what is not a whole block device under the dev root', async () => {
    await writeFile(path.join(lab.paths.dev, 'notes.txt'), 'not a disk');
    await mkdir(path.join(lab.paths.dev, 'subdir'), { recursive: true });
    await symlink('/etc/passwd', path.join(lab.paths.dev, 'passwd-link'));
    await symlink(five.real, path.join(lab.paths.dev, 'outside-link'));
    await symlink(five.kname, path.join(lab.paths.dev, 'inside-link'));
    await sh('mknod', [path.join(lab.paths.dev, 'null'), 'c', '1', '3']);
    const cases: Array<[string, string, RegExp]> = [
      ['/etc/passwd', 'INVALID_DEVICE', /not under the device directory/],
      ['../', 'INVALID_DEVICE', /inside the device directory/],
      ['..', 'INVALID_DEVICE', /inside the device directory/],
      ['.', 'INVALID_DEVICE', /inside the device directory/],
      ['../../etc/passwd', 'INVALID_DEVICE', /inside the device directory/],
      ['/dev/../etc/passwd', 'INVALID_DEVICE', /not under the device directory|inside the device directory/],
      ['notes.txt', 'INVALID_DEVICE', /is a regular file, not a block device/],
      ['subdir', 'INVALID_DEVICE', /is a directory, not a block device/],
      ['null', 'INVALID_DEVICE', /is a character device, not a block device/],
      ['passwd-link', 'INVALID_DEVICE', /outside the device directory/],
      ['outside-link', 'INVALID_DEVICE', /outside the device directory/],
      ['nope', 'DEVICE_NOT_FOUND', /no device nope/],
      ['/dev/sda', 'DEVICE_NOT_FOUND', /no device/],
    ];
    for (const [device, code, message] of cases) await rejectsWithCode(select({ device }), code, message);
    // A link inside the dev root is followed, and the disk is reported by its own node.
    assert.equal((await select({ device: 'inside-link' })).path, five.node);
  });

  it('refuses a disk smaller than what must be written', async () => {
    const error = await rejectsWithCode(
      select({ device: small.kname, minSizeBytes: 64 * MIB + 512 }),
      'DEVICE_TOO_SMALL',
    );
    assert.equal(error.details.size_bytes, 64 * MIB);
    assert.equal((await select({ device: small.kname, minSizeBytes: 64 * MIB })).sizeBytes, 64 * MIB);
    // The default choice is IPA's (smallest of at least 4 GiB) and then refused: never silently another disk.
    await rejectsWithCode(select({ minSizeBytes: 5 * GIB + 1 }, withLoops), 'DEVICE_TOO_SMALL');
  });

  it('refuses a read-only disk', async () => {
    await lab.setReadOnly(small, true);
    try {
      await rejectsWithCode(select({ device: small.kname }), 'DEVICE_READ_ONLY', /blockdev --setrw/);
    } finally {
      await lab.setReadOnly(small, false);
    }
    await select({ device: small.kname });
  });

  it('refuses a mounted disk', { skip: skipMount }, async () => {
    const disk = await lab.addLoop(32 * MIB);
    await sh('mkfs.ext4', ['-q', disk.real]);
    const target = await lab.mount(disk.real);
    try {
      const error = await rejectsWithCode(select({ device: disk.kname }), 'DEVICE_BUSY', /is mounted on/);
      assert.equal(error.details.reason, 'mounted');
      assert.equal(error.details.mount_point, target);
    } finally {
      await lab.unmount(target);
    }
    await select({ device: disk.kname });
  });

  it('refuses a disk holding active swap', { skip: skipSwap }, async () => {
    const disk = await lab.addLoop(32 * MIB);
    await lab.swapOn(disk.real);
    try {
      const error = await rejectsWithCode(select({ device: disk.kname }), 'DEVICE_BUSY', /swapoff/);
      assert.equal(error.details.reason, 'swap');
    } finally {
      await lab.swapOff(disk.real);
    }
    await select({ device: disk.kname });
  });

  it('refuses a disk with holders (device-mapper target over it)', async (t) => {
    const disk = await lab.addLoop(32 * MIB);
    const dm = await lab.dmLinear(disk);
    if (dm === null) {
      t.diagnostic('no device-mapper in this kernel (or no dmsetup): holders simulated in the sysfs tree');
      await lab.fakeHolders(disk.kname, ['dm-42']);
    }
    const error = await rejectsWithCode(select({ device: disk.kname }), 'DEVICE_BUSY', /held by/);
    assert.equal(error.details.reason, 'holders');
    assert.equal((error.details.holders as string[]).length, 1);
  });

  it('refuses a disk another program holds open exclusively', async () => {
    const disk = await lab.addLoop(32 * MIB);
    const holder = await open(disk.real, fsConstants.O_RDONLY | fsConstants.O_EXCL);
    try {
      const error = await rejectsWithCode(
        select({ device: disk.kname }),
        'DEVICE_BUSY',
        /refused an exclusive open/,
      );
      assert.equal(error.details.reason, 'exclusive_open');
    } finally {
      await holder.close();
    }
    await select({ device: disk.kname });
  });

  describe('partitions', { skip: skipPartitions }, () => {
    let disk: LoopDisk;
    let partitions: string[];
    before(async () => {
      disk = await lab.addLoop(64 * MIB, { partitions: true });
      partitions = await lab.partition(disk, ['-n', '1:2048:+16M', '-n', '2:0:+8M']);
    });

    it('refuses a partition and names its disk', async () => {
      const name = path.basename(partitions[0] ?? '');
      const error = await rejectsWithCode(select({ device: name }), 'INVALID_DEVICE', /is a partition of/);
      assert.equal(error.details.disk, disk.kname);
    });

    it('refuses a disk one of whose partitions is mounted', async () => {
      const first = partitions[0] ?? '';
      await sh('mkfs.ext4', ['-q', first]);
      const target = await lab.mount(first);
      try {
        const error = await rejectsWithCode(select({ device: disk.kname }), 'DEVICE_BUSY', /is mounted on/);
        assert.equal(error.details.member, path.basename(first));
      } finally {
        await lab.unmount(target);
      }
    });

    it('refuses a disk one of whose partitions holds swap', { skip: skipSwap }, async () => {
      const second = partitions[1] ?? '';
      await lab.swapOn(second);
      try {
        const error = await rejectsWithCode(
          select({ device: disk.kname }),
          'DEVICE_BUSY',
          /holds active swap/,
        );
        assert.equal(error.details.member, path.basename(second));
      } finally {
        await lab.swapOff(second);
      }
      await select({ device: disk.kname });
    });
  });

  it('wrote nothing while refusing', async () => {
    // Every refusal above ran on loops whose first MiB was never written: still all zero.
    for (const disk of [small, five, six]) {
      const head = await lab.read(disk, 0, MIB);
      assert.ok(
        head.every((byte) => byte === 0),
        `${disk.kname} was written to`,
      );
    }
  });
});
