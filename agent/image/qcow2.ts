/**
 * Images only qemu-img can turn into a disk (qcow2, vmdk, vhdx, vdi, qed). They cannot be
 * streamed: their clusters may come in any order. So the download is staged in a tmpfs first
 * (only when memory allows), inspected, checked against the device and converted with IPA's flags
 * (`qemu-img convert -O host_device -t directsync -S 0 -W`, ipa.md section 7.1).
 */
import { spawn } from 'node:child_process';
import { mkdtemp, open, readFile, rm, stat, statfs } from 'node:fs/promises';
import path from 'node:path';
import { Type } from '@sinclair/typebox';
import type { ProgressUpdate } from '../commands/definition.js';
import { procPath, sysPath, type HardwarePaths } from '../hardware/paths.js';
import { validate } from '../protocol/validate.js';
import { AgentError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { runProcess } from '../util/run-process.js';
import type { ImageFormat } from './contracts.js';
import { QEMU_FORMATS } from './decompress.js';
import {
  abortError,
  DEFAULT_TOOL_KILL_GRACE_MS,
  formatArgv,
  lastLine,
  OutputTail,
  requireTool,
  terminate,
} from '../util/tool-process.js';

const QEMU_IMG = 'qemu-img';
const QEMU_PACKAGE = 'qemu-utils';
const MiB = 1024 * 1024;
/** Kept free for the agent, qemu-img and the kernel while the image sits in RAM. */
export const DEFAULT_MEMORY_MARGIN_BYTES = 512 * MiB;
// IPA retries a convert that ran out of memory or threads up to 3 times (ironic-lib convert_image).
const CONVERT_ATTEMPTS = 3;
const RETRYABLE = /Resource temporarily unavailable|Cannot allocate memory/;
const PROGRESS_INTERVAL_MS = 500;
const TMPFS_MAGIC = 0x01021994;
const RAMFS_MAGIC = 0x858458f6;

// ---- inspection ----

const QemuImgInfo = Type.Object({
  filename: Type.String(),
  format: Type.String(),
  'virtual-size': Type.Integer({ minimum: 0 }),
  'actual-size': Type.Optional(Type.Integer({ minimum: 0 })),
  'backing-filename': Type.Optional(Type.String()),
  'format-specific': Type.Optional(
    Type.Object({
      type: Type.String(),
      data: Type.Optional(
        Type.Object({
          'data-file': Type.Optional(Type.String()),
          extents: Type.Optional(Type.Array(Type.Object({ filename: Type.String() }))),
        }),
      ),
    }),
  ),
});

export interface QemuImageInfo {
  format: string;
  virtualBytes: number;
  /** Space the file takes on its filesystem, when qemu-img says. */
  fileBytes: number | null;
}

export interface InspectOptions {
  /** The format detected by magic; passed as -f so qemu-img never guesses. */
  format: ImageFormat;
  signal?: AbortSignal;
  env?: Record<string, string>;
}

const unsupported = (message: string, details: Record<string, unknown>): AgentError =>
  new AgentError('UNSUPPORTED_FORMAT', message, { details });

/**
 * `qemu-img info --output=json -f FORMAT FILE`, validated. Refuses images that refer to other
 * files (a backing file, a qcow2 external data file, vmdk extents elsewhere): the agent would
 * read whatever they point to on this machine (CVE-2024-44082's class of problem).
 */
export const inspectImage = async (file: string, options: InspectOptions): Promise<QemuImageInfo> => {
  const { format, signal, env } = options;
  if (!QEMU_FORMATS.has(format)) {
    throw unsupported(`${format} is not a format qemu-img converts here`, { format });
  }
  requireTool(QEMU_IMG, QEMU_PACKAGE, env?.PATH ?? process.env.PATH ?? '');
  const run = await runProcess(QEMU_IMG, ['info', '--output=json', '-f', format, file], {
    timeoutMs: 120_000,
    ...(signal === undefined ? {} : { signal }),
    ...(env === undefined ? {} : { env }),
  });
  let parsed: unknown;
  try {
    parsed = JSON.parse(run.stdout);
  } catch (error) {
    throw new AgentError('TOOL_FAILED', `qemu-img info printed something that is not JSON for ${file}`, {
      details: { argv: run.argv, stdoutTail: run.stdout.slice(0, 500) },
      cause: error,
    });
  }
  const checked = validate(QemuImgInfo, parsed, 'qemu-img info');
  if (!checked.ok) {
    throw new AgentError(
      'TOOL_FAILED',
      `qemu-img info output has an unexpected ${checked.violation.field}: expected ${checked.violation.expected}`,
      { details: { argv: run.argv, ...checked.violation } },
    );
  }
  const info = checked.value;
  if (info.format !== format) {
    throw unsupported(`qemu-img reads ${file} as ${info.format}, not ${format}`, {
      format,
      qemuFormat: info.format,
    });
  }
  const backing = info['backing-filename'];
  if (backing !== undefined) {
    throw unsupported(
      `the ${format} image has a backing file (${backing}); only self-contained images are written`,
      {
        format,
        backingFile: backing,
      },
    );
  }
  const data = info['format-specific']?.data;
  if (data?.['data-file'] !== undefined) {
    throw unsupported(`the ${format} image keeps its data in another file (${data['data-file']})`, {
      format,
      dataFile: data['data-file'],
    });
  }
  const foreign = data?.extents?.find((extent) => extent.filename !== info.filename);
  if (foreign !== undefined) {
    throw unsupported(`the ${format} image has an extent in another file (${foreign.filename})`, {
      format,
      extent: foreign.filename,
    });
  }
  return { format: info.format, virtualBytes: info['virtual-size'], fileBytes: info['actual-size'] ?? null };
};

// ---- staging in memory ----

export interface MemoryCheckOptions {
  paths: HardwarePaths;
  /** Where the image will be staged: a tmpfs in the ramdisk. */
  stagingDir: string;
  marginBytes?: number;
}

export interface StagingBudget {
  /** How many bytes may be staged. */
  budgetBytes: number;
  memAvailableBytes: number;
  marginBytes: number;
  dirFreeBytes: number;
  /** The staging directory is tmpfs or ramfs, so staged bytes cost memory. */
  ramBacked: boolean;
}

const readMemAvailable = async (paths: HardwarePaths): Promise<number> => {
  const text = await readFile(procPath(paths, 'meminfo'), 'utf8');
  // MemAvailable exists since Linux 3.14; MemFree is the pessimistic stand-in before that.
  const match = /^MemAvailable:\s+(\d+) kB$/m.exec(text) ?? /^MemFree:\s+(\d+) kB$/m.exec(text);
  if (!match?.[1]) throw new Error('neither MemAvailable nor MemFree in meminfo');
  return Number(match[1]) * 1024;
};

const mib = (bytes: number): string => `${(bytes / MiB).toFixed(0)} MiB`;

/**
 * How much may be staged in `stagingDir`: for a tmpfs, MemAvailable minus the margin (and the
 * tmpfs's own free space); for a disk-backed directory, its free space. Throws
 * INSUFFICIENT_MEMORY when `imageBytes` is known and does not fit; when it is unknown (no
 * Content-Length) the budget is returned for stageImage to enforce as the bytes arrive.
 */
export const checkMemoryFor = async (
  imageBytes: number | null,
  options: MemoryCheckOptions,
): Promise<StagingBudget> => {
  const marginBytes = options.marginBytes ?? DEFAULT_MEMORY_MARGIN_BYTES;
  let memAvailableBytes: number;
  let dirFreeBytes: number;
  let ramBacked: boolean;
  try {
    memAvailableBytes = await readMemAvailable(options.paths);
    const fsInfo = await statfs(options.stagingDir);
    dirFreeBytes = fsInfo.bavail * fsInfo.bsize;
    ramBacked = fsInfo.type === TMPFS_MAGIC || fsInfo.type === RAMFS_MAGIC;
  } catch (error) {
    throw new AgentError(
      'INSUFFICIENT_MEMORY',
      `the memory available for staging the image is unknown: ${String(error)}`,
      {
        details: { stagingDir: options.stagingDir },
        cause: error,
      },
    );
  }
  const memoryBudget = Math.max(0, memAvailableBytes - marginBytes);
  const budgetBytes = ramBacked ? Math.min(memoryBudget, dirFreeBytes) : dirFreeBytes;
  const budget = { budgetBytes, memAvailableBytes, marginBytes, dirFreeBytes, ramBacked };
  if (imageBytes !== null && imageBytes > budgetBytes)
    throw notEnoughMemory(imageBytes, options.stagingDir, budget);
  return budget;
};

const notEnoughMemory = (neededBytes: number, stagingDir: string, budget: StagingBudget): AgentError => {
  const where = budget.ramBacked
    ? `MemAvailable ${mib(budget.memAvailableBytes)} minus a ${mib(budget.marginBytes)} safety margin` +
      (budget.dirFreeBytes < budget.memAvailableBytes - budget.marginBytes
        ? `, and ${stagingDir} has ${mib(budget.dirFreeBytes)} free`
        : '')
    : `${stagingDir} has ${mib(budget.dirFreeBytes)} free`;
  return new AgentError(
    'INSUFFICIENT_MEMORY',
    `the image needs ${mib(neededBytes)} in ${stagingDir} before qemu-img can convert it, but only ` +
      `${mib(budget.budgetBytes)} is available (${where}); use a raw or compressed raw image, which ` +
      'streams to the disk, or a machine with more memory',
    { details: { neededBytes, stagingDir, ...budget } },
  );
};

export interface StagedImage {
  file: string;
  bytes: number;
  /** Removes the file and its directory; safe to call more than once. */
  remove(): Promise<void>;
}

/**
 * Writes `chunks` to a new file in a private directory under `dir`, failing with
 * INSUFFICIENT_MEMORY as soon as the budget is passed; the file is removed on any failure.
 */
export const stageImage = async (options: {
  chunks: AsyncIterable<Buffer>;
  dir: string;
  budget: StagingBudget;
  signal?: AbortSignal;
}): Promise<StagedImage> => {
  const { chunks, dir, budget, signal } = options;
  const privateDir = await mkdtemp(path.join(dir, 'bma-image-'));
  const file = path.join(privateDir, 'image');
  const remove = (): Promise<void> => rm(privateDir, { recursive: true, force: true });
  let bytes = 0;
  try {
    const handle = await open(file, 'wx', 0o600);
    try {
      for await (const chunk of chunks) {
        if (signal?.aborted) throw abortError(signal, 'staging the image');
        bytes += chunk.length;
        if (bytes > budget.budgetBytes) throw notEnoughMemory(bytes, dir, budget);
        for (let done = 0; done < chunk.length;) {
          done += (await handle.write(chunk, done, chunk.length - done)).bytesWritten;
        }
      }
    } finally {
      await handle.close();
    }
  } catch (error) {
    await remove();
    throw error;
  }
  return { file, bytes, remove };
};

// ---- conversion ----

export interface ConvertOptions {
  /** The staged image file. */
  source: string;
  format: ImageFormat;
  /** A block device. */
  device: string;
  /** Its size; read from sysfs when absent. */
  deviceBytes?: number;
  signal: AbortSignal;
  logger: Logger;
  progress?: (update: ProgressUpdate) => void;
  /** For the device size lookup; the real /sys when absent. */
  paths?: HardwarePaths;
  env?: Record<string, string>;
  killGraceMs?: number;
}

export interface ConvertResult {
  /** The image's virtual size: qemu-img writes all of it (-S 0 writes zeros too). */
  bytesWritten: number;
  seconds: number;
}

/** A block device's size from sysfs (`/sys/dev/block/MAJ:MIN/size`, in 512-byte sectors). */
const blockDeviceBytes = async (device: string, paths: HardwarePaths | undefined): Promise<number> => {
  const info = await stat(device, { bigint: true });
  if (!info.isBlockDevice()) {
    throw new AgentError(
      'INVALID_PARAMS',
      `${device} is not a block device; qemu-img writes only to block devices`,
      {
        details: { device },
      },
    );
  }
  const rdev = info.rdev;
  // glibc's gnu_dev_major/gnu_dev_minor encoding.
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  const sectors = await readFile(
    sysPath(
      paths ?? { sys: '/sys', dev: '/dev', proc: '/proc' },
      'dev',
      'block',
      `${major}:${minor}`,
      'size',
    ),
    'utf8',
  );
  return Number(sectors.trim()) * 512;
};

/**
 * Converts a staged image onto `device`: inspect, refuse (before writing) an image whose virtual
 * size exceeds the device, then `qemu-img convert -p -f FMT -O host_device -t directsync -S 0 -W
 * SOURCE DEVICE`, reporting progress from its `-p` output. The source file is the caller's.
 */
export const convertToDevice = async (options: ConvertOptions): Promise<ConvertResult> => {
  const { source, format, device, signal, logger, progress } = options;
  const started = performance.now();
  const info = await inspectImage(source, { format, signal, ...(options.env ? { env: options.env } : {}) });
  const deviceBytes = options.deviceBytes ?? (await blockDeviceBytes(device, options.paths));
  if (info.virtualBytes > deviceBytes) {
    throw new AgentError(
      'DEVICE_TOO_SMALL',
      `the ${format} image's virtual size is ${info.virtualBytes} bytes and ${device} holds only ${deviceBytes}: choose a larger disk`,
      { details: { virtualBytes: info.virtualBytes, deviceBytes, device, format } },
    );
  }
  const resolved = requireTool(QEMU_IMG, QEMU_PACKAGE, options.env?.PATH ?? process.env.PATH ?? '');
  const argv = [
    QEMU_IMG,
    'convert',
    '-p',
    '-f',
    format,
    '-O',
    'host_device',
    '-t',
    'directsync',
    '-S',
    '0',
    '-W',
    source,
    device,
  ];
  for (let attempt = 1; ; attempt += 1) {
    const outcome = await runConvert(resolved, argv, info.virtualBytes, options);
    if (outcome.ok) break;
    if (attempt < CONVERT_ATTEMPTS && RETRYABLE.test(outcome.error.details.stderrTail as string)) {
      logger.warn(
        { attempt, err: outcome.error },
        'qemu-img convert ran short of memory or threads; retrying',
      );
      continue;
    }
    throw outcome.error;
  }
  progress?.({
    phase: 'convert',
    done: info.virtualBytes,
    total: info.virtualBytes,
    unit: 'bytes',
    message: format,
  });
  const seconds = (performance.now() - started) / 1000;
  logger.info(
    { device, format, virtualBytes: info.virtualBytes, seconds },
    'image converted onto the device',
  );
  return { bytesWritten: info.virtualBytes, seconds };
};

type ConvertOutcome = { ok: true } | { ok: false; error: AgentError };

/** One qemu-img convert run, streamed so its progress can be reported and an abort can stop it. */
const runConvert = (
  resolved: string,
  argv: string[],
  totalBytes: number,
  options: ConvertOptions,
): Promise<ConvertOutcome> => {
  const { signal, progress, killGraceMs = DEFAULT_TOOL_KILL_GRACE_MS } = options;
  if (signal.aborted) return Promise.reject(abortError(signal, 'qemu-img convert'));
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(resolved, argv.slice(1), {
      argv0: argv[0],
      stdio: ['ignore', 'pipe', 'pipe'],
      // As IPA does: fewer malloc arenas keep qemu-img's footprint small beside a staged image.
      env: { ...process.env, ...options.env, MALLOC_ARENA_MAX: '3' },
    });
    const stderr = new OutputTail();
    child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
    let pending = '';
    let lastReport = 0;
    let lastDone = 0;
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (text: string) => {
      // Progress lines are "    (12.34/100%)\r"; keep only the last complete one.
      pending = (pending + text).slice(-256);
      const matches = [...pending.matchAll(/\((\d+(?:\.\d+)?)\/100%\)/g)];
      const percent = matches.at(-1)?.[1];
      if (percent === undefined || progress === undefined) return;
      const now = performance.now();
      if (now - lastReport < PROGRESS_INTERVAL_MS) return;
      const done = Math.min(totalBytes, Math.round((Number(percent) / 100) * totalBytes));
      const rate = lastReport === 0 ? null : Math.round(((done - lastDone) * 1000) / (now - lastReport));
      lastReport = now;
      lastDone = done;
      progress({ phase: 'convert', done, total: totalBytes, unit: 'bytes', rate, message: null });
    });
    let stopping: Promise<void> | null = null;
    const onAbort = (): void => {
      stopping ??= terminate(child, killGraceMs);
    };
    signal.addEventListener('abort', onAbort, { once: true });
    child.once('error', (error) => {
      signal.removeEventListener('abort', onAbort);
      reject(
        new AgentError('TOOL_FAILED', `${formatArgv(argv)} could not be started: ${error.message}`, {
          details: { argv, exitCode: null, signal: null, stderrTail: stderr.text() },
          cause: error,
        }),
      );
    });
    child.once('close', (code, exitSignal) => {
      signal.removeEventListener('abort', onAbort);
      if (signal.aborted) {
        reject(abortError(signal, 'qemu-img convert'));
        return;
      }
      if (code === 0) {
        resolve({ ok: true });
        return;
      }
      const tail = stderr.text();
      const what = exitSignal ? `was killed by ${exitSignal}` : `exited with code ${code ?? 'unknown'}`;
      const said = lastLine(tail);
      resolve({
        ok: false,
        error: new AgentError('TOOL_FAILED', `${formatArgv(argv)} ${what}${said ? `: ${said}` : ''}`, {
          details: {
            argv,
            exitCode: code,
            signal: exitSignal,
            durationMs: Math.round(performance.now() - started),
            stderrTail: tail,
          },
        }),
      });
    });
  });
};

export interface WriteQemuImageOptions extends Omit<ConvertOptions, 'source'> {
  chunks: AsyncIterable<Buffer>;
  /** Content-Length when known: checked before the first byte is staged. */
  totalBytes: number | null;
  stagingDir: string;
  paths: HardwarePaths;
  marginBytes?: number;
}

/**
 * The whole path for a qemu format: memory check, staging, inspection, conversion. The staged
 * copy is removed whatever happens.
 */
export const writeQemuImage = async (options: WriteQemuImageOptions): Promise<ConvertResult> => {
  const { chunks, totalBytes, stagingDir, paths, marginBytes, ...convert } = options;
  const budget = await checkMemoryFor(totalBytes, {
    paths,
    stagingDir,
    ...(marginBytes === undefined ? {} : { marginBytes }),
  });
  const staged = await stageImage({ chunks, dir: stagingDir, budget, signal: convert.signal });
  try {
    return await convertToDevice({ ...convert, paths, source: staged.file });
  } finally {
    await staged.remove();
  }
};
