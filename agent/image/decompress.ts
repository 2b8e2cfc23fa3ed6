/**
 * Image formats by magic bytes, and decompression: a decoder that is fed compressed bytes and
 * hands each piece of output to a callback.
 *
 * gzip runs in-process (Node's zlib is about 2x faster than `gzip -dc` here); xz, zstd and bzip2
 * run as the system programs fed through pipes, because they decompress 2-6x faster than the npm
 * ports and Node 20 has no zstd (see perf-baseline.md section 2). Every decoder keeps
 * back-pressure from the writer back to the download, so memory stays bounded whatever the image
 * size. There is no stream stage in between: a stage per piece costs a push, a buffer and an event
 * more, on the CPU the download and the writer share.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { createGunzip, type Gunzip } from 'node:zlib';
import { AgentError } from '../util/errors.js';
import { runProcess } from '../util/run-process.js';
import type { ImageFormat, OutputSink } from './contracts.js';
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
  /** Between SIGTERM and SIGKILL when the decoder is torn down early. */
  killGraceMs?: number;
  /**
   * Where the socket a program's output comes through is made (a private directory, removed as
   * soon as the socket is connected). Default: the system's temporary directory. Where no socket
   * can be made, the output comes through a plain pipe, more slowly.
   */
  socketDir?: string;
}

export interface DecoderOptions extends DecompressOptions {
  /**
   * Where the image bytes go, in order. A program's output is read straight into the sink's
   * reserved space; zlib's output is handed over with write(). No more output comes while a call
   * returns a pending promise; a throw or rejection fails the decoder.
   */
  sink: OutputSink;
}

/** Compressed bytes in through write(), image bytes out into the sink. */
export interface Decoder {
  readonly format: ImageFormat;
  /** The program's pid for the external tools; undefined for in-process decoders. */
  readonly pid: number | undefined;
  /**
   * Feeds compressed bytes: the chunk must stay unchanged until the promise resolves (it may be
   * read meanwhile). Rejects once the decoder failed.
   */
  write(chunk: Buffer): Promise<void>;
  /** No more input. */
  end(): void;
  /**
   * Resolves once every piece of output went into the sink and the work is known to have
   * succeeded, so a truncated stream never looks like a complete image; rejects with the failure.
   */
  readonly done: Promise<void>;
  /** Stops the work (the program is gone when this resolves); `done` rejects with `error`. */
  destroy(error: Error): Promise<void>;
}

// zlib's output buffer (16 KiB by default): large pieces mean fewer trips through the callbacks.
const OUTPUT_CHUNK_BYTES = 1024 * 1024;
/**
 * A program's output is read as far as the socket holds per read (a Unix socket holds about
 * 200 KiB, a pipe 64 KiB) straight into the sink's free space. When the sink has none, a read
 * goes here instead and is handed over by copy.
 */
const SCRATCH_BYTES = 256 * 1024;

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

const asError = (error: unknown): Error => (error instanceof Error ? error : new Error(String(error)));

/** Hands pieces to `consume` one at a time, in order, waiting for each returned promise. */
class Serializer {
  private busy = false;
  private readonly queue: Array<{ piece: Buffer; release: () => void }> = [];
  private ended = false;

  constructor(
    private readonly consume: (piece: Buffer) => Promise<void> | undefined,
    private readonly onEnd: () => void,
    private readonly onError: (error: Error) => void,
  ) {}

  /** `release` runs once `consume` is done with the piece. */
  push(piece: Buffer, release: () => void): void {
    this.queue.push({ piece, release });
    this.pump();
  }

  /** No more pieces: onEnd once every queued one is consumed. */
  end(): void {
    this.ended = true;
    this.pump();
  }

  get idle(): boolean {
    return !this.busy && this.queue.length === 0;
  }

  private pump(): void {
    while (!this.busy) {
      const next = this.queue.shift();
      if (next === undefined) break;
      let result: Promise<void> | undefined;
      try {
        result = this.consume(next.piece);
      } catch (error) {
        this.onError(asError(error));
        return;
      }
      if (result === undefined) {
        next.release();
        continue;
      }
      this.busy = true;
      result.then(
        () => {
          this.busy = false;
          next.release();
          this.pump();
        },
        (error: unknown) => this.onError(asError(error)),
      );
    }
    if (this.ended && this.idle) {
      this.ended = false;
      this.onEnd();
    }
  }
}

/**
 * What every decoder shares: the done promise, the first failure, and writes that wait for the
 * inner side and fail with it.
 */
abstract class BaseDecoder implements Decoder {
  abstract readonly pid: number | undefined;
  readonly done: Promise<void>;
  protected failure: Error | null = null;
  protected inputEnded = false;
  private settled = false;
  private settleDone!: { resolve: () => void; reject: (error: Error) => void };
  private readonly writers = new Set<(error: Error) => void>();

  protected constructor(readonly format: ImageFormat) {
    this.done = new Promise((resolve, reject) => (this.settleDone = { resolve, reject }));
    // A failure before anyone awaits `done` is reported through write() or destroy() as well.
    this.done.catch(() => undefined);
  }

  write(chunk: Buffer): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.inputEnded)
      return Promise.reject(new AgentError('INTERNAL', 'write after the end of the input'));
    return new Promise((resolve, reject) => {
      this.writers.add(reject);
      this.feed(chunk, (error) => {
        // An error here (EPIPE: the program stopped reading) leaves the promise to the failure
        // that follows, which carries the program's own account of what went wrong.
        if (error) return;
        this.writers.delete(reject);
        resolve();
      });
    });
  }

  end(): void {
    if (this.inputEnded || this.failure) return;
    this.inputEnded = true;
    this.endInput();
  }

  async destroy(error: Error): Promise<void> {
    this.fail(error);
    await this.stop();
  }

  /** Hands a chunk to the inner work; `callback` once the chunk may be reused. */
  protected abstract feed(chunk: Buffer, callback: (error?: Error | null) => void): void;
  protected abstract endInput(): void;
  /** Stops the inner work; resolves when it is gone. */
  protected abstract stop(): Promise<void>;

  protected succeed(): void {
    if (this.settled || this.failure) return;
    this.settled = true;
    this.settleDone.resolve();
  }

  /** Writes fail at once; `done` rejects once the inner work is gone (no program outlives it). */
  protected fail(error: Error): void {
    if (this.settled || this.failure) return;
    this.failure = error;
    this.settled = true;
    for (const reject of this.writers) reject(error);
    this.writers.clear();
    const reject = (): void => this.settleDone.reject(error);
    this.stop().then(reject, reject);
  }
}

/** gzip through Node's zlib; concatenated members are decoded one after another. */
class GunzipDecoder extends BaseDecoder {
  readonly pid = undefined;
  private readonly gunzip: Gunzip;

  constructor(options: DecoderOptions) {
    super('gzip');
    // zlib's default finish flush reports a truncated stream ("unexpected end of file").
    const gunzip = createGunzip({ chunkSize: OUTPUT_CHUNK_BYTES });
    this.gunzip = gunzip;
    gunzip.once('error', (error: Error & { code?: string }) => {
      this.fail(decompressFailed('gzip', error.message, { zlibCode: error.code ?? null }, error));
    });
    // zlib ends its output only after a complete stream; anything else is an 'error'.
    readWithPauses(
      gunzip,
      (piece) => options.sink.write(piece),
      () => this.succeed(),
      (error) => this.fail(error),
    );
    bindAbort(this, options.signal, 'gzip decompression');
  }

  // zlib reads the chunk in place on its thread: the write's callback comes once it is consumed.
  protected feed(chunk: Buffer, callback: (error?: Error | null) => void): void {
    this.gunzip.write(chunk, callback);
  }

  protected endInput(): void {
    this.gunzip.end();
  }

  protected stop(): Promise<void> {
    this.gunzip.destroy();
    return Promise.resolve();
  }
}

/** A stream's pieces into `consume`, pausing the stream while a returned promise is pending. */
const readWithPauses = (
  stream: Readable,
  consume: (piece: Buffer) => Promise<void> | undefined,
  onEnd: () => void,
  onError: (error: Error) => void,
): void => {
  const serializer = new Serializer(consume, onEnd, onError);
  stream.on('data', (piece: Buffer) => {
    // Pieces from a stream are fresh buffers: nothing to give back.
    serializer.push(piece, () => {
      if (serializer.idle && stream.isPaused()) stream.resume();
    });
    if (!serializer.idle) stream.pause();
  });
  stream.once('end', () => serializer.end());
};

/**
 * Reads a socket straight into the sink's free space: no buffer allocated and nothing copied per
 * read. Node asks for the next read's target right after each read; when the sink has no room
 * then (or is still busy with the last piece), that read goes into a scratch buffer and is handed
 * over with write(). Reading stops while the sink makes us wait.
 */
class DirectReader {
  private readonly scratch = Buffer.allocUnsafeSlow(SCRATCH_BYTES);
  private intoScratch = true;
  private waiting = false;
  private ended = false;
  private socket: net.Socket | null = null;
  private onEnd: () => void = () => undefined;
  private onError: (error: Error) => void = () => undefined;
  readonly onread: net.OnReadOpts = {
    buffer: () => this.target(),
    callback: (bytes) => this.onRead(bytes),
  };

  constructor(private readonly sink: OutputSink) {}

  /** The socket being read (made before its decoder), and where its end and a failure go. */
  attach(socket: net.Socket, onEnd: () => void, onError: (error: Error) => void): void {
    this.socket = socket;
    this.onEnd = onEnd;
    this.onError = onError;
    socket.once('end', () => {
      this.ended = true;
      if (!this.waiting) this.onEnd();
    });
  }

  private target(): Buffer {
    const space = this.waiting ? null : this.sink.reserve();
    this.intoScratch = space === null || space.length === 0;
    return this.intoScratch ? this.scratch : (space as Buffer);
  }

  private onRead(bytes: number): boolean {
    let result: Promise<void> | undefined;
    try {
      result = this.intoScratch ? this.sink.write(this.scratch.subarray(0, bytes)) : this.sink.commit(bytes);
    } catch (error) {
      this.onError(asError(error));
      return false;
    }
    if (result === undefined) return true;
    // The scratch (or the sink's space) is the sink's until it says so: no reading till then.
    this.waiting = true;
    result.then(
      () => {
        this.waiting = false;
        if (this.ended) this.onEnd();
        else if (this.socket !== null && !this.socket.destroyed) this.socket.resume();
      },
      (error: unknown) => this.onError(asError(error)),
    );
    return false;
  }
}

/**
 * A connected pair of Unix stream sockets: `theirs` becomes a program's stdout, `ours` is read
 * with `onread`. A child's 'pipe' stdout is such a socket too, but node reads it 64 KiB at a
 * time into a fresh buffer each; this one is read as far as it holds into reused slots, about a
 * third of the reads (bench/README.md, "image-write"). The listening socket lives in a private
 * directory only until the connection is made.
 */
const socketPair = async (
  dir: string,
  onread: net.OnReadOpts,
): Promise<{ ours: net.Socket; theirs: net.Socket }> => {
  const home = await mkdtemp(path.join(dir, 'bm-agent-decode-'));
  const address = path.join(home, 'output.sock');
  const server = net.createServer({ pauseOnConnect: true });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(address, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
    const ours = net.connect({ path: address, onread });
    await new Promise<void>((resolve, reject) => {
      ours.once('error', reject);
      ours.once('connect', () => {
        ours.off('error', reject);
        resolve();
      });
    });
    return { ours, theirs: await accepted };
  } finally {
    server.close();
    await rm(home, { recursive: true, force: true });
  }
};

type ToolName = keyof typeof DECOMPRESS_TOOLS;

const zstdFlagProbes = new Map<string, Promise<string[]>>();

/**
 * zstd 1.5.3 and later read and write on helper threads by default (asyncio). Between two
 * sockets that only adds hand-offs between threads: --no-asyncio took about 0.2 s less CPU per
 * GiB and ran about 10 % faster here (bench/README.md, "image-write"). Older programs refuse the
 * flag, so it is given only when `zstd --help` lists it (asked once per program).
 */
const zstdFlags = (resolved: string): Promise<string[]> => {
  let probe = zstdFlagProbes.get(resolved);
  if (probe === undefined) {
    probe = runProcess(resolved, ['--help'], { timeoutMs: 5000 }).then(
      (run) => (/--\[no-\]asyncio/.test(`${run.stdout}${run.stderr}`) ? ['--no-asyncio'] : []),
      () => [],
    );
    zstdFlagProbes.set(resolved, probe);
  }
  return probe;
};

/** xz, zstd or bzip2 as a child process: stdin gets the compressed bytes, stdout the image. */
class ToolDecoder extends BaseDecoder {
  readonly pid: number | undefined;
  private readonly child: ChildProcess;
  private readonly stdin: NodeJS.WritableStream & {
    destroyed: boolean;
    writableEnded: boolean;
    destroy(): void;
  };
  private readonly output: net.Socket | Readable;
  private readonly stderr = new OutputTail();
  private exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  private outputEnded = false;
  private stopping: Promise<void> | null = null;

  /** Starts the program; its output arrives through `pair` when given, else its stdout pipe. */
  constructor(
    format: ToolName,
    private readonly argv: string[],
    resolved: string,
    private readonly killGraceMs: number,
    options: DecoderOptions,
    pair: { ours: net.Socket; theirs: net.Socket; reader: DirectReader } | null,
  ) {
    super(format);
    const { env } = options;
    const child = spawn(resolved, argv.slice(1), {
      argv0: argv[0],
      stdio: ['pipe', pair === null ? 'pipe' : pair.theirs, 'pipe'],
      // Added to the agent's environment, as runProcess does.
      ...(env === undefined ? {} : { env: { ...process.env, ...env } }),
    });
    this.child = child;
    this.pid = child.pid;
    const { stdin, stdout, stderr } = child;
    if (stdin === null || stderr === null)
      throw new AgentError('INTERNAL', `${formatArgv(argv)}: no stdio pipes`);
    this.stdin = stdin;
    stderr.on('data', (chunk: Buffer) => this.stderr.push(chunk));
    // EPIPE when the program stopped reading (bad data): its exit status says why.
    stdin.on('error', () => undefined);
    const ended = (): void => {
      this.outputEnded = true;
      this.maybeSucceed();
    };
    const broken = (error: Error): void => this.fail(error);
    if (pair !== null) {
      // The program has its own copy now; ours would keep the stream from ever ending.
      pair.theirs.destroy();
      this.output = pair.ours;
      pair.ours.on('error', () => undefined);
      pair.reader.attach(pair.ours, ended, broken);
    } else {
      if (stdout === null) throw new AgentError('INTERNAL', `${formatArgv(argv)}: no stdout pipe`);
      this.output = stdout;
      stdout.on('error', () => undefined);
      readWithPauses(stdout, (piece) => options.sink.write(piece), ended, broken);
    }
    child.once('error', (error: Error & { code?: string }) => {
      this.fail(
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
    bindAbort(this, options.signal, `${format} decompression`);
  }

  protected feed(chunk: Buffer, callback: (error?: Error | null) => void): void {
    if (this.stdin.destroyed || this.stdin.writableEnded) {
      // The program is gone; its exit status carries the real error.
      callback(new Error('the program no longer reads its input'));
      return;
    }
    // The pipe write holds the chunk until the callback: only then may the caller reuse it.
    this.stdin.write(chunk, callback);
  }

  protected endInput(): void {
    if (!this.stdin.destroyed) this.stdin.end();
  }

  protected stop(): Promise<void> {
    // The child never outlives the decoder.
    this.stopping ??= terminate(this.child, this.killGraceMs);
    this.stdin.destroy();
    this.output.destroy();
    return this.stopping;
  }

  private runDetails(): Record<string, unknown> {
    return {
      argv: this.argv,
      exitCode: this.exit?.code ?? null,
      signal: this.exit?.signal ?? null,
      stderrTail: this.stderr.text(),
    };
  }

  private maybeSucceed(): void {
    if (this.outputEnded && this.exit?.code === 0 && this.inputEnded) this.succeed();
  }

  private onExit(): void {
    if (this.failure || this.exit === null) return;
    const { code, signal } = this.exit;
    const command = formatArgv(this.argv);
    const said = lastLine(this.stderr.text());
    if (signal !== null) {
      this.fail(
        new AgentError('TOOL_FAILED', `${command} was killed by ${signal}${said ? `: ${said}` : ''}`, {
          details: this.runDetails(),
        }),
      );
    } else if (code !== 0) {
      this.fail(
        decompressFailed(
          this.format,
          said ?? `${command} exited with code ${code ?? 'unknown'}`,
          this.runDetails(),
        ),
      );
    } else if (!this.inputEnded) {
      // Success before the input ended means bytes were left over that nobody decoded.
      this.fail(
        decompressFailed(this.format, `${command} finished before the end of its input`, this.runDetails()),
      );
    } else {
      this.maybeSucceed();
    }
  }
}

/** Raw bytes are their own output. */
class RawDecoder extends BaseDecoder {
  readonly pid = undefined;

  constructor(
    private readonly sink: OutputSink,
    signal: AbortSignal | undefined,
  ) {
    super('raw');
    bindAbort(this, signal, 'copying the image');
  }

  protected feed(chunk: Buffer, callback: (error?: Error | null) => void): void {
    let result: Promise<void> | undefined;
    try {
      result = this.sink.write(chunk);
    } catch (error) {
      this.fail(asError(error));
      return;
    }
    if (result === undefined) callback();
    else
      result.then(
        () => callback(),
        (error: unknown) => this.fail(asError(error)),
      );
  }

  protected endInput(): void {
    this.succeed();
  }

  protected stop(): Promise<void> {
    return Promise.resolve();
  }
}

const bindAbort = (decoder: BaseDecoder, signal: AbortSignal | undefined, what: string): void => {
  if (signal === undefined) return;
  if (signal.aborted) {
    queueMicrotask(() => void decoder.destroy(abortError(signal, what)));
    return;
  }
  const onAbort = (): void => void decoder.destroy(abortError(signal, what));
  signal.addEventListener('abort', onAbort, { once: true });
  const unbind = (): void => signal.removeEventListener('abort', onAbort);
  decoder.done.then(unbind, unbind);
};

/**
 * A decoder that turns `format` into raw image bytes. Throws at once: UNSUPPORTED_FORMAT for the
 * qemu formats (they need qemu-img and a file), TOOL_NOT_FOUND naming the Debian package when
 * the program is missing. `done` fails with DECOMPRESS_FAILED (the tool's stderr tail in details)
 * on corrupt or truncated input, and resolves only after the tool exited 0.
 */
export const openDecoder = async (format: ImageFormat, options: DecoderOptions): Promise<Decoder> => {
  const { signal, env, killGraceMs = DEFAULT_TOOL_KILL_GRACE_MS } = options;
  if (signal?.aborted) throw abortError(signal, `${format} decompression`);
  switch (format) {
    case 'raw':
      return new RawDecoder(options.sink, signal);
    case 'gzip':
      return new GunzipDecoder(options);
    case 'xz':
    case 'zstd':
    case 'bzip2': {
      const tool = DECOMPRESS_TOOLS[format];
      const resolved = requireTool(tool.program, tool.debianPackage, env?.PATH ?? process.env.PATH ?? '');
      const reader = new DirectReader(options.sink);
      let pair: { ours: net.Socket; theirs: net.Socket } | null = null;
      try {
        pair = await socketPair(options.socketDir ?? os.tmpdir(), reader.onread);
      } catch {
        // No socket here (a read-only or missing directory): the pipe works too, only slower.
      }
      if (signal?.aborted) {
        pair?.ours.destroy();
        pair?.theirs.destroy();
        throw abortError(signal, `${format} decompression`);
      }
      return new ToolDecoder(
        format,
        [tool.program, ...tool.args, ...(format === 'zstd' ? await zstdFlags(resolved) : [])],
        resolved,
        killGraceMs,
        options,
        pair === null ? null : { ...pair, reader },
      );
    }
    default:
      throw new AgentError(
        'UNSUPPORTED_FORMAT',
        `${format} images cannot be streamed; they are converted with qemu-img from a staged copy`,
        { details: { format } },
      );
  }
};
