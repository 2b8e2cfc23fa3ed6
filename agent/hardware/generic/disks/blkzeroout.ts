/**
 * Zeroing a whole disk with `blkdiscard --zeroout` (util-linux): BLKZEROOUT lets the kernel use
 * the device's own write-zeroes (or write zero pages itself), far faster than writes from here.
 * With `--step` and `--verbose` it prints, at most once a second, the bytes zeroed since the
 * last line: that is the progress. Aborting the signal stops it with SIGTERM, then SIGKILL.
 */
import { spawn } from 'node:child_process';
import { AgentError } from '../../../util/errors.js';
import { findOnPath } from '../../../util/run-process.js';
import {
  abortError,
  DEFAULT_TOOL_KILL_GRACE_MS,
  formatArgv,
  lastLine,
  OutputTail,
  terminate,
} from '../../../util/tool-process.js';

export const DEFAULT_STEP_BYTES = 64 * 1024 * 1024;

export interface BlkzerooutOptions {
  /** Where blkdiscard is looked up; the agent's PATH when absent. */
  toolPath?: string;
  /** Bytes per BLKZEROOUT call; a cancel takes effect between two calls. */
  stepBytes?: number;
  signal?: AbortSignal;
  killGraceMs?: number;
  /** Called with the bytes zeroed so far, contiguous from byte 0. */
  onProgress?: (bytes: number) => void;
}

export interface BlkzerooutRun {
  /** Bytes blkdiscard reported zeroed, contiguous from byte 0. */
  bytes: number;
  durationMs: number;
}

/** "/dev/loop0: Zero-filled 209715200 bytes from the offset 0" -> its byte count and offset. */
export const parseZeroFilledLine = (line: string): { bytes: number; offset: number } | null => {
  const match = /: Zero-filled (\d+) bytes from the offset (\d+)\s*$/.exec(line);
  if (!match?.[1] || !match[2]) return null;
  const bytes = Number(match[1]);
  const offset = Number(match[2]);
  return Number.isSafeInteger(bytes) && Number.isSafeInteger(offset) ? { bytes, offset } : null;
};

/**
 * Runs blkdiscard over the whole device. Resolves with the bytes it reported when it exits 0;
 * throws TOOL_NOT_FOUND when it is not installed, CANCELLED on abort, and TOOL_FAILED otherwise,
 * with `details.bytes` saying how far it had got (the zeroed prefix a fallback may skip).
 */
export const runBlkzeroout = async (
  device: string,
  options: BlkzerooutOptions = {},
): Promise<BlkzerooutRun> => {
  const { signal, stepBytes = DEFAULT_STEP_BYTES, killGraceMs = DEFAULT_TOOL_KILL_GRACE_MS } = options;
  if (!Number.isSafeInteger(stepBytes) || stepBytes < 512 || stepBytes % 512 !== 0)
    throw new AgentError('INTERNAL', `stepBytes must be a positive multiple of 512, got ${stepBytes}`);
  signal?.throwIfAborted();
  const envPATH = options.toolPath ?? process.env.PATH ?? '';
  const program = await findOnPath('blkdiscard', envPATH);
  if (program === null)
    throw new AgentError(
      'TOOL_NOT_FOUND',
      'blkdiscard is not on PATH; the ramdisk needs the Debian package util-linux',
      {
        details: { program: 'blkdiscard', package: 'util-linux', path: envPATH },
      },
    );
  // No --force: it would also drop the exclusive open that keeps a mount from racing the erase.
  const argv = ['blkdiscard', '--zeroout', '--verbose', '--step', String(stepBytes), device];
  const started = performance.now();
  const child = spawn(program, argv.slice(1), { argv0: 'blkdiscard', stdio: ['ignore', 'pipe', 'pipe'] });
  const stderr = new OutputTail();
  const stdout = new OutputTail();
  let bytes = 0;
  // Lines say "<n> bytes from the offset <o>"; only an unbroken run from byte 0 counts as done.
  let contiguous = true;
  let pending = '';
  const onLine = (line: string): void => {
    const parsed = parseZeroFilledLine(line);
    if (parsed === null) return;
    if (!contiguous || parsed.offset !== bytes) {
      contiguous = false;
      return;
    }
    bytes += parsed.bytes;
    options.onProgress?.(bytes);
  };
  child.stdout.on('data', (chunk: Buffer) => {
    stdout.push(chunk);
    pending += chunk.toString('utf8');
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    // A runaway line without a newline is not one of blkdiscard's.
    if (pending.length > 4096) pending = '';
    for (const line of lines) onLine(line);
  });
  child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
  const onAbort = (): void => {
    void terminate(child, killGraceMs);
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  let exit: { code: number | null; signal: NodeJS.Signals | null };
  try {
    exit = await new Promise((resolve, reject) => {
      child.once('error', reject);
      child.once('close', (code, killedBy) => resolve({ code, signal: killedBy }));
    });
  } catch (error) {
    throw new AgentError('TOOL_FAILED', `${formatArgv(argv)} could not be started: ${String(error)}`, {
      details: { argv, bytes: 0 },
      cause: error,
    });
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
  if (pending !== '') onLine(pending);
  const durationMs = Math.round(performance.now() - started);
  if (signal?.aborted) throw abortError(signal, formatArgv(argv));
  if (exit.code === 0) return { bytes: contiguous ? bytes : 0, durationMs };
  const what = exit.signal ? `was killed by ${exit.signal}` : `exited with code ${exit.code ?? 'unknown'}`;
  const hint = lastLine(stderr.text());
  throw new AgentError('TOOL_FAILED', `${formatArgv(argv)} ${what}${hint ? `: ${hint}` : ''}`, {
    details: {
      argv,
      exitCode: exit.code,
      signal: exit.signal,
      durationMs,
      bytes: contiguous ? bytes : 0,
      stdoutTail: stdout.text(),
      stderrTail: stderr.text(),
    },
  });
};
