/**
 * Helpers for the long-running programs the image path streams through (xz, zstd, bzip2,
 * qemu-img): finding them with the Debian package named when they are missing, keeping a bounded
 * tail of what they say on stderr, and stopping them (SIGTERM, then SIGKILL) on abort.
 */
import type { ChildProcess } from 'node:child_process';
import { accessSync, constants as fsConstants, statSync } from 'node:fs';
import path from 'node:path';
import { AgentError } from './errors.js';

/** Same bound as run-process's tails, so error records stay small whatever a tool prints. */
const TAIL_BYTES = 4096;

export const DEFAULT_TOOL_KILL_GRACE_MS = 5000;

const isExecutableFileSync = (candidate: string): boolean => {
  try {
    accessSync(candidate, fsConstants.X_OK);
    return statSync(candidate).isFile();
  } catch {
    return false;
  }
};

/**
 * findOnPath, synchronous: stream stages are built synchronously inside a pipeline() call, and a
 * missing program must be reported before any byte flows. Empty PATH entries are skipped (they
 * would mean the working directory).
 */
export const findOnPathSync = (name: string, envPATH: string): string | null => {
  if (name === '') return null;
  if (name.includes('/')) return isExecutableFileSync(name) ? path.resolve(name) : null;
  for (const directory of envPATH.split(path.delimiter)) {
    if (directory === '') continue;
    const candidate = path.join(directory, name);
    if (isExecutableFileSync(candidate)) return candidate;
  }
  return null;
};

/** Resolves `program` or throws TOOL_NOT_FOUND naming the Debian package that ships it. */
export const requireTool = (program: string, debianPackage: string, envPATH: string): string => {
  const resolved = findOnPathSync(program, envPATH);
  if (resolved !== null) return resolved;
  throw new AgentError(
    'TOOL_NOT_FOUND',
    `${program} is not on PATH; the ramdisk needs the Debian package ${debianPackage}`,
    { details: { program, package: debianPackage, path: envPATH } },
  );
};

/** Keeps only the last few KiB a program wrote, however much it writes. */
export class OutputTail {
  private chunks: Buffer[] = [];
  private length = 0;

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.length += chunk.length;
    while (this.chunks.length > 1 && this.length - (this.chunks[0]?.length ?? 0) >= TAIL_BYTES) {
      this.length -= this.chunks.shift()?.length ?? 0;
    }
  }

  text(): string {
    const all = Buffer.concat(this.chunks, this.length);
    return all
      .subarray(Math.max(0, all.length - TAIL_BYTES))
      .toString('utf8')
      .trim();
  }
}

/** The last non-empty line, for the one-line error message; the whole tail goes in details. */
export const lastLine = (text: string): string | undefined =>
  text
    .split(/[\r\n]/)
    .map((line) => line.trim())
    .filter((line) => line !== '')
    .at(-1)
    ?.slice(0, 200);

export const formatArgv = (argv: readonly string[]): string =>
  argv.map((arg) => (arg === '' || /[\s"'\\$`]/.test(arg) ? JSON.stringify(arg) : arg)).join(' ');

/**
 * SIGTERM now and SIGKILL after `graceMs` if the program is still there. Resolves once it has
 * exited, so a caller that awaits this never leaves a child behind.
 */
export const terminate = (child: ChildProcess, graceMs = DEFAULT_TOOL_KILL_GRACE_MS): Promise<void> => {
  // No pid: it never started, so there is nothing to wait for.
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null)
    return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
};

/** An abort reason as the error to surface: the engine's CANCELLED passes through unchanged. */
export const abortError = (signal: AbortSignal, what: string): AgentError => {
  const reason: unknown = signal.reason;
  if (AgentError.is(reason)) return reason;
  return new AgentError('CANCELLED', `${what} was cancelled`, { cause: reason });
};
