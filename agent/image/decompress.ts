/**
 * Image formats by magic bytes, and decompression as a stream stage.
 *
 * gzip runs in-process (Node's zlib is about 2x faster than `gzip -dc` here); xz, zstd and bzip2
 * run as the system programs fed through pipes, because they decompress 2-6x faster than the npm
 * ports and Node 20 has no zstd (see perf-baseline.md section 2). Every stage keeps back-pressure
 * from the writer back to the download, so memory stays bounded whatever the image size.
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { Duplex, PassThrough, type Readable, type Writable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { AgentError } from '../util/errors.js';
import type { ImageFormat } from './contracts.js';
import {
  abortError,
  DEFAULT_TOOL_KILL_GRACE_MS,
  formatArgv,
  lastLine,
  OutputTail,
  requireTool,
  terminate,
} from '../util/tool-process.js';

/** Enough of the head to tell every supported format (vdi's signature sits at offset 64). */
export const FORMAT_PROBE_BYTES = 512;

/** Formats only qemu-img can turn into a disk; they cannot be streamed. */
export const QEMU_FORMATS: ReadonlySet<ImageFormat> = new Set(['qcow2', 'vmdk', 'vhdx', 'vdi', 'qed']);
export const COMPRESSED_FORMATS: ReadonlySet<ImageFormat> = new Set(['gzip', 'xz', 'zstd', 'bzip2']);

const startsWith = (head: Buffer, magic: readonly number[], offset = 0): boolean =>
  head.length >= offset + magic.length && magic.every((byte, index) => head[offset + index] === byte);

const ascii = (text: string): number[] => [...Buffer.from(text, 'latin1')];

/**
 * The format of an image from its first bytes, never its name. Anything unrecognised is raw: a
 * disk image starts with whatever its boot sector holds.
 */
export const detectFormat = (head: Buffer): ImageFormat => {
  // The deflate method byte (8) as well, so a raw sector that happens to start 1f 8b stays raw.
  if (startsWith(head, [0x1f, 0x8b, 0x08])) return 'gzip';
  if (startsWith(head, [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])) return 'xz';
  if (startsWith(head, [0x28, 0xb5, 0x2f, 0xfd])) return 'zstd';
  // zstd skippable frame (0x184D2A5?), which `zstd -dc` accepts in front of the data.
  if (startsWith(head, [0x2a, 0x4d, 0x18], 1) && ((head[0] ?? 0) & 0xf0) === 0x50) return 'zstd';
  // "BZh" and the block size digit 1-9.
  if (startsWith(head, ascii('BZh')) && (head[3] ?? 0) >= 0x31 && (head[3] ?? 0) <= 0x39) return 'bzip2';
  if (startsWith(head, [0x51, 0x46, 0x49, 0xfb])) return 'qcow2';
  if (startsWith(head, ascii('KDMV'))) return 'vmdk';
  if (startsWith(head, ascii('vhdxfile'))) return 'vhdx';
  if (startsWith(head, ascii('QED\0'))) return 'qed';
  // VDI: the signature 0xbeda107f (little-endian) after the 64-byte text banner.
  if (startsWith(head, [0x7f, 0x10, 0xda, 0xbe], 0x40)) return 'vdi';
  return 'raw';
};

/** Each program and the Debian package that ships it, named when it is missing. */
export const DECOMPRESS_TOOLS = {
  xz: { program: 'xz', debianPackage: 'xz-utils', args: ['-T0', '-dc'] },
  zstd: { program: 'zstd', debianPackage: 'zstd', args: ['-dc'] },
  bzip2: { program: 'bzip2', debianPackage: 'bzip2', args: ['-dc'] },
} as const;

export interface DecompressOptions {
  signal?: AbortSignal;
  /** Added to the program's environment; a PATH here is also where the program is looked up. */
  env?: Record<string, string>;
  /** Between SIGTERM and SIGKILL when the stage is torn down early. */
  killGraceMs?: number;
}

/** A decompression stage: compressed bytes in, image bytes out. */
export interface DecompressStage extends Duplex {
  readonly format: ImageFormat;
  /** The program's pid for the external tools; undefined for in-process stages. */
  readonly pid: number | undefined;
}

// zlib's output buffer (16 KiB by default): large pieces mean fewer trips through the streams.
// A program's output comes in pipe-sized (64 KiB) reads; gathering those into 1 MiB pieces was
// measured and gained nothing, so they are passed on as they come.
const OUTPUT_CHUNK_BYTES = 1024 * 1024;
// What a stage may hold decoded but not yet taken downstream. Bounded, so a tiny compressed
// input that inflates enormously (a run of zeros) still cannot grow the heap.
const READABLE_HIGH_WATER = 4 * 1024 * 1024;
const WRITABLE_HIGH_WATER = 1024 * 1024;

const decompressFailed = (
  format: ImageFormat,
  message: string,
  details: Record<string, unknown>,
  cause?: unknown,
): AgentError =>
  new AgentError('DECOMPRESS_FAILED', `the ${format} image could not be decompressed: ${message}`, {
    details: { format, ...details },
    ...(cause === undefined ? {} : { cause }),
  });

/**
 * A duplex that feeds `input` and reads `output` of an inner pair (zlib, or a child's pipes),
 * with back-pressure in both directions. End of output is passed on only once `succeeded()` says the
 * inner work succeeded, so a truncated stream never looks like a complete image.
 */
abstract class BridgeStage extends Duplex implements DecompressStage {
  abstract readonly pid: number | undefined;
  private outputEnded = false;
  protected inputEnded = false;

  protected constructor(
    readonly format: ImageFormat,
    private readonly input: Writable,
    private readonly output: Readable,
  ) {
    super({ readableHighWaterMark: READABLE_HIGH_WATER, writableHighWaterMark: WRITABLE_HIGH_WATER });
    output.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) output.pause();
    });
    output.once('end', () => {
      this.outputEnded = true;
      this.maybeEnd();
    });
  }

  /** True once the inner work is known to have succeeded; until then the end is held back. */
  protected abstract succeeded(): boolean;

  protected maybeEnd(): void {
    if (this.outputEnded && this.succeeded() && !this.destroyed) this.push(null);
  }

  override _read(): void {
    this.output.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.input.destroyed || this.input.writableEnded) {
      // The inner side is gone (a tool that exited); its exit status carries the real error.
      callback();
      return;
    }
    if (this.input.write(chunk)) {
      callback();
      return;
    }
    const done = (): void => {
      this.input.off('drain', done);
      this.input.off('close', done);
      callback();
    };
    this.input.on('drain', done);
    this.input.on('close', done);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.inputEnded = true;
    if (!this.input.destroyed) this.input.end();
    callback();
  }
}

/** gzip through Node's zlib; concatenated members are decoded one after another. */
class GunzipStage extends BridgeStage {
  readonly pid = undefined;

  constructor(signal: AbortSignal | undefined) {
    // zlib's default finish flush reports a truncated stream ("unexpected end of file").
    const gunzip = createGunzip({ chunkSize: OUTPUT_CHUNK_BYTES });
    super('gzip', gunzip, gunzip);
    gunzip.once('error', (error: Error & { code?: string }) => {
      this.destroy(decompressFailed('gzip', error.message, { zlibCode: error.code ?? null }, error));
    });
    this.once('close', () => gunzip.destroy());
    bindAbort(this, signal, 'gzip decompression');
  }

  // zlib ends its output only after a complete stream; anything else is an 'error'.
  protected succeeded(): boolean {
    return true;
  }
}

type ToolName = keyof typeof DECOMPRESS_TOOLS;

/** xz, zstd or bzip2 as a child process: stdin gets the compressed bytes, stdout the image. */
class ToolStage extends BridgeStage {
  readonly pid: number | undefined;
  private readonly child: ChildProcessByStdio<Writable, Readable, Readable>;
  private readonly stderr = new OutputTail();
  private exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  private stopping: Promise<void> | null = null;

  constructor(
    format: ToolName,
    private readonly argv: string[],
    resolved: string,
    env: Record<string, string> | undefined,
    private readonly killGraceMs: number,
    signal: AbortSignal | undefined,
  ) {
    const child = spawn(resolved, argv.slice(1), {
      argv0: argv[0],
      stdio: ['pipe', 'pipe', 'pipe'],
      // Added to the agent's environment, as runProcess does.
      ...(env === undefined ? {} : { env: { ...process.env, ...env } }),
    });
    super(format, child.stdin, child.stdout);
    this.child = child;
    this.pid = child.pid;
    child.stderr.on('data', (chunk: Buffer) => this.stderr.push(chunk));
    // EPIPE when the program stopped reading (bad data): its exit status says why.
    child.stdin.on('error', () => undefined);
    child.once('error', (error: Error & { code?: string }) => {
      this.destroy(
        new AgentError('TOOL_FAILED', `${formatArgv(argv)} could not be started: ${error.message}`, {
          details: this.runDetails(),
          cause: error,
        }),
      );
    });
    child.once('close', (code, exitSignal) => {
      this.exit = { code, signal: exitSignal };
      this.onExit();
    });
    bindAbort(this, signal, `${format} decompression`);
  }

  private runDetails(): Record<string, unknown> {
    return {
      argv: this.argv,
      exitCode: this.exit?.code ?? null,
      signal: this.exit?.signal ?? null,
      stderrTail: this.stderr.text(),
    };
  }

  protected succeeded(): boolean {
    return this.exit !== null && this.exit.code === 0 && this.inputEnded;
  }

  private onExit(): void {
    if (this.destroyed || this.exit === null) return;
    const { code, signal } = this.exit;
    const command = formatArgv(this.argv);
    const said = lastLine(this.stderr.text());
    if (signal !== null) {
      this.destroy(
        new AgentError('TOOL_FAILED', `${command} was killed by ${signal}${said ? `: ${said}` : ''}`, {
          details: this.runDetails(),
        }),
      );
    } else if (code !== 0) {
      this.destroy(
        decompressFailed(
          this.format,
          said ?? `${command} exited with code ${code ?? 'unknown'}`,
          this.runDetails(),
        ),
      );
    } else if (!this.inputEnded) {
      // Success before the input ended means bytes were left over that nobody decoded.
      this.destroy(
        decompressFailed(this.format, `${command} finished before the end of its input`, this.runDetails()),
      );
    } else {
      this.maybeEnd();
    }
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    // The child never outlives the stage; the caller's error is passed on once it is gone.
    this.stopping ??= terminate(this.child, this.killGraceMs);
    this.child.stdin.destroy();
    this.child.stdout.destroy();
    this.stopping.then(
      () => callback(error),
      () => callback(error),
    );
  }
}

const bindAbort = (stage: Duplex, signal: AbortSignal | undefined, what: string): void => {
  if (signal === undefined) return;
  if (signal.aborted) {
    queueMicrotask(() => stage.destroy(abortError(signal, what)));
    return;
  }
  const onAbort = (): void => {
    stage.destroy(abortError(signal, what));
  };
  signal.addEventListener('abort', onAbort, { once: true });
  stage.once('close', () => signal.removeEventListener('abort', onAbort));
};

class RawStage extends PassThrough implements DecompressStage {
  readonly format = 'raw' as const;
  readonly pid = undefined;
}

/**
 * A stage that turns `format` into raw image bytes. Throws at once: UNSUPPORTED_FORMAT for the
 * qemu formats (they need qemu-img and a file), TOOL_NOT_FOUND naming the Debian package when
 * the program is missing. The stage fails with DECOMPRESS_FAILED (the tool's stderr tail in
 * details) on corrupt or truncated input, and its end comes only after the tool exited 0.
 */
export const createDecompressor = (format: ImageFormat, options: DecompressOptions = {}): DecompressStage => {
  const { signal, env, killGraceMs = DEFAULT_TOOL_KILL_GRACE_MS } = options;
  if (signal?.aborted) throw abortError(signal, `${format} decompression`);
  switch (format) {
    case 'raw': {
      const stage = new RawStage({ highWaterMark: READABLE_HIGH_WATER });
      bindAbort(stage, signal, 'copying the image');
      return stage;
    }
    case 'gzip':
      return new GunzipStage(signal);
    case 'xz':
    case 'zstd':
    case 'bzip2': {
      const tool = DECOMPRESS_TOOLS[format];
      const resolved = requireTool(tool.program, tool.debianPackage, env?.PATH ?? process.env.PATH ?? '');
      return new ToolStage(format, [tool.program, ...tool.args], resolved, env, killGraceMs, signal);
    }
    default:
      throw new AgentError(
        'UNSUPPORTED_FORMAT',
        `${format} images cannot be streamed; they are converted with qemu-img from a staged copy`,
        { details: { format } },
      );
  }
};
