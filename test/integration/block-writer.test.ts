import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { open, readdir, readFile, readlink, realpath, writeFile, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { openBlockWriter, type OpenedBlockWriter } from '../../agent/image/block-writer.js';
import { AgentError } from '../../agent/util/errors.js';
import { LoopDevice, loopSkipReason, patternBuffer, sha256, sha256OfRange } from '../support/image-loop.js';

/*
 * The writer against real loop devices: content byte-identical, O_DIRECT really in effect (read
 * from the kernel's fdinfo while writing), the tail not padded past the image end, and the
 * errors for a device that is too small or held exclusively.
 */

const exec = promisify(execFile);
const skip = (await loopSkipReason()) ?? false;
if (skip) process.stderr.write(`# skipping block-writer tests: ${skip}\n`);

const MiB = 1024 * 1024;
const O_DIRECT_FLAG = 0o40000;
const FILL_SEED = 0x5a;

const devices: LoopDevice[] = [];
const newLoop = async (sizeBytes: number, directIo = false): Promise<LoopDevice> => {
  const loop = await LoopDevice.create(sizeBytes, { fillSeed: FILL_SEED, directIo });
  devices.push(loop);
  return loop;
};
after(async () => {
  for (const loop of devices.splice(0)) await loop.detach();
});

/** The open-file flags of each descriptor this process holds on `device`, from /proc/self/fdinfo. */
const openFlagsOn = async (device: string): Promise<number[]> => {
  const target = await realpath(device);
  const flags: number[] = [];
  for (const fd of await readdir('/proc/self/fd')) {
    const link = await readlink(`/proc/self/fd/${fd}`).catch(() => '');
    if (link !== target) continue;
    const info = await readFile(`/proc/self/fdinfo/${fd}`, 'utf8').catch(() => '');
    const match = /^flags:\s+([0-7]+)$/m.exec(info);
    if (match?.[1]) flags.push(parseInt(match[1], 8));
  }
  return flags;
};

/** Feeds `image` in uneven pieces (so the writer must coalesce), calling `during` after the first write. */
const writeImage = async (
  writer: OpenedBlockWriter,
  image: Buffer,
  piece: number,
  during?: () => Promise<void>,
): Promise<number> => {
  let first = true;
  for (let offset = 0; offset < image.length; offset += piece) {
    await writer.write(image.subarray(offset, Math.min(image.length, offset + piece)));
    if (first && offset + piece >= 8 * MiB && during) {
      await during();
      first = false;
    }
  }
  return (await writer.finish()).bytesWritten;
};

const assertDevice = async (loop: LoopDevice, image: Buffer): Promise<void> => {
  assert.equal(await sha256OfRange(loop.path, 0, image.length), sha256(image), 'image bytes on the device');
  const rest = loop.sizeBytes - image.length;
  assert.equal(
    await sha256OfRange(loop.path, image.length, rest),
    sha256(patternBuffer(FILL_SEED, image.length, rest)),
    'bytes after the image end keep their previous content',
  );
};

describe('openBlockWriter on a loop device', { skip }, () => {
  for (const inFlight of [1, 2] as const) {
    it(`writes an aligned image with O_DIRECT in effect (${inFlight} in flight)`, async () => {
      const loop = await newLoop(64 * MiB);
      const image = randomBytes(40 * MiB);
      const writer = await openBlockWriter(loop.path, { direct: true, inFlight });
      let seen: number[] = [];
      const written = await writeImage(writer, image, 1_000_003, async () => {
        seen = await openFlagsOn(loop.path);
      });
      assert.equal(written, image.length);
      assert.equal(writer.direct, true);
      assert.ok(seen.length >= 1, 'the writer holds the device open');
      assert.ok(
        seen.every((flags) => (flags & O_DIRECT_FLAG) !== 0),
        `O_DIRECT in fdinfo flags ${seen.map((f) => f.toString(8)).join(',')}`,
      );
      await assertDevice(loop, image);
      assert.deepEqual(await openFlagsOn(loop.path), [], 'every descriptor is closed after finish');
    });
  }

  it('writes an unaligned image without padding past its end', async () => {
    const loop = await newLoop(48 * MiB, true);
    // 2 full 8 MiB chunks, then a tail that is not a multiple of 512.
    const image = randomBytes(16 * MiB + 3 * MiB + 1234);
    const writer = await openBlockWriter(loop.path, { direct: true });
    assert.equal(await writeImage(writer, image, 65_537), image.length);
    await assertDevice(loop, image);
  });

  it('hands each block to onBlock once, in order, the tail included, and keeps it until told', async () => {
    const loop = await newLoop(32 * MiB, true);
    const image = randomBytes(3 * 4 * MiB + 12_345);
    const lengths: number[] = [];
    const shared: boolean[] = [];
    const seen = createHash('sha256');
    const writer = await openBlockWriter(loop.path, {
      direct: true,
      chunkBytes: 4 * MiB,
      onBlock: async (block) => {
        lengths.push(block.length);
        shared.push(block.buffer instanceof SharedArrayBuffer);
        const before = sha256(block);
        // The block must not be refilled while its observer is still at it.
        await sleep(20);
        assert.equal(sha256(block), before, 'the block changed under its observer');
        seen.update(block);
      },
    });
    assert.equal(await writeImage(writer, image, 1_000_003), image.length);
    assert.deepEqual(lengths, [4 * MiB, 4 * MiB, 4 * MiB, 12_345]);
    assert.ok(shared.every(Boolean), 'the blocks are shared memory, for a worker to read in place');
    assert.equal(seen.digest('hex'), sha256(image));
    await assertDevice(loop, image);
  });

  it('fails with the observer when onBlock fails, and closes the device', async () => {
    const loop = await newLoop(32 * MiB);
    let blocks = 0;
    const writer = await openBlockWriter(loop.path, {
      direct: true,
      chunkBytes: 4 * MiB,
      onBlock: () => {
        blocks += 1;
        return blocks === 2
          ? Promise.reject(new AgentError('CHECKSUM_MISMATCH', 'the observer failed'))
          : undefined;
      },
    });
    await assert.rejects(writeImage(writer, randomBytes(20 * MiB), MiB), /the observer failed/);
    assert.equal(blocks, 2, 'nothing was handed on after the failure');
    await writer.abort();
    assert.deepEqual(await openFlagsOn(loop.path), [], 'every descriptor is closed after abort');
  });

  it('writers one after another reuse one set of blocks, so memory does not pile up', async () => {
    const loop = await newLoop(32 * MiB);
    const piece = randomBytes(MiB);
    const before = process.memoryUsage().rss;
    for (let writer = 0; writer < 8; writer += 1) {
      const opened = await openBlockWriter(loop.path, { direct: true });
      for (let offset = 0; offset < 28 * MiB; offset += MiB) await opened.write(piece);
      await opened.finish();
    }
    const grown = process.memoryUsage().rss - before;
    // 8 writers of 3 × 8 MiB each would be 192 MiB if every set stayed until a collection.
    assert.ok(grown < 64 * MiB, `RSS grew by ${Math.round(grown / MiB)} MiB`);
  });

  it('takes a chunk without waiting while a buffer is free', async () => {
    const loop = await newLoop(8 * MiB);
    const writer = await openBlockWriter(loop.path, { direct: true, chunkBytes: 4 * MiB });
    assert.equal(writer.write(randomBytes(MiB)), undefined);
    assert.equal(writer.write(randomBytes(MiB)), undefined);
    assert.equal((await writer.finish()).bytesWritten, 2 * MiB);
  });

  it('writes an image smaller than one chunk (all of it the tail)', async () => {
    const loop = await newLoop(8 * MiB);
    const image = randomBytes(5001);
    const writer = await openBlockWriter(loop.path, { direct: true });
    assert.equal(await writeImage(writer, image, 4096), image.length);
    await assertDevice(loop, image);
  });

  it('fills a device exactly', async () => {
    const loop = await newLoop(24 * MiB);
    const image = randomBytes(24 * MiB);
    const writer = await openBlockWriter(loop.path, { direct: true, chunkBytes: 4 * MiB });
    assert.equal(await writeImage(writer, image, 3 * MiB), image.length);
    await assertDevice(loop, image);
  });

  it('writes through the page cache when asked', async () => {
    const loop = await newLoop(32 * MiB);
    const image = randomBytes(20 * MiB + 77);
    const writer = await openBlockWriter(loop.path, { direct: false });
    let seen: number[] = [];
    await writeImage(writer, image, 1 * MiB, async () => {
      seen = await openFlagsOn(loop.path);
    });
    assert.equal(writer.direct, false);
    assert.ok(seen.length >= 1 && seen.every((flags) => (flags & O_DIRECT_FLAG) === 0));
    await assertDevice(loop, image);
  });

  it('fails with WRITE_FAILED, the offset and ENOSPC past the end of a small device', async () => {
    const loop = await newLoop(12 * MiB);
    const writer = await openBlockWriter(loop.path, { direct: true });
    const piece = randomBytes(1 * MiB);
    let failure: unknown;
    try {
      for (let i = 0; i < 20; i += 1) await writer.write(piece);
      await writer.finish();
    } catch (error) {
      failure = error;
      await writer.abort();
    }
    assert.ok(AgentError.is(failure), String(failure));
    assert.equal(failure.code, 'WRITE_FAILED');
    assert.equal(failure.details.errno, 'ENOSPC');
    // The second 8 MiB write starts at 8 MiB and stops at the 12 MiB end.
    assert.equal(failure.details.offset, 8 * MiB);
    assert.deepEqual(await openFlagsOn(loop.path), [], 'abort closed the device');
  });

  it('fails with WRITE_FAILED when only the tail runs past the end', async () => {
    const loop = await newLoop(9 * MiB);
    const writer = await openBlockWriter(loop.path, { direct: true });
    await writer.write(randomBytes(10 * MiB + 5));
    await assert.rejects(writer.finish(), (error: unknown) => {
      assert.ok(AgentError.is(error));
      assert.equal(error.code, 'WRITE_FAILED');
      assert.equal(error.details.offset, 8 * MiB);
      return true;
    });
    assert.deepEqual(await openFlagsOn(loop.path), []);
  });

  it('refuses a device another opener holds exclusively (as a mount does) with DEVICE_BUSY', async () => {
    const loop = await newLoop(8 * MiB);
    let holder: FileHandle | null = await open(loop.path, fsConstants.O_RDONLY | fsConstants.O_EXCL);
    try {
      await assert.rejects(openBlockWriter(loop.path, { direct: true }), (error: unknown) => {
        assert.ok(AgentError.is(error));
        assert.equal(error.code, 'DEVICE_BUSY');
        assert.equal(error.details.errno, 'EBUSY');
        return true;
      });
    } finally {
      await holder.close();
      holder = null;
    }
    const writer = await openBlockWriter(loop.path, { direct: true });
    await writer.abort();
  });

  it('falls back to buffered writes when O_DIRECT is refused per write (no aligned buffers)', async () => {
    // --jitless removes WebAssembly, so the writer gets malloc'd (unaligned) buffers and the first
    // O_DIRECT write fails with EINVAL: the fallback must still land the image byte-identical.
    const loop = await newLoop(32 * MiB);
    const image = randomBytes(17 * MiB + 999);
    const imageFile = path.join(path.dirname(loop.backing), 'image.bin');
    await writeFile(imageFile, image);
    const script = fileURLToPath(new URL('../support/write-with-writer.js', import.meta.url));
    const { stdout } = await exec(process.execPath, ['--jitless', script, loop.path, imageFile]).catch(
      (error: unknown) => {
        throw new Error(`helper failed: ${String((error as { stderr?: string }).stderr ?? error)}`);
      },
    );
    const report = JSON.parse(stdout) as { bytesWritten: number; direct: boolean; warnings: string[] };
    assert.equal(report.bytesWritten, image.length);
    assert.equal(report.direct, false);
    assert.ok(
      report.warnings.some((msg) => msg.includes('O_DIRECT')),
      JSON.stringify(report.warnings),
    );
    await assertDevice(loop, image);
  });
});
