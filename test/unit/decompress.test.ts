import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, open, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ImageFormat, OutputSink } from '../../agent/image/contracts.js';
import {
  detectFormat,
  openDecoder,
  type Decoder,
  type DecoderOptions,
} from '../../agent/image/decompress.js';
import { AgentError } from '../../agent/util/errors.js';
import { findOnPath } from '../../agent/util/run-process.js';
import { assertCode } from '../support/agent-errors.js';

/*
 * Each compression made by the real program in the test, decompressed through the decoder and
 * compared by sha256; corrupt and truncated inputs, a missing program, abort and back-pressure.
 */

const MiB = 1024 * 1024;
const TOOLS: Record<'gzip' | 'xz' | 'zstd' | 'bzip2', string[]> = {
  gzip: ['gzip', '-c', '-6'],
  // -T0 with a small level makes several blocks, which xz -T0 -d decodes in parallel.
  xz: ['xz', '-c', '-T0', '-2'],
  zstd: ['zstd', '-c', '-q', '-3'],
  bzip2: ['bzip2', '-c', '-9'],
};
type Compressed = keyof typeof TOOLS;
const FORMATS = Object.keys(TOOLS) as Compressed[];

const missing: string[] = [];
for (const format of FORMATS) if ((await findOnPath(format)) === null) missing.push(format);
const skip = missing.length > 0 ? `missing programs: ${missing.join(', ')}` : false;
if (skip) process.stderr.write(`# skipping decompression tests: ${skip}\n`);

let dir = '';
let payload: Buffer = Buffer.alloc(0);
let payloadHash = '';
const compressed = new Map<Compressed, string>();

/** 20 MiB like a disk image: random runs, zeros, repeated text and a non-aligned end. */
const makePayload = (): Buffer => {
  const parts: Buffer[] = [];
  const text = Buffer.from('root:x:0:0:root:/root:/bin/bash\n'.repeat(64));
  let size = 0;
  for (let i = 0; size < 20 * MiB - 4 * 64 * 1024; i += 1) {
    const part = i % 4 === 0 ? randomBytes(64 * 1024) : i % 4 === 1 ? Buffer.alloc(128 * 1024) : text;
    parts.push(part);
    size += part.length;
  }
  parts.push(randomBytes(20 * MiB - size - 333));
  return Buffer.concat(parts);
};

/** Runs `argv` with stdin from `input` and stdout to `output`, as a shell redirection would. */
const runTool = async (argv: string[], input: string, output: string): Promise<void> => {
  const inHandle = await open(input, 'r');
  const outHandle = await open(output, 'w');
  try {
    await new Promise<void>((resolve, reject) => {
      const child = spawn(argv[0] as string, argv.slice(1), {
        stdio: [inHandle.fd, outHandle.fd, 'inherit'],
      });
      child.once('error', reject);
      child.once('close', (code) =>
        code === 0 ? resolve() : reject(new Error(`${argv.join(' ')} exited ${code}`)),
      );
    });
  } finally {
    await inHandle.close();
    await outHandle.close();
  }
};

interface Outcome {
  hash: string;
  bytes: number;
  error: unknown;
}

/**
 * A sink that hashes what it is given, with its own space to be read into (as the block writer
 * has), or none (so every piece comes through write()).
 */
class HashingSink implements OutputSink {
  readonly hash = createHash('sha256');
  bytes = 0;
  readonly committed: number[] = [];
  private readonly space: Buffer | null;

  constructor(withSpace = true) {
    this.space = withSpace ? Buffer.alloc(MiB) : null;
  }

  reserve(): Buffer | null {
    return this.space;
  }

  commit(bytes: number): undefined {
    this.committed.push(bytes);
    this.take((this.space as Buffer).subarray(0, bytes));
    return undefined;
  }

  write(piece: Buffer): undefined {
    this.take(piece);
    return undefined;
  }

  private take(piece: Buffer): void {
    this.hash.update(piece);
    this.bytes += piece.length;
  }
}

/** Feeds `source` through a decoder into a hashing sink, chunk by chunk, as image.write does. */
const decompress = async (
  format: ImageFormat,
  source: AsyncIterable<Buffer> | Iterable<Buffer>,
  options: Omit<DecoderOptions, 'sink'> = {},
  sink = new HashingSink(),
): Promise<Outcome> => {
  let decoder: Decoder | null = null;
  try {
    decoder = await openDecoder(format, { ...options, sink });
    for await (const chunk of source) await decoder.write(chunk);
    decoder.end();
    await decoder.done;
    return { hash: sink.hash.digest('hex'), bytes: sink.bytes, error: null };
  } catch (error) {
    await decoder?.destroy(error instanceof Error ? error : new Error(String(error)));
    return { hash: '', bytes: sink.bytes, error };
  }
};

const fileSource = (file: string): AsyncIterable<Buffer> =>
  createReadStream(file, { highWaterMark: 256 * 1024 }) as AsyncIterable<Buffer>;

const processGone = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return false;
  } catch {
    return true;
  }
};

describe('detectFormat', () => {
  const cases: Array<[string, Buffer, ImageFormat]> = [
    ['gzip', Buffer.from([0x1f, 0x8b, 0x08, 0x00]), 'gzip'],
    ['xz', Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0x00]), 'xz'],
    ['zstd', Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x04]), 'zstd'],
    ['zstd skippable frame', Buffer.from([0x50, 0x2a, 0x4d, 0x18, 0, 0, 0, 0]), 'zstd'],
    ['bzip2', Buffer.from('BZh91AY&SY'), 'bzip2'],
    ['qcow2', Buffer.from([0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3]), 'qcow2'],
    ['vmdk sparse', Buffer.from('KDMV\x01\x00\x00\x00', 'latin1'), 'vmdk'],
    ['vhdx', Buffer.from('vhdxfile\0\0'), 'vhdx'],
    ['qed', Buffer.from('QED\0\x00\x00\x01\x00', 'latin1'), 'qed'],
    [
      'vdi',
      Buffer.concat([
        Buffer.from('<<< Oracle VM VirtualBox Disk Image >>>\n'.padEnd(64, '\0')),
        Buffer.from([0x7f, 0x10, 0xda, 0xbe]),
      ]),
      'vdi',
    ],
    ['empty', Buffer.alloc(0), 'raw'],
    ['two bytes of gzip', Buffer.from([0x1f, 0x8b]), 'raw'],
    ['1f 8b without deflate', Buffer.from([0x1f, 0x8b, 0x01, 0x00]), 'raw'],
    ['"BZh" without a block size', Buffer.from('BZhx'), 'raw'],
    [
      'an MBR boot sector',
      Buffer.concat([Buffer.from([0xeb, 0x63, 0x90]), Buffer.alloc(507), Buffer.from([0x55, 0xaa])]),
      'raw',
    ],
    ['zeros', Buffer.alloc(512), 'raw'],
    ['an ext4 image', Buffer.concat([Buffer.alloc(1024 + 56), Buffer.from([0x53, 0xef])]), 'raw'],
  ];
  for (const [name, head, expected] of cases) {
    it(`${name} -> ${expected}`, () => assert.equal(detectFormat(head), expected));
  }

  it('a raw image that starts with random bytes is raw', () => {
    const magics = new Set(['1f8b08', 'fd377a', '28b52f', '425a68', '514649', '4b444d', '766864', '514544']);
    for (let i = 0; i < 2000; i += 1) {
      const head = randomBytes(512);
      // Skip the rare draw that begins with a real magic; everything else must be raw.
      if (
        magics.has(head.subarray(0, 3).toString('hex')) ||
        head.subarray(0x40, 0x44).equals(Buffer.from([0x7f, 0x10, 0xda, 0xbe]))
      )
        continue;
      if (head[1] === 0x2a && head[2] === 0x4d && head[3] === 0x18) continue;
      assert.equal(detectFormat(head), 'raw', head.subarray(0, 8).toString('hex'));
    }
  });

  it('looks at bytes, not names: a gzip file called image.raw is gzip', async () => {
    const file = path.join(await mkdtemp(path.join(os.tmpdir(), 'bma-detect-')), 'image.raw');
    await writeFile(file, Buffer.from([0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0]));
    assert.equal(detectFormat(await readFile(file)), 'gzip');
    await rm(path.dirname(file), { recursive: true });
  });
});

describe('openDecoder', { skip }, () => {
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'bma-decompress-'));
    payload = makePayload();
    payloadHash = createHash('sha256').update(payload).digest('hex');
    const raw = path.join(dir, 'payload.raw');
    await writeFile(raw, payload);
    await Promise.all(
      FORMATS.map(async (format) => {
        const out = path.join(dir, `payload.${format}`);
        await runTool(TOOLS[format], raw, out);
        compressed.set(format, out);
      }),
    );
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  for (const format of FORMATS) {
    it(`${format}: made by ${TOOLS[format][0]}, detected by magic and byte-identical after`, async () => {
      const file = compressed.get(format) as string;
      const head = (await readFile(file)).subarray(0, 512);
      assert.equal(detectFormat(head), format);
      const outcome = await decompress(format, fileSource(file));
      assert.equal(outcome.error, null, String(outcome.error));
      assert.equal(outcome.bytes, payload.length);
      assert.equal(outcome.hash, payloadHash);
    });

    it(`${format}: concatenated streams decode as one`, async () => {
      const file = compressed.get(format) as string;
      const data = await readFile(file);
      const outcome = await decompress(format, [data, data]);
      assert.equal(outcome.error, null, String(outcome.error));
      assert.equal(outcome.bytes, payload.length * 2);
      assert.equal(outcome.hash, createHash('sha256').update(payload).update(payload).digest('hex'));
    });

    it(`${format}: a truncated stream is DECOMPRESS_FAILED, never a short success`, async () => {
      const data = await readFile(compressed.get(format) as string);
      const outcome = await decompress(format, [data.subarray(0, Math.floor(data.length / 2))]);
      const error = assertCode(outcome.error, 'DECOMPRESS_FAILED');
      assert.equal(error.details.format, format);
      if (format === 'gzip') assert.ok(error.details.zlibCode);
      else assert.ok(String(error.details.stderrTail).length > 0, 'the tool said why');
      assert.ok(outcome.bytes < payload.length);
    });

    it(`${format}: corrupt bytes in the middle are DECOMPRESS_FAILED`, async () => {
      const data = Buffer.from(await readFile(compressed.get(format) as string));
      const middle = Math.floor(data.length / 2);
      for (let i = 0; i < 64; i += 1) data[middle + i] = (data[middle + i] ?? 0) ^ 0x5a;
      const outcome = await decompress(format, [data]);
      const error = assertCode(outcome.error, 'DECOMPRESS_FAILED');
      assert.match(error.message, new RegExp(`the ${format} image could not be decompressed`));
    });
  }

  it('raw passes through untouched', async () => {
    const outcome = await decompress('raw', [payload.subarray(0, 3 * MiB + 7)]);
    assert.equal(
      outcome.hash,
      createHash('sha256')
        .update(payload.subarray(0, 3 * MiB + 7))
        .digest('hex'),
    );
  });

  it('refuses the qemu formats with UNSUPPORTED_FORMAT', async () => {
    for (const format of ['qcow2', 'vmdk', 'vhdx', 'vdi', 'qed'] as const) {
      await assert.rejects(
        openDecoder(format, { sink: new HashingSink() }),
        (error: unknown) => assertCode(error, 'UNSUPPORTED_FORMAT') !== null,
      );
    }
  });

  it('names the Debian package when the program is missing', async () => {
    const expected: Array<[ImageFormat, string]> = [
      ['xz', 'xz-utils'],
      ['zstd', 'zstd'],
      ['bzip2', 'bzip2'],
    ];
    for (const [format, pkg] of expected) {
      await assert.rejects(
        openDecoder(format, { env: { PATH: '/nonexistent' }, sink: new HashingSink() }),
        (error: unknown) => {
          const agentError = assertCode(error, 'TOOL_NOT_FOUND');
          assert.equal(agentError.details.package, pkg);
          assert.ok(agentError.message.includes(pkg));
          return true;
        },
      );
    }
  });

  it('trailing bytes after the zstd stream are an error, not ignored', async () => {
    const data = await readFile(compressed.get('zstd') as string);
    const outcome = await decompress('zstd', [data, Buffer.from('garbage after the end')]);
    assertCode(outcome.error, 'DECOMPRESS_FAILED');
  });

  it("reads a program's output straight into the sink's space, a socket's worth at a time", async () => {
    const sink = new HashingSink();
    const outcome = await decompress('zstd', fileSource(compressed.get('zstd') as string), {}, sink);
    assert.equal(outcome.hash, payloadHash);
    assert.ok(sink.committed.length > 0, 'no read went straight into the sink');
    // A pipe (or node's own reads) gives 64 KiB at most; the socket gives more at a time.
    assert.ok(Math.max(...sink.committed) > 64 * 1024, `largest read ${Math.max(...sink.committed)} bytes`);
  });

  it('hands the output over by copy to a sink without space of its own', async () => {
    const outcome = await decompress(
      'xz',
      fileSource(compressed.get('xz') as string),
      {},
      new HashingSink(false),
    );
    assert.equal(outcome.hash, payloadHash);
  });

  it('runs zstd without its I/O threads when the program knows the flag', async () => {
    const data = await readFile(compressed.get('zstd') as string);
    const outcome = await decompress('zstd', [data.subarray(0, 1000)]);
    const error = assertCode(outcome.error, 'DECOMPRESS_FAILED');
    const help = await new Promise<string>((resolve) => {
      const child = spawn('zstd', ['--help'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let text = '';
      child.stdout.on('data', (piece: Buffer) => (text += piece.toString()));
      child.stderr.on('data', (piece: Buffer) => (text += piece.toString()));
      child.once('close', () => resolve(text));
    });
    assert.equal((error.details.argv as string[]).includes('--no-asyncio'), help.includes('asyncio'));
  });

  it('reads the output through a plain pipe where no socket can be made', async () => {
    const outcome = await decompress('zstd', fileSource(compressed.get('zstd') as string), {
      socketDir: path.join(dir, 'no-such-directory'),
    });
    assert.equal(outcome.error, null, String(outcome.error));
    assert.equal(outcome.hash, payloadHash);
  });

  it('leaves no socket directory behind', async () => {
    const socketDir = await mkdtemp(path.join(os.tmpdir(), 'bma-decode-sockets-'));
    try {
      const outcome = await decompress('xz', fileSource(compressed.get('xz') as string), { socketDir });
      assert.equal(outcome.hash, payloadHash);
      assert.deepEqual(await readdir(socketDir), []);
    } finally {
      await rm(socketDir, { recursive: true, force: true });
    }
  });

  it('an abort kills the program (SIGTERM) and fails with the abort reason', async () => {
    const controller = new AbortController();
    const decoder = await openDecoder('xz', { signal: controller.signal, sink: new HashingSink() });
    const pid = decoder.pid as number;
    assert.ok(pid > 0);
    const data = await readFile(compressed.get('xz') as string);
    // The input never ends, so only the abort can stop the decoder.
    await decoder.write(data.subarray(0, 4096));
    await sleep(50);
    assert.equal(processGone(pid), false);
    controller.abort(new AgentError('CANCELLED', 'cancelled by the test'));
    const error = await decoder.done.then(
      () => null,
      (failure: unknown) => failure,
    );
    assert.equal(assertCode(error, 'CANCELLED').message, 'cancelled by the test');
    assert.equal(processGone(pid), true, 'the program is gone once the decoder has failed');
    await assert.rejects(decoder.write(data.subarray(4096, 8192)), /cancelled by the test/);
  });

  it('a failure downstream stops the program too', async () => {
    const failing: OutputSink = {
      reserve: () => Buffer.alloc(MiB),
      commit: () => Promise.reject(new Error('disk on fire')),
      write: () => Promise.reject(new Error('disk on fire')),
    };
    const decoder = await openDecoder('zstd', { sink: failing });
    const pid = decoder.pid as number;
    const data = await readFile(compressed.get('zstd') as string);
    await assert.rejects(
      (async () => {
        await decoder.write(data);
        decoder.end();
        await decoder.done;
      })(),
      /disk on fire/,
    );
    await assert.rejects(decoder.done, /disk on fire/);
    assert.equal(processGone(pid), true, 'the program is gone once done has settled');
  });

  it('holds a bounded amount when nobody takes the output (a zero bomb stays small)', async () => {
    // 256 MiB of zeros compress to a few KiB; unread, the decoder must stop the program, not buffer it.
    const zeros = path.join(dir, 'zeros.raw');
    const bomb = path.join(dir, 'zeros.zst');
    const handle = await open(zeros, 'w');
    await handle.truncate(256 * MiB);
    await handle.close();
    await runTool(['zstd', '-c', '-q', '-19'], zeros, bomb);
    await rm(zeros);
    let taken = 0;
    let release: () => void = () => undefined;
    let blocked: Promise<void> | null = new Promise<void>((resolve) => (release = resolve));
    const space = Buffer.alloc(MiB);
    // Takes one piece, then makes the decoder wait until released.
    const stuck: OutputSink = {
      reserve: () => (blocked === null ? space : null),
      commit: (bytes) => {
        taken += bytes;
        return blocked ?? undefined;
      },
      write: (piece) => {
        taken += piece.length;
        return blocked ?? undefined;
      },
    };
    const decoder = await openDecoder('zstd', { sink: stuck });
    await decoder.write(await readFile(bomb));
    decoder.end();
    const heapBefore = process.memoryUsage().arrayBuffers;
    await sleep(500);
    assert.ok(taken <= 1 * MiB, `handed out ${taken} bytes to a sink that took none`);
    assert.ok(
      process.memoryUsage().arrayBuffers - heapBefore < 8 * MiB,
      'nothing piles up while the sink waits',
    );
    assert.equal(processGone(decoder.pid as number), false, 'the program waits, blocked on its full output');
    // Taking the output again still yields every byte.
    blocked = null;
    release();
    await decoder.done;
    assert.equal(taken, 256 * MiB);
  });
});
