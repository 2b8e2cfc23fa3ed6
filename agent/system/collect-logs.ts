/**
 * IPA's log.collect_system_logs: what an operator needs after a failed clean or deploy, gathered
 * into one gzip'd tar in memory. The agent's own recent log lines, the ramdisk's own logs under
 * `<run>/bm-agent/`, and the output of a few tools and proc files. Nothing missing is a failure:
 * a tool or file that is not there is a line in `errors.txt`, and the archive is still made.
 */
import { constants as fsConstants } from 'node:fs';
import { open, readdir } from 'node:fs/promises';
import { promisify } from 'node:util';
import { gzip as gzipCallback } from 'node:zlib';
import { procPath, runPath, type HardwarePaths } from '../hardware/paths.js';
import { AgentError, errorMessage } from '../util/errors.js';
import type { LogRing } from '../util/logger.js';
import { runProcess as defaultRunProcess, type RunProcess } from '../util/run-process.js';
import { createTar, TAR_BLOCK, type TarEntry } from './tar.js';

const gzip = promisify(gzipCallback);

const MIB = 1024 * 1024;
/**
 * The gzip'd archive's bound. Its base64 (4/3 larger) travels in one command result, which must
 * fit a 16 MiB frame with room for the rest of the record: 11 MiB becomes about 14.7 MiB.
 */
export const DEFAULT_MAX_ARCHIVE_BYTES = 11 * MIB;
/** Each file of `<run>/bm-agent/` contributes at most its last MiB. */
export const RUN_LOG_TAIL_BYTES = MIB;
/** A tool's output or a proc file beyond this keeps only its end. */
export const PART_MAX_BYTES = 4 * MIB;
const MAX_RUN_LOGS = 64;
const TOOL_TIMEOUT_MS = 15_000;
const ERRORS_FILE = 'errors.txt';
const RUN_LOG_DIR = 'bm-agent';

export interface CollectLogsDeps {
  paths: HardwarePaths;
  /** The agent's recent log lines; null when this process keeps none (then errors.txt says so). */
  logRing: LogRing | null;
  runProcess?: RunProcess;
  maxArchiveBytes?: number;
}

export interface CollectedLogs {
  /** The gzip'd tar. */
  archive: Buffer;
  /** The names in the archive, in order. */
  files: string[];
  /** What could not be collected, or was cut; also errors.txt in the archive. */
  errors: string[];
}

interface Part {
  name: string;
  data: Buffer;
}

interface ToolSource {
  file: string;
  /** Tried in order while one fails; busybox tools reject some of the util-linux flags. */
  commands: Array<[string, ...string[]]>;
}

// Flags that Debian 12's util-linux and procps have; the second form suits busybox.
const TOOL_SOURCES: readonly ToolSource[] = [
  { file: 'dmesg.txt', commands: [['dmesg']] },
  { file: 'ip-addr.txt', commands: [['ip', 'addr']] },
  { file: 'ip-route.txt', commands: [['ip', 'route']] },
  {
    file: 'lsblk.txt',
    commands: [
      ['lsblk', '-a', '-O'],
      ['lsblk', '-a'],
    ],
  },
  { file: 'df.txt', commands: [['df', '-a']] },
  { file: 'ps.txt', commands: [['ps', 'aux'], ['ps']] },
];

const PROC_SOURCES: ReadonlyArray<{ file: string; parts: string[] }> = [
  { file: 'mounts.txt', parts: ['mounts'] },
  { file: 'cmdline.txt', parts: ['cmdline'] },
];

const errnoOf = (error: unknown): string | null => {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : null;
};

const describeError = (error: unknown): string =>
  AgentError.is(error) ? `${error.code}: ${error.message}` : (errnoOf(error) ?? errorMessage(error));

/**
 * The end of `data` within `limit` bytes, starting after a newline when one is near the cut so
 * the first line kept is whole.
 */
export const keepTail = (data: Buffer, limit: number): Buffer =>
  data.length <= limit ? data : startAtLine(data.subarray(data.length - Math.max(0, limit)));

/** Drops a cut first line, when its end is near (a log without newlines is kept as it is). */
const startAtLine = (tail: Buffer): Buffer => {
  const newline = tail.subarray(0, 4096).indexOf(0x0a);
  return newline >= 0 ? tail.subarray(newline + 1) : tail;
};

/** The last `limit` bytes of a regular file (never a link), and its whole size. */
const readFileTail = async (file: string, limit: number): Promise<{ data: Buffer; size: number }> => {
  const handle = await open(file, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK);
  try {
    const info = await handle.stat();
    if (!info.isFile()) throw Object.assign(new Error('not a regular file'), { code: 'EINVAL' });
    const start = Math.max(0, info.size - limit);
    const buffer = Buffer.alloc(info.size - start);
    let filled = 0;
    while (filled < buffer.length) {
      const { bytesRead } = await handle.read(buffer, filled, buffer.length - filled, start + filled);
      if (bytesRead === 0) break;
      filled += bytesRead;
    }
    const data = buffer.subarray(0, filled);
    return { data: start > 0 ? startAtLine(data) : data, size: info.size };
  } finally {
    await handle.close();
  }
};

/** proc files report a size of 0, so they are read through to the end with a bound. */
const readProcFile = async (file: string, limit: number): Promise<{ data: Buffer; cut: boolean }> => {
  const handle = await open(file, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
  try {
    const chunks: Buffer[] = [];
    let total = 0;
    let dropped = false;
    while (true) {
      const chunk = Buffer.alloc(64 * 1024);
      const { bytesRead } = await handle.read(chunk, 0, chunk.length, null);
      if (bytesRead === 0) break;
      chunks.push(chunk.subarray(0, bytesRead));
      total += bytesRead;
      // Whole chunks leave the front once the rest still covers the bound: memory stays bounded.
      while (total - (chunks[0]?.length ?? 0) > limit) {
        total -= chunks.shift()?.length ?? 0;
        dropped = true;
      }
    }
    const data = Buffer.concat(chunks);
    return { data: keepTail(data, limit), cut: dropped || data.length > limit };
  } finally {
    await handle.close();
  }
};

/** Archive names come from a directory listing: only plain, short names are taken as they are. */
const safeRunLogName = (name: string): string | null =>
  /^[A-Za-z0-9._+@-]{1,80}$/.test(name) && name !== '.' && name !== '..' ? `run/${name}` : null;

const collectRunLogs = async (paths: HardwarePaths, errors: string[]): Promise<Part[]> => {
  const directory = runPath(paths, RUN_LOG_DIR);
  let entries;
  try {
    entries = await readdir(directory, { withFileTypes: true });
  } catch (error) {
    errors.push(`${directory}: cannot be listed (${describeError(error)})`);
    return [];
  }
  const logs = entries
    .filter((entry) => entry.name.endsWith('.log'))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  if (logs.length > MAX_RUN_LOGS) {
    errors.push(
      `${directory}: ${logs.length} log files; only the first ${MAX_RUN_LOGS} by name are included`,
    );
    logs.length = MAX_RUN_LOGS;
  }
  const parts: Part[] = [];
  for (const entry of logs) {
    const file = `${directory}/${entry.name}`;
    const name = safeRunLogName(entry.name);
    if (name === null) {
      errors.push(`${JSON.stringify(file)}: left out (its name is not a plain file name)`);
      continue;
    }
    if (!entry.isFile()) {
      errors.push(`${file}: left out (not a regular file)`);
      continue;
    }
    try {
      const { data, size } = await readFileTail(file, RUN_LOG_TAIL_BYTES);
      if (size > RUN_LOG_TAIL_BYTES)
        errors.push(`${name}: only the last ${data.length} of ${size} bytes are included`);
      parts.push({ name, data });
    } catch (error) {
      errors.push(`${file}: cannot be read (${describeError(error)})`);
    }
  }
  return parts;
};

const runTool = async (
  source: ToolSource,
  run: RunProcess,
  signal: AbortSignal | undefined,
  errors: string[],
): Promise<Part | null> => {
  const failures: string[] = [];
  for (const [file, ...args] of source.commands) {
    try {
      const result = await run(file, args, { timeoutMs: TOOL_TIMEOUT_MS, ...(signal ? { signal } : {}) });
      // The runner strips the final newline; a text file in the archive keeps it.
      const data = Buffer.from(result.stdout === '' ? '' : `${result.stdout}\n`, 'utf8');
      if (failures.length > 0)
        errors.push(`${source.file}: ${failures.join('; ')}; used \`${[file, ...args].join(' ')}\` instead`);
      if (data.length > PART_MAX_BYTES)
        errors.push(`${source.file}: only the last ${PART_MAX_BYTES} of ${data.length} bytes are included`);
      return { name: source.file, data: keepTail(data, PART_MAX_BYTES) };
    } catch (error) {
      signal?.throwIfAborted();
      failures.push(`\`${[file, ...args].join(' ')}\` failed (${describeError(error)})`);
      // Another form of the same program cannot help when the program is not there.
      if (AgentError.is(error) && error.code === 'TOOL_NOT_FOUND') break;
    }
  }
  errors.push(`${source.file}: ${failures.join('; ')}`);
  return null;
};

const collectProcFiles = async (paths: HardwarePaths, errors: string[]): Promise<Part[]> => {
  const parts: Part[] = [];
  for (const source of PROC_SOURCES) {
    const file = procPath(paths, ...source.parts);
    try {
      const { data, cut } = await readProcFile(file, PART_MAX_BYTES);
      // The command line is NUL-separated when it comes from a process; a file reads better with blanks.
      const text =
        source.file === 'cmdline.txt' ? Buffer.from(data.toString('utf8').replace(/\0/g, ' ')) : data;
      if (cut) errors.push(`${source.file}: only the last ${data.length} bytes of ${file} are included`);
      parts.push({ name: source.file, data: text });
    } catch (error) {
      errors.push(`${source.file}: ${file} cannot be read (${describeError(error)})`);
    }
  }
  return parts;
};

/**
 * The largest level L such that cutting every part to at most L bytes (keeping its end) fits
 * `budget`: the largest parts are cut first and the small ones are left whole.
 */
export const fitLevel = (sizes: readonly number[], budget: number): number => {
  const total = sizes.reduce((sum, size) => sum + size, 0);
  if (total <= budget) return Number.POSITIVE_INFINITY;
  const sorted = [...sizes].sort((a, b) => a - b);
  let below = 0;
  for (let index = 0; index < sorted.length; index += 1) {
    const remaining = sorted.length - index;
    const level = Math.floor((budget - below) / remaining);
    if (level <= (sorted[index] ?? 0)) return Math.max(0, level);
    below += sorted[index] ?? 0;
  }
  return Math.max(0, budget);
};

const archiveOf = async (parts: readonly Part[], errors: readonly string[], mtime: Date) => {
  const entries: TarEntry[] = parts.map((part) => ({ name: part.name, data: part.data, mtime }));
  if (errors.length > 0)
    entries.push({ name: ERRORS_FILE, data: Buffer.from(`${errors.join('\n')}\n`), mtime });
  return { archive: await gzip(createTar(entries)), files: entries.map((entry) => entry.name) };
};

/**
 * Everything gathered, gzip'd; when that is over the bound, the largest parts keep only their
 * ends until it fits (each cut said in errors.txt). The bound is on the compressed size, so the
 * level is found from the ratio just seen; a few rounds at most.
 */
const fitArchive = async (
  parts: readonly Part[],
  errors: readonly string[],
  maxBytes: number,
): Promise<CollectedLogs> => {
  const mtime = new Date();
  let built = await archiveOf(parts, errors, mtime);
  if (built.archive.length <= maxBytes) return { ...built, errors: [...errors] };
  const sizes = parts.map((part) => part.data.length);
  let budget = sizes.reduce((sum, size) => sum + size, 0);
  for (let round = 0; round < 8; round += 1) {
    const overhead = (parts.length + 3) * TAR_BLOCK;
    budget = Math.max(0, Math.floor(budget * (maxBytes / built.archive.length) * 0.9) - overhead);
    if (round === 7) budget = 0;
    const level = fitLevel(sizes, budget);
    const notes = [...errors];
    const fitted = parts.map((part) => {
      if (part.data.length <= level) return part;
      const data = keepTail(part.data, level);
      notes.push(
        `${part.name}: cut to its last ${data.length} of ${part.data.length} bytes to keep the archive under ${maxBytes} bytes`,
      );
      return { name: part.name, data };
    });
    built = await archiveOf(fitted, notes, mtime);
    if (built.archive.length <= maxBytes) return { ...built, errors: notes };
  }
  throw new AgentError('INTERNAL', `the system-logs archive does not fit in ${maxBytes} bytes even empty`, {
    details: { max_bytes: maxBytes, bytes: built.archive.length },
  });
};

export const collectSystemLogs = async (
  deps: CollectLogsDeps,
  options: { signal?: AbortSignal } = {},
): Promise<CollectedLogs> => {
  const { signal } = options;
  const maxBytes = deps.maxArchiveBytes ?? DEFAULT_MAX_ARCHIVE_BYTES;
  if (!Number.isInteger(maxBytes) || maxBytes < 4096)
    throw new AgentError('INTERNAL', `maxArchiveBytes must be an integer of at least 4096, got ${maxBytes}`);
  const run = deps.runProcess ?? defaultRunProcess;
  const errors: string[] = [];
  const agentLog: Part[] = [];
  if (deps.logRing === null) errors.push('bm-agent.log: this agent process keeps no log lines in memory');
  else {
    const { dropped } = deps.logRing.stats();
    agentLog.push({ name: 'bm-agent.log', data: Buffer.from(deps.logRing.text(), 'utf8') });
    if (dropped > 0) errors.push(`bm-agent.log: the ${dropped} oldest lines were no longer kept`);
  }
  // Each source notes its own failures; they run side by side, the errors kept in source order.
  const toolErrors = TOOL_SOURCES.map((): string[] => []);
  const runErrors: string[] = [];
  const procErrors: string[] = [];
  const [runLogs, tools, procFiles] = await Promise.all([
    collectRunLogs(deps.paths, runErrors),
    Promise.all(TOOL_SOURCES.map((source, index) => runTool(source, run, signal, toolErrors[index] ?? []))),
    collectProcFiles(deps.paths, procErrors),
  ]);
  signal?.throwIfAborted();
  errors.push(...runErrors, ...toolErrors.flat(), ...procErrors);
  const parts = [
    ...agentLog,
    ...runLogs,
    ...tools.filter((part): part is Part => part !== null),
    ...procFiles,
  ];
  return fitArchive(parts, errors, maxBytes);
};
