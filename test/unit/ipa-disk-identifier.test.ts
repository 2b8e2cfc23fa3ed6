import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  formatDiskIdentifier,
  readDiskIdentifier,
} from '../../agent/hardware/generic/disks/disk-identifier.js';
import { readPartitionTable } from '../../agent/hardware/generic/disks/partition-table.js';
import { AgentError } from '../../agent/util/errors.js';

let dir: string;

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'bm-agent-ipa-disk-'));
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** An MBR sector: disk signature at 440, partition types at 446 + 16n + 4, 55 AA at 510. */
const mbr = (signature: number, types: number[], bootSignature = true): Buffer => {
  const sector = Buffer.alloc(512);
  sector.writeUInt32LE(signature, 440);
  types.forEach((type, index) => (sector[446 + index * 16 + 4] = type));
  if (bootSignature) sector.set([0x55, 0xaa], 510);
  return sector;
};

/** A GPT header at LBA 1 of `sectorBytes` sectors, with `used` of 128 entries given a type GUID. */
const gptImage = (sectorBytes: number, used: number): Buffer => {
  const image = Buffer.alloc(sectorBytes * 40);
  mbr(0, [0xee]).copy(image, 0);
  const header = image.subarray(sectorBytes);
  header.write('EFI PART', 0, 'latin1');
  header.writeBigUInt64LE(2n, 72);
  header.writeUInt32LE(128, 80);
  header.writeUInt32LE(128, 84);
  for (let index = 0; index < used; index += 1) image[sectorBytes * 2 + index * 128] = 0x28;
  return image;
};

const file = async (name: string, bytes: Buffer): Promise<string> => {
  const target = path.join(dir, name);
  await writeFile(target, bytes);
  return target;
};

const failsWith = (code: string) => (error: unknown) => {
  assert.ok(AgentError.is(error), `expected an AgentError, got ${String(error)}`);
  assert.equal(error.code, code);
  return true;
};

describe('disk identifier', () => {
  it('reads the MBR signature at byte 440, little-endian, as IPA prints it', async () => {
    // "BITS" in the sector is 0x53544942 read little-endian: the value Ironic recorded in the transcript.
    const sector = Buffer.alloc(1024);
    sector.write('BITS', 440, 'latin1');
    assert.equal(await readDiskIdentifier(await file('bits.img', sector)), '0x53544942');
    assert.equal(await readDiskIdentifier(await file('small.img', mbr(0x1a2b, []))), '0x00001a2b');
    assert.equal(await readDiskIdentifier(await file('high.img', mbr(0xfedcba98, []))), '0xfedcba98');
  });

  it('formats with eight lower-case digits', () => {
    assert.equal(formatDiskIdentifier(0), '0x00000000');
    assert.equal(formatDiskIdentifier(0xabcdef01), '0xabcdef01');
  });

  it('fails on a device shorter than the signature, or one that is not there', async () => {
    await assert.rejects(
      readDiskIdentifier(await file('short.img', Buffer.alloc(442))),
      failsWith('DISK_READ_FAILED'),
    );
    await assert.rejects(readDiskIdentifier(path.join(dir, 'missing.img')), failsWith('DEVICE_NOT_FOUND'));
    await assert.rejects(readDiskIdentifier(dir), failsWith('DISK_READ_FAILED'));
  });
});

describe('partition table', () => {
  it('counts MBR partitions', async () => {
    assert.deepEqual(await readPartitionTable(await file('mbr2.img', mbr(1, [0x83, 0, 0x82]))), {
      kind: 'mbr',
      partitions: 2,
    });
    assert.deepEqual(await readPartitionTable(await file('mbr0.img', mbr(1, []))), {
      kind: 'mbr',
      partitions: 0,
    });
  });

  it('finds GPT with 512- and 4096-byte sectors and counts used entries', async () => {
    assert.deepEqual(await readPartitionTable(await file('gpt512.img', gptImage(512, 3))), {
      kind: 'gpt',
      sectorBytes: 512,
      partitions: 3,
    });
    assert.deepEqual(await readPartitionTable(await file('gpt4k.img', gptImage(4096, 1))), {
      kind: 'gpt',
      sectorBytes: 4096,
      partitions: 1,
    });
  });

  it('sees no table without the boot signature, or behind a protective MBR whose GPT is gone', async () => {
    assert.equal(await readPartitionTable(await file('blank.img', Buffer.alloc(8192))), null);
    assert.equal(await readPartitionTable(await file('nosig.img', mbr(1, [0x83], false))), null);
    assert.equal(
      await readPartitionTable(
        await file('protective.img', Buffer.concat([mbr(0, [0xee]), Buffer.alloc(8192)])),
      ),
      null,
    );
  });

  it('ignores a GPT header whose entry array lies past the end or is absurd', async () => {
    const past = gptImage(512, 1);
    past.writeBigUInt64LE(1_000_000n, 512 + 72);
    assert.equal(await readPartitionTable(await file('past.img', past)), null);
    const absurd = gptImage(512, 1);
    absurd.writeUInt32LE(1_000_000, 512 + 80);
    assert.equal(await readPartitionTable(await file('absurd.img', absurd)), null);
  });

  it('fails on a file shorter than one sector', async () => {
    await assert.rejects(
      readPartitionTable(await file('tiny.img', Buffer.alloc(100))),
      failsWith('DISK_READ_FAILED'),
    );
  });
});
