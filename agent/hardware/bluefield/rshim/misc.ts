/**
 * The rshim `misc` file: key lines printed as `%-16s<value>` (often with a legend in
 * parentheses), and at DISPLAY_LEVEL 2 the DPU's boot log after a `Log Messages` banner. The
 * daemon builds the whole text on the first read of an open handle and later reads only page
 * through that snapshot, so every poll opens the file afresh. Writes are one command per write()
 * at offset 0, as `echo "DISPLAY_LEVEL 2" > misc` does.
 */
import { constants as fsConstants } from 'node:fs';
import { open } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { AgentError } from '../../../util/errors.js';
import { abortError } from '../../../util/tool-process.js';
import type { RshimLogLevel, RshimLogLine } from '../contracts.js';

export interface RshimMisc {
  /** Every key line as printed, value text untrimmed of its legend: `BOOT_TIMEOUT` -> `300 (seconds)`. */
  values: Record<string, string>;
  displayLevel: number | null;
  /** BF3 only: `DPU mode`, `NIC mode` ... */
  bfMode: string | null;
  bootMode: number | null;
  bootTimeoutS: number | null;
  dropMode: boolean | null;
  devName: string | null;
  devInfo: string | null;
  /** BF3 only. */
  secureNicMode: boolean | null;
  /** BF3 only. */
  upTimeS: number | null;
  /** The log block, oldest first; null when the text has none (DISPLAY_LEVEL below 2). */
  log: RshimLogLine[] | null;
}

const KEY_LINE = /^([A-Z][A-Z0-9_]*)\s+(\S.*?)\s*$/;
const LOG_BANNER = /^\s*Log Messages\s*$/;
const DASHES = /^\s*-{5,}\s*$/;
const LEVEL_LINE = /^\s*(INFO|WARN|ERR|ASSERT)\[([^\]]*)\]:\s?(.*)$/;
const CRASH_LINE = /^\s*(PANIC|Exception)\(([^)]*)\):?\s?(.*)$/;

/** One log line. Register dumps after a PANIC or Exception, and anything unknown, are OTHER. */
export const parseLogLine = (raw: string): RshimLogLine => {
  const line = raw.replace(/\s+$/, '');
  const level = LEVEL_LINE.exec(line);
  if (level) {
    return {
      level: level[1] as RshimLogLevel,
      module: level[2] === '' ? null : (level[2] ?? null),
      text: level[3] ?? '',
      raw: line,
    };
  }
  const crash = CRASH_LINE.exec(line);
  if (crash) {
    return {
      level: crash[1] === 'PANIC' ? 'PANIC' : 'EXCEPTION',
      module: crash[2] === '' ? null : (crash[2] ?? null),
      text: crash[3] ?? '',
      raw: line,
    };
  }
  return { level: 'OTHER', module: null, text: line.trim(), raw: line };
};

const isLogShaped = (line: string): boolean => LEVEL_LINE.test(line) || CRASH_LINE.test(line);

/** The leading integer of a value (`300 (seconds)`, `179752(s)`), or null. */
const leadingInt = (value: string | undefined): number | null => {
  if (value === undefined) return null;
  const match = /^(\d+)/.exec(value.trim());
  return match ? Number(match[1]) : null;
};

const flag = (value: string | undefined): boolean | null => {
  const number = leadingInt(value);
  return number === null ? null : number !== 0;
};

/**
 * Parses misc text defensively: unknown keys are kept in `values`, lines that fit nowhere are
 * skipped. A last line without its newline is dropped: a file rewritten while it was read (a
 * simulator, a copy) could end mid-line, and the real daemon always ends lines.
 */
export const parseMisc = (text: string): RshimMisc => {
  const lines = text.split('\n');
  // Either the empty string after the final newline, or an unterminated last line.
  lines.pop();
  const values: Record<string, string> = {};
  let log: RshimLogLine[] | null = null;
  let inLog = false;
  for (const rawLine of lines) {
    const line = rawLine.replace(/\r$/, '');
    if (inLog) {
      if (line.trim() === '' || DASHES.test(line)) continue;
      log?.push(parseLogLine(line));
      continue;
    }
    if (LOG_BANNER.test(line)) {
      inLog = true;
      log ??= [];
      continue;
    }
    if (line.trim() === '' || DASHES.test(line)) continue;
    // Some renderings drop the banner; a log-shaped line starts the log all the same.
    if (isLogShaped(line)) {
      inLog = true;
      log ??= [];
      log.push(parseLogLine(line));
      continue;
    }
    const key = KEY_LINE.exec(line.trim());
    if (key?.[1] !== undefined && key[2] !== undefined && !(key[1] in values)) values[key[1]] = key[2];
  }
  const bfMode = values.BF_MODE ?? null;
  return {
    values,
    displayLevel: leadingInt(values.DISPLAY_LEVEL),
    bfMode,
    bootMode: leadingInt(values.BOOT_MODE),
    bootTimeoutS: leadingInt(values.BOOT_TIMEOUT),
    dropMode: flag(values.DROP_MODE),
    devName: values.DEV_NAME ?? null,
    devInfo: values.DEV_INFO ?? null,
    secureNicMode: flag(values.SECURE_NIC_MODE),
    upTimeS: leadingInt(values.UP_TIME),
    log,
  };
};

const GONE_CODES = new Set(['ENOENT', 'ENODEV', 'ENXIO', 'ENOTCONN', 'EIO', 'ENOTDIR']);

const miscError = (file: string, action: string, error: unknown): AgentError => {
  const code = (error as NodeJS.ErrnoException).code ?? null;
  const message = `${action} ${file} failed: ${(error as Error).message}`;
  // The daemon gone (ENOTCONN from a dead FUSE server), the device detached, or no rshim at all.
  if (code !== null && GONE_CODES.has(code)) {
    return new AgentError('RSHIM_NOT_FOUND', message, { details: { misc: file, errno: code }, cause: error });
  }
  return new AgentError('INTERNAL', message, { details: { misc: file, errno: code }, cause: error });
};

/** The whole misc text from a fresh open. */
export const readMiscText = async (file: string): Promise<string> => {
  let handle;
  try {
    handle = await open(file, 'r');
  } catch (error) {
    throw miscError(file, 'opening', error);
  }
  try {
    const parts: Buffer[] = [];
    const buffer = Buffer.allocUnsafe(64 * 1024);
    while (true) {
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, null);
      if (bytesRead === 0) break;
      parts.push(Buffer.from(buffer.subarray(0, bytesRead)));
      // The daemon's text is a few KiB; a runaway file must not fill the heap.
      if (parts.length > 64) break;
    }
    return Buffer.concat(parts).toString('utf8');
  } catch (error) {
    throw miscError(file, 'reading', error);
  } finally {
    await handle.close().catch(() => undefined);
  }
};

export const readMisc = async (file: string): Promise<RshimMisc> => parseMisc(await readMiscText(file));

/**
 * One command in one write() at offset 0: a fresh handle's position, through plain write(2) since
 * a device opened non-seekable refuses pwrite. O_TRUNC is what the shell's `>` adds; the kernel
 * ignores it on the device, and on a plain-file stand-in it leaves exactly the command for its
 * reader. No O_CREAT: a missing misc must not become a new file under the rshim directory.
 */
export const writeMisc = async (file: string, key: string, value: string | number): Promise<void> => {
  if (!/^[A-Z][A-Z0-9_]*$/.test(key) || /[\n\r]/.test(String(value))) {
    throw new AgentError('INTERNAL', `not a misc command: ${JSON.stringify(`${key} ${value}`)}`, {
      details: { key },
    });
  }
  let handle;
  try {
    handle = await open(file, fsConstants.O_WRONLY | fsConstants.O_TRUNC);
  } catch (error) {
    throw miscError(file, 'opening', error);
  }
  try {
    const command = Buffer.from(`${key} ${value}\n`);
    const { bytesWritten } = await handle.write(command, 0, command.length, null);
    if (bytesWritten !== command.length) {
      throw new AgentError(
        'INTERNAL',
        `writing ${key} to ${file} took ${bytesWritten} of ${command.length} bytes`,
        {
          details: { misc: file, key },
        },
      );
    }
  } catch (error) {
    if (AgentError.is(error)) throw error;
    throw miscError(file, `writing ${key} to`, error);
  } finally {
    await handle.close().catch(() => undefined);
  }
};

export interface SetMiscOptions {
  signal?: AbortSignal;
  /** How many times the command is written before giving up. */
  writes?: number;
  /** How long each write is given to show in a re-read. */
  settleMs?: number;
  /** Between re-reads. */
  pollMs?: number;
}

export interface SetMiscResult {
  /** True once a re-read showed the value. */
  applied: boolean;
  misc: RshimMisc;
}

const shows = (misc: RshimMisc, key: string, value: string): boolean => {
  // A stand-in file read back before its daemon rewrote it holds just the command: the daemon
  // always prints several keys, so one key alone is not its answer.
  if (Object.keys(misc.values).length < 2) return false;
  const current = misc.values[key];
  if (current === undefined) return false;
  const first = current.trim().split(/\s+/)[0] ?? '';
  return first === value || (/^\d+$/.test(value) && leadingInt(current) === Number(value));
};

/**
 * Writes `KEY value` and re-reads until the value shows. The daemon applies a write at once, but
 * a stand-in that rewrites the file (a simulator) may take a moment or replace the file under the
 * write, so the write is repeated a few times. Whether it took is data: the caller decides.
 */
export const setMisc = async (
  file: string,
  key: string,
  value: string | number,
  options: SetMiscOptions = {},
): Promise<SetMiscResult> => {
  const { signal, writes = 3, settleMs = 1000, pollMs = 50 } = options;
  const wanted = String(value);
  let misc = await readMisc(file);
  if (shows(misc, key, wanted)) return { applied: true, misc };
  for (let attempt = 0; attempt < writes; attempt += 1) {
    if (signal?.aborted) throw abortError(signal, `setting ${key} in ${file}`);
    await writeMisc(file, key, wanted);
    const until = Date.now() + settleMs;
    while (true) {
      misc = await readMisc(file);
      if (shows(misc, key, wanted)) return { applied: true, misc };
      if (Date.now() >= until) break;
      try {
        await sleep(pollMs, undefined, signal === undefined ? undefined : { signal });
      } catch {
        throw abortError(signal as AbortSignal, `setting ${key} in ${file}`);
      }
    }
  }
  return { applied: false, misc };
};
