/**
 * Reading the DPU's boot log from misc snapshots: which lines are new since the last snapshot,
 * and what a line means for the install.
 *
 * The agent never sets CLEAR_ON_READ: that mode resets the ring on every read, so a second reader
 * (an operator's bfb-install, a console tool) would lose lines, and so would we. Every snapshot
 * therefore holds the whole ring, and new lines are found by overlap with the previous one.
 */
import type { InstallOutcome, RshimLogLine } from '../contracts.js';
import { parseLogLine } from './misc.js';

/**
 * The lines bfb-install stops at, plus the deferred-upgrade one. `Rebooting...` has its three dots:
 * `Rebooting BMC..` is logged mid-install. `Installation finished` is not one: it is also printed
 * after the NIC firmware step, before the install is over.
 */
export const READY_MARKERS: readonly string[] = [
  'DPU is ready',
  'Linux up',
  'Rebooting...',
  'In Enhanced NIC mode',
  'Runtime upgrade finished',
];

const escape = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
// Word boundaries so `Linux upgrade` is not `Linux up`; case as bfb-install's grep -i.
const READY_PATTERNS = READY_MARKERS.map(
  (marker) =>
    [marker, new RegExp(`(^|\\W)${escape(marker)}${/\w$/.test(marker) ? '(?!\\w)' : ''}`, 'i')] as const,
);
const FAILURE_PATTERNS: readonly RegExp[] = [
  /CRITICAL ERROR/i,
  /(^|\s)ERR\[/,
  /(^|\s)PANIC\(/,
  /(^|\s)Exception\(/,
];

/**
 * `failed` for a failure line (CRITICAL ERROR, any ERR[...], PANIC(...), Exception(...)), `ready`
 * with the marker for a ready line, else `pending`. A line that is both counts as a failure: the
 * installer logs its error and then reboots.
 */
export const classifyLogLine = (line: RshimLogLine | string): InstallOutcome => {
  const parsed = typeof line === 'string' ? parseLogLine(line) : line;
  const raw = parsed.raw;
  if (
    parsed.level === 'ERR' ||
    parsed.level === 'PANIC' ||
    parsed.level === 'EXCEPTION' ||
    FAILURE_PATTERNS.some((pattern) => pattern.test(raw))
  ) {
    return { kind: 'failed', line: raw.trim() };
  }
  for (const [marker, pattern] of READY_PATTERNS) if (pattern.test(raw)) return { kind: 'ready', marker };
  return { kind: 'pending' };
};

const sameRun = (
  previous: readonly string[],
  from: number,
  current: readonly string[],
  length: number,
): boolean => {
  for (let i = 0; i < length; i += 1) if (previous[from + i] !== current[i]) return false;
  return true;
};

/**
 * The lines of `current` that `previous` did not have. The longest suffix of `previous` that
 * `current` starts with is the overlap; what follows it is new. That covers a ring that only grew
 * (all of `previous` overlaps), one that dropped its oldest lines as it filled (a shorter suffix
 * overlaps), and one that wrapped past everything or was reset by a SoC reset (no overlap: every
 * line is new). The rare ambiguity, a reset whose first lines repeat the previous snapshot's last
 * ones, loses those lines rather than replaying old ones.
 */
export const diffLogLines = (previous: readonly string[], current: readonly string[]): string[] => {
  if (previous.length === 0) return [...current];
  for (let from = 0; from < previous.length; from += 1) {
    const overlap = previous.length - from;
    if (overlap > current.length) continue;
    if (sameRun(previous, from, current, overlap)) return current.slice(overlap);
  }
  return [...current];
};
