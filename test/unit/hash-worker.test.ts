/**
 * The off-thread hasher: the same digests as node's createHash whatever the chunk boundaries, the
 * same CHECKSUM_MISMATCH verdict as the inline hasher, back-pressure, and a worker that stops on
 * every path.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes, randomInt } from 'node:crypto';
import { describe, it } from 'node:test';
import type { ExpectedChecksum, HashAlgorithm } from '../../agent/image/contracts.js';
import {
  createInlineHasher,
  createOffThreadHasher,
  type AsyncHasher,
} from '../../agent/image/hash-worker.js';
import { AgentError } from '../../agent/util/errors.js';

/** Feeds `data` in chunks cut at random boundaries, waiting when the hasher asks to. */
const feed = async (hasher: AsyncHasher, data: Buffer, maxChunk: number): Promise<void> => {
  for (let offset = 0; offset < data.length;) {
    const length = Math.min(data.length - offset, randomInt(0, maxChunk + 1));
    const full = hasher.update(data.subarray(offset, offset + length));
    if (full) await full;
    offset += length;
  }
};

const expect = (algorithm: HashAlgorithm, hex: string): ExpectedChecksum => ({
  algorithm,
  hex,
  source: 'params',
});

describe('createOffThreadHasher', () => {
  for (const algorithm of ['md5', 'sha256', 'sha512'] as const) {
    it(`matches createHash(${algorithm}) for random data split at random boundaries`, async () => {
      for (const size of [0, 1, 4095, 300_000, 3 * 1024 * 1024 + 17]) {
        const data = randomBytes(size);
        const want = createHash(algorithm).update(data).digest('hex');
        // Small batches, so batch edges fall inside chunks and every batch is reused.
        const hasher = createOffThreadHasher(expect(algorithm, want), { batchBytes: 65_536, batches: 2 });
        try {
          await feed(hasher, data, 200_000);
          assert.equal(await hasher.verify(), want, `${algorithm}, ${size} bytes`);
        } finally {
          await hasher.close();
        }
      }
    });
  }

  it('computes sha256 without an expected value, and the chunk may be reused at once', async () => {
    const hasher = createOffThreadHasher(null, { batchBytes: 4096, batches: 1 });
    const chunk = Buffer.alloc(10_000);
    const reference = createHash('sha256');
    for (let index = 0; index < 20; index += 1) {
      chunk.fill(index);
      reference.update(chunk);
      const full = hasher.update(chunk);
      if (full) await full;
    }
    assert.equal(hasher.algorithm, 'sha256');
    assert.equal(await hasher.digestHex(), reference.digest('hex'));
    assert.throws(() => hasher.update(chunk), /already finished/);
  });

  it('fails a wrong digest with CHECKSUM_MISMATCH, like the inline hasher', async () => {
    const hasher = createOffThreadHasher(expect('sha256', 'A'.repeat(64)));
    hasher.update(Buffer.from('the image bytes\n'));
    await assert.rejects(hasher.verify(), (error: unknown) => {
      assert.ok(AgentError.is(error));
      assert.equal(error.code, 'CHECKSUM_MISMATCH');
      assert.equal(error.details.expected, 'A'.repeat(64));
      assert.equal(error.details.actual, createHash('sha256').update('the image bytes\n').digest('hex'));
      return true;
    });
  });

  it('holds back with every batch out, and close rejects the waiting update', async () => {
    const hasher = createOffThreadHasher(null, { batchBytes: 4096, batches: 1 });
    // The first batch goes to the worker; the rest of the chunk needs it back.
    const full = hasher.update(Buffer.alloc(3 * 4096));
    assert.ok(full instanceof Promise);
    const rejected = assert.rejects(full, /closed/);
    await hasher.close();
    await rejected;
    assert.throws(() => hasher.update(Buffer.alloc(1)), /closed/);
    await assert.rejects(hasher.digestHex(), /closed/);
    await hasher.close();
  });
});

/** Page-aligned shared memory, as the block writer allocates it. */
const sharedBuffer = (bytes: number): Buffer => {
  const { Memory } = (
    globalThis as unknown as {
      WebAssembly: {
        Memory: new (d: { initial: number; maximum: number; shared: boolean }) => {
          buffer: SharedArrayBuffer;
        };
      };
    }
  ).WebAssembly;
  const pages = Math.ceil(bytes / 65_536);
  return Buffer.from(new Memory({ initial: pages, maximum: pages, shared: true }).buffer, 0, bytes);
};

describe('hashInPlace', () => {
  it('hashes blocks of shared memory where they lie, in order with update()', async () => {
    const block = sharedBuffer(1024 * 1024);
    const reference = createHash('sha256');
    const hasher = createOffThreadHasher(null, { batchBytes: 65_536, batches: 2 });
    try {
      for (let index = 0; index < 6; index += 1) {
        // Bytes given through update() and not yet sent must still come before the block.
        const loose = randomBytes(randomInt(1, 100_000));
        reference.update(loose);
        const full = hasher.update(loose);
        if (full) await full;
        block.fill(index + 1, 0, 512 * 1024);
        randomBytes(512 * 1024).copy(block, 512 * 1024);
        const view = block.subarray(index * 1000, block.length - index);
        reference.update(view);
        // The block may be refilled only once the promise settles.
        await hasher.hashInPlace(view);
      }
      assert.equal(await hasher.digestHex(), reference.digest('hex'));
    } finally {
      await hasher.close();
    }
  });

  it('copies an unshared block as update() does', async () => {
    const data = randomBytes(3 * 65_536 + 5);
    const want = createHash('sha256').update(data).digest('hex');
    const hasher = createOffThreadHasher(null, { batchBytes: 65_536, batches: 1 });
    try {
      await hasher.hashInPlace(data);
      data.fill(0);
      assert.equal(await hasher.digestHex(), want);
    } finally {
      await hasher.close();
    }
  });

  it('rejects a waiting block when the hasher is closed', async () => {
    const hasher = createOffThreadHasher(null);
    const rejected = assert.rejects(hasher.hashInPlace(sharedBuffer(8 * 1024 * 1024)), /closed/);
    // Told at once, whether or not the worker has got to the block.
    await hasher.close();
    await rejected;
  });
});

describe('createInlineHasher', () => {
  it('gives the same digest and verdict behind the same interface', async () => {
    const data = randomBytes(100_000);
    const want = createHash('sha512').update(data).digest('hex');
    const hasher = createInlineHasher(expect('sha512', want));
    await feed(hasher, data, 10_000);
    assert.equal(await hasher.verify(), want);
    await hasher.close();
    const wrong = createInlineHasher(expect('md5', '0'.repeat(32)));
    wrong.update(data);
    await assert.rejects(
      wrong.verify(),
      (error: unknown) => AgentError.is(error) && error.code === 'CHECKSUM_MISMATCH',
    );
  });
});
