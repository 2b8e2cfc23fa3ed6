import { constants as fsConstants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { AgentError } from './errors.js';

export interface RunProcessOptions {
  /** Aborting it terminates the program (SIGTERM, then SIGKILL after `killGraceMs`). */
  signal?: AbortSignal;
  /** No limit when absent or 0. */
  timeoutMs?: number;
  /** Written to stdin; without it stdin is /dev/null so a tool that reads it cannot hang. */
  input?: string;
  /** Added to the agent's environment; `PATH` here is also where the program is looked up. */
  env?: Record<string, string>;
  /** Time between SIGTERM and SIGKILL. */
  killGraceMs?: number;
}

/** What a run looked like; the same fields travel in TOOL_FAILED details when it failed. */
export interface ProcessResult {
  argv: string[];
  exitCode: number | null;
  signal: string | null;
  timedOut: boolean;
  cancelled: boolean;
  durationMs: number;
  stdout: string;
  stderr: string;
}

export type RunProcess = (
  file: string,
  args: string[],
  options?: RunProcessOptions,
) => Promise<ProcessResult>;

export const DEFAULT_KILL_GRACE_MS = 5000;
const TAIL_LINES = 20;
const TAIL_BYTES = 4096;

const isExecutableFile = async (candidate: string): Promise<boolean> => {
  try {
    await access(candidate, fsConstants.X_OK);
    return (await stat(candidate)).isFile();
  } catch {
    return false;
  }
};

/**
 * Resolves a program the way execvp would, so a missing tool is reported by name before
 * anything is spawned. Empty PATH entries are skipped: they would mean the working directory.
 */
export const findOnPath = async (
  name: string,
  envPATH: string = process.env.PATH ?? '',
): Promise<string | null> => {
  if (name === '') return null;
  if (name.includes('/')) return (await isExecutableFile(name)) ? path.resolve(name) : null;
  for (const directory of envPATH.split(path.delimiter)) {
    if (directory === '') continue;
    const candidate = path.join(directory, name);
    if (await isExecutableFile(candidate)) return candidate;
  }
  return null;
};

/** The last lines of an output, bounded in both lines and bytes so an error record stays small. */
export const tailOf = (text: string, maxLines = TAIL_LINES, maxBytes = TAIL_BYTES): string => {
  const lines = text.replace(/\n+$/, '').split('\n');
  let tail = lines.slice(-maxLines).join('\n');
  const bytes = Buffer.from(tail, 'utf8');
  if (bytes.length > maxBytes) {
    // Cutting inside a multi-byte character leaves a replacement char at the front, which is fine.
    tail = bytes.subarray(bytes.length - maxBytes).toString('utf8');
  }
  return tail;
};

const formatArgv = (argv: string[]): string =>
  argv.map((arg) => (arg === '' || /[\s"'\\$`]/.test(arg) ? JSON.stringify(arg) : arg)).join(' ');

const lastLine = (text: string): string | undefined => {
  const line = text
    .split('\n')
    .map((part) => part.trim())
    .filter((part) => part !== '')
    .at(-1);
  return line === undefined ? undefined : line.slice(0, 200);
};

const describeFailure = (result: ProcessResult, timeoutMs: number | undefined): string => {
  const command = formatArgv(result.argv);
  let what: string;
  if (result.timedOut)
    what = `timed out after ${timeoutMs ?? '?'} ms and was killed by ${result.signal ?? 'a signal'}`;
  else if (result.cancelled) what = `was cancelled${result.signal ? ` (${result.signal})` : ''}`;
  else if (result.signal) what = `was killed by ${result.signal}`;
  else what = `exited with code ${result.exitCode ?? 'unknown'}`;
  const hint = lastLine(result.stderr);
  return `${command} ${what}${hint ? `: ${hint}` : ''}`;
};

/** A run as TOOL_FAILED details: the same fields wherever a tool's failure is reported. */
export const processFailureDetails = (result: ProcessResult): Record<string, unknown> => ({
  argv: result.argv,
  exitCode: result.exitCode,
  signal: result.signal,
  timedOut: result.timedOut,
  cancelled: result.cancelled,
  durationMs: result.durationMs,
  stdoutTail: tailOf(result.stdout),
  stderrTail: tailOf(result.stderr),
});

const toolFailed = (result: ProcessResult, timeoutMs: number | undefined, cause?: unknown): AgentError =>
  new AgentError('TOOL_FAILED', describeFailure(result, timeoutMs), {
    details: processFailureDetails(result),
    cause,
  });

const toolNotFound = (file: string, envPATH: string): AgentError =>
  new AgentError('TOOL_NOT_FOUND', `${file} is not on PATH; it must be installed in the ramdisk`, {
    details: { program: file, path: envPATH },
  });

// The engine cancels with a CancelledError as the reason; passing it through keeps the command CANCELLED.
const cancellationError = (
  signal: AbortSignal,
  result: ProcessResult,
  timeoutMs: number | undefined,
): AgentError => {
  const reason: unknown = signal.reason;
  if (AgentError.is(reason) && reason.code === 'CANCELLED') return reason;
  return toolFailed(result, timeoutMs, reason);
};

const validateOptions = (options: RunProcessOptions): void => {
  const { timeoutMs, killGraceMs } = options;
  if (timeoutMs !== undefined && (!Number.isFinite(timeoutMs) || timeoutMs < 0)) {
    throw new TypeError(
      `Expected timeoutMs to be a non-negative number, got ${String(timeoutMs)} (${typeof timeoutMs})`,
    );
  }
  if (killGraceMs !== undefined && (!Number.isFinite(killGraceMs) || killGraceMs < 0)) {
    throw new TypeError(
      `Expected killGraceMs to be a non-negative number, got ${String(killGraceMs)} (${typeof killGraceMs})`,
    );
  }
};

/**
 * Runs a program to completion. Success returns the run; a non-zero exit, a kill, a timeout or a
 * cancellation throws an AgentError whose details carry the run, so the conductor sees what happened.
 */
export const runProcess: RunProcess = async (file, args, options = {}) => {
  validateOptions(options);
  const { signal, timeoutMs, input, env, killGraceMs = DEFAULT_KILL_GRACE_MS } = options;
  const argv = [file, ...args];
  const envPATH = env?.PATH ?? process.env.PATH ?? '';

  if (signal?.aborted) {
    const empty: ProcessResult = {
      argv,
      exitCode: null,
      signal: null,
      timedOut: false,
      cancelled: true,
      durationMs: 0,
      stdout: '',
      stderr: '',
    };
    throw cancellationError(signal, empty, timeoutMs);
  }

  // Spawning the resolved path means the program that runs is the one that was looked up.
  const resolved = await findOnPath(file, envPATH);
  if (resolved === null) throw toolNotFound(file, envPATH);

  const outcome = await execa(resolved, args, {
    reject: false,
    argv0: file,
    ...(input === undefined ? { stdin: 'ignore' as const } : { input }),
    ...(env === undefined ? {} : { env }),
    ...(timeoutMs ? { timeout: Math.ceil(timeoutMs) } : {}),
    ...(signal === undefined ? {} : { cancelSignal: signal }),
    forceKillAfterDelay: Math.ceil(killGraceMs),
  });

  const result: ProcessResult = {
    argv,
    exitCode: outcome.exitCode ?? null,
    signal: outcome.signal ?? null,
    timedOut: outcome.timedOut,
    cancelled: outcome.isCanceled,
    durationMs: Math.round(outcome.durationMs),
    stdout: typeof outcome.stdout === 'string' ? outcome.stdout : '',
    stderr: typeof outcome.stderr === 'string' ? outcome.stderr : '',
  };
  if (!outcome.failed) return result;

  if (result.cancelled && signal) throw cancellationError(signal, result, timeoutMs);
  const spawnCode = (outcome.cause as { code?: unknown } | undefined)?.code;
  // ENOENT also means a missing script interpreter, so only a program that is really gone counts as not found.
  if ((spawnCode === 'ENOENT' || spawnCode === 'EACCES') && (await findOnPath(file, envPATH)) === null) {
    throw toolNotFound(file, envPATH);
  }
  const spawnFailed = result.exitCode === null && result.signal === null && !result.timedOut;
  throw toolFailed(result, timeoutMs, spawnFailed ? outcome.cause : undefined);
};
