import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ImageFormat } from '../../agent/image/contracts.js';
import { createDecompressor, detectFormat, type DecompressStage } from '../../agent/image/decompress.js';
import { AgentError } from '../../agent/util/errors.js';
import { findOnPath } from '../../agent/util/run-process.js';
import { assertCode } from '../support/agent-errors.js';

/*
 * Each compression made by the real program in the test, decompressed through the stage and
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

/** Streams `source` through a stage into a hashing sink. */
const decompress = async (
  format: ImageFormat,
  source: Readable,
  stage?: DecompressStage,
): Promise<Outcome> => {
  const hash = createHash('sha256');
  let bytes = 0;
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      bytes += chunk.length;
      callback();
    },
  });
  try {
    await pipeline(source, stage ?? createDecompressor(format), sink);
    return { hash: hash.digest('hex'), bytes, error: null };
  } catch (error) {
    return { hash: '', bytes, error };
  }
};

const fileSource = (file: string): Readable => createReadStream(file, { highWaterMark: 256 * 1024 });

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

describe('createDecompressor', { skip }, () => {
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
      const outcome = await decompress(format, Readable.from([data, data], { objectMode: false }));
      assert.equal(outcome.error, null, String(outcome.error));
      assert.equal(outcome.bytes, payload.length * 2);
      assert.equal(outcome.hash, createHash('sha256').update(payload).update(payload).digest('hex'));
    });

    it(`${format}: a truncated stream is DECOMPRESS_FAILED, never a short success`, async () => {
      const data = await readFile(compressed.get(format) as string);
      const outcome = await decompress(
        format,
        Readable.from([data.subarray(0, Math.floor(data.length / 2))]),
      );
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
      const outcome = await decompress(format, Readable.from([data]));
      const error = assertCode(outcome.error, 'DECOMPRESS_FAILED');
      assert.match(error.message, new RegExp(`the ${format} image could not be decompressed`));
    });
  }

  it('raw passes through untouched', async () => {
    const outcome = await decompress('raw', Readable.from([payload.subarray(0, 3 * MiB + 7)]));
    assert.equal(
      outcome.hash,
      createHash('sha256')
        .update(payload.subarray(0, 3 * MiB + 7))
        .digest('hex'),
    );
  });

  it('refuses the qemu formats with UNSUPPORTED_FORMAT', () => {
    for (const format of ['qcow2', 'vmdk', 'vhdx', 'vdi', 'qed'] as const) {
      assert.throws(
        () => createDecompressor(format),
        (error: unknown) => assertCode(error, 'UNSUPPORTED_FORMAT') !== null,
      );
    }
  });

  it('names the Debian package when the program is missing', () => {
    const expected: Array<[ImageFormat, string]> = [
      ['xz', 'xz-utils'],
      ['zstd', 'zstd'],
      ['bzip2', 'bzip2'],
    ];
    for (const [format, pkg] of expected) {
      assert.throws(
        () => createDecompressor(format, { env: { PATH: '/nonexistent' } }),
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
    const outcome = await decompress('zstd', Readable.from([data, Buffer.from('garbage after the end')]));
    assertCode(outcome.error, 'DECOMPRESS_FAILED');
  });

  it('an abort kills the program (SIGTERM) and fails with the abort reason', async () => {
    const controller = new AbortController();
    const stage = createDecompressor('xz', { signal: controller.signal });
    const pid = stage.pid as number;
    assert.ok(pid > 0);
    const data = await readFile(compressed.get('xz') as string);
    // The source never ends, so only the abort can stop the pipeline.
    const source = new Readable({ read() {} });
    source.push(data.subarray(0, 4096));
    const running = decompress('xz', source, stage);
    await sleep(50);
    assert.equal(processGone(pid), false);
    controller.abort(new AgentError('CANCELLED', 'cancelled by the test'));
    const outcome = await running;
    const error = assertCode(outcome.error, 'CANCELLED');
    assert.equal(error.message, 'cancelled by the test');
    assert.equal(processGone(pid), true, 'the program is gone once the stage has failed');
  });

  it('a failure downstream stops the program too', async () => {
    const stage = createDecompressor('zstd');
    const pid = stage.pid as number;
    const data = await readFile(compressed.get('zstd') as string);
    const failing = new Writable({
      write(_chunk, _encoding, callback) {
        callback(new Error('disk on fire'));
      },
    });
    await assert.rejects(pipeline(Readable.from([data]), stage, failing), /disk on fire/);
    for (let i = 0; i < 50 && !processGone(pid); i += 1) await sleep(20);
    assert.equal(processGone(pid), true);
  });

  it('holds a bounded amount when nobody reads (a zero bomb stays small)', async () => {
    // 256 MiB of zeros compress to a few KiB; unread, the stage must stop the program, not buffer it.
    const zeros = path.join(dir, 'zeros.raw');
    const bomb = path.join(dir, 'zeros.zst');
    const handle = await open(zeros, 'w');
    await handle.truncate(256 * MiB);
    await handle.close();
    await runTool(['zstd', '-c', '-q', '-19'], zeros, bomb);
    await rm(zeros);
    const stage = createDecompressor('zstd');
    stage.end(await readFile(bomb));
    await sleep(500);
    assert.ok(stage.readableLength <= 8 * MiB, `buffered ${stage.readableLength} bytes`);
    assert.equal(processGone(stage.pid as number), false, 'the program waits, blocked on its full pipe');
    // Draining it still yields every byte.
    let total = 0;
    for await (const chunk of stage) total += (chunk as Buffer).length;
    assert.equal(total, 256 * MiB);
  });
});
