/**
 * Following a BFB install after the push: the DPU reports progress only through the boot log in
 * misc (DISPLAY_LEVEL 2), so misc is polled, new lines are passed on as they come, and the install
 * ends at a ready marker or a failure line. Lines that were in the log before the push belong to
 * an earlier boot; the baseline taken before the push keeps them from counting.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { AgentError, errorMessage } from '../../../util/errors.js';
import { abortError } from '../../../util/tool-process.js';
import type { RshimLogLine } from '../contracts.js';
import { classifyLogLine, diffLogLines } from './log.js';
import { readMisc, setMisc, writeMisc, type SetMiscOptions } from './misc.js';

export const DEFAULT_INSTALL_TIMEOUT_MS = 30 * 60 * 1000;
const DEFAULT_POLL_MS = 1000;
const DEFAULT_TAIL_LINES = 40;
/** How often a lost DISPLAY_LEVEL 2 (another tool lowered it) is written again. */
const REASSERT_MS = 5000;

export interface LogBaseline {
  /** The raw log lines before the push; null when no log could be read (then nothing before the first poll counts). */
  lines: string[] | null;
  /** Whether DISPLAY_LEVEL 2 showed in misc. */
  displayLevelApplied: boolean;
}

/**
 * Sets DISPLAY_LEVEL 2 and snapshots the log. Take it before the push: the push resets the SoC,
 * and whatever was logged before belongs to the previous boot.
 */
export const captureLogBaseline = async (
  miscPath: string,
  options: SetMiscOptions = {},
): Promise<LogBaseline> => {
  const { applied, misc } = await setMisc(miscPath, 'DISPLAY_LEVEL', 2, options);
  return { lines: misc.log === null ? null : misc.log.map((line) => line.raw), displayLevelApplied: applied };
};

export interface FollowInstallOptions {
  miscPath: string;
  /** From captureLogBaseline; null when none could be taken. */
  baseline: LogBaseline | null;
  /** Each new log line, in order. */
  onLine?: (line: RshimLogLine) => void;
  pollIntervalMs?: number;
  timeoutMs?: number;
  signal?: AbortSignal;
  tailLines?: number;
}

export interface FollowResult {
  /** The ready marker seen, e.g. `DPU is ready`. */
  marker: string;
  /** The line that carried it. */
  line: string;
  /** The last new lines, oldest first, the marker's line last or near last. */
  logTail: string[];
  /** New lines seen in all. */
  lines: number;
  elapsedMs: number;
}

/**
 * Polls misc until a ready marker (resolves) or a failure line (BFB_INSTALL_FAILED quoting it,
 * with `details.log_tail`), or BFB_INSTALL_TIMEOUT after `timeoutMs` (30 min by default). Misc
 * read errors while the DPU reboots are retried until the timeout. Aborting rejects with the
 * abort reason.
 */
export const followInstall = async (options: FollowInstallOptions): Promise<FollowResult> => {
  const {
    miscPath,
    baseline,
    onLine,
    pollIntervalMs = DEFAULT_POLL_MS,
    timeoutMs = DEFAULT_INSTALL_TIMEOUT_MS,
    signal,
    tailLines = DEFAULT_TAIL_LINES,
  } = options;
  const started = Date.now();
  const deadline = started + timeoutMs;
  let reference: string[] | null = baseline?.lines ?? null;
  const tail: string[] = [];
  let seen = 0;
  let lastError: string | null = null;
  let lastReassert = 0;

  const remember = (raw: string): void => {
    tail.push(raw);
    if (tail.length > tailLines) tail.shift();
  };

  while (true) {
    if (signal?.aborted) throw abortError(signal, 'following the BFB install');
    let snapshot;
    try {
      snapshot = await readMisc(miscPath);
      lastError = null;
    } catch (error) {
      lastError = errorMessage(error);
      snapshot = null;
    }
    if (snapshot !== null && snapshot.log === null) {
      // No log block: the level was lowered under us. Not an empty ring, so the reference stays.
      if (snapshot.displayLevel !== 2 && Date.now() - lastReassert >= REASSERT_MS) {
        lastReassert = Date.now();
        await writeMisc(miscPath, 'DISPLAY_LEVEL', 2).catch((error: unknown) => {
          lastError = errorMessage(error);
        });
      }
    } else if (snapshot?.log != null) {
      const current = snapshot.log.map((line) => line.raw);
      const fresh = reference === null ? [] : diffLogLines(reference, current);
      reference = current;
      let outcome: { kind: 'ready'; marker: string; line: string } | { kind: 'failed'; line: string } | null =
        null;
      // `fresh` is always a suffix of `current`, so the parsed lines line up by position.
      const first = current.length - fresh.length;
      for (let i = 0; i < fresh.length; i += 1) {
        const line = snapshot.log[first + i];
        if (line === undefined) continue;
        const raw = line.raw;
        seen += 1;
        remember(raw);
        onLine?.(line);
        if (outcome !== null) continue;
        const verdict = classifyLogLine(line);
        if (verdict.kind === 'failed') outcome = { kind: 'failed', line: verdict.line };
        else if (verdict.kind === 'ready')
          outcome = { kind: 'ready', marker: verdict.marker, line: raw.trim() };
      }
      if (outcome?.kind === 'failed') {
        throw new AgentError(
          'BFB_INSTALL_FAILED',
          `the DPU logged a failure during the BFB install: "${outcome.line}"`,
          {
            details: { line: outcome.line, log_tail: [...tail] },
          },
        );
      }
      if (outcome?.kind === 'ready') {
        return {
          marker: outcome.marker,
          line: outcome.line,
          logTail: [...tail],
          lines: seen,
          elapsedMs: Date.now() - started,
        };
      }
    }
    const left = deadline - Date.now();
    if (left <= 0) {
      const within = timeoutMs >= 120_000 ? `${Math.round(timeoutMs / 60_000)} min` : `${timeoutMs / 1000} s`;
      const last = tail.at(-1);
      throw new AgentError(
        'BFB_INSTALL_TIMEOUT',
        `the DPU reported neither ready nor a failure within ${within}` +
          (last === undefined ? ' and logged nothing new' : `; its last line: "${last.trim()}"`),
        { details: { timeout_s: timeoutMs / 1000, lines: seen, log_tail: [...tail], last_error: lastError } },
      );
    }
    try {
      await sleep(Math.min(pollIntervalMs, left), undefined, signal === undefined ? undefined : { signal });
    } catch {
      throw abortError(signal as AbortSignal, 'following the BFB install');
    }
  }
};
