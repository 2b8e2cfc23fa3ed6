/**
 * Streams the staged BFB and the bf.cfg into the rshim boot device, as `cat bfb cfg > boot` does.
 *
 * The device is opened here, so its refusals map to their own errors (EBUSY, EPERM in secure NIC
 * mode, EINVAL in drop mode, ENODEV). The opened descriptor becomes the stdout of a `cat`: cat into
 * a FIFO measured about 1.6x faster than any write loop in Node, and the DPU's boot FIFO is the
 * only pace that matters. Progress comes from cat's <proc>/<pid>/io `wchar` while it runs; but a
 * reaped process's counts are gone, so cat runs under a small `sh` that reads its own `io` before
 * and after waiting for it: a reaped child's counts are added to its parent's, and the difference
 * is exactly what cat wrote. That count (less what cat said on stderr) must equal the files' size:
 * a short write is never a success.
 */
import { spawn } from 'node:child_process';
import { constants as fsConstants } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { open, readFile, readdir, stat, type FileHandle } from 'node:fs/promises';
import { AgentError } from '../../../util/errors.js';
import {
  abortError,
  DEFAULT_TOOL_KILL_GRACE_MS,
  formatArgv,
  lastLine,
  OutputTail,
  requireTool,
} from '../../../util/tool-process.js';
import { procPath, type HardwarePaths } from '../../paths.js';

export interface PushProgress {
  /** Bytes cat has written into boot. */
  bytes: number;
  total: number;
  /** Over the last two seconds. */
  rateBytesPerS: number;
  elapsedMs: number;
}

export interface PushResult {
  bytes: number;
  durationMs: number;
  rateBytesPerS: number;
}

export interface PushBootStreamOptions {
  /** `<dev>/rshimN/boot`. */
  bootPath: string;
  /** The staged, already validated BFB. */
  bfbPath: string;
  /** The bf.cfg to append, or null. */
  cfgPath?: string | null;
  paths: HardwarePaths;
  /** misc's BOOT_TIMEOUT: the device itself gives up after this long without progress. */
  bootTimeoutS?: number | null;
  /** Added to the boot timeout before the agent stops a push that makes no progress. */
  stallMarginMs?: number;
  /** How often cat's byte count is read. */
  pollIntervalMs?: number;
  /**
   * A write error (EPIPE, EIO) after at least this long without progress is the DPU stalling, not
   * a fault. Default: 5 s, or half the boot timeout when that is shorter.
   */
  stallEvidenceMs?: number;
  onProgress?: (progress: PushProgress) => void;
  signal?: AbortSignal;
  killGraceMs?: number;
  /** PATH for sh and cat (the agent's when absent). */
  env?: Record<string, string>;
}

/** The daemon's default since 2024 (older builds used 100-200 s). */
export const DEFAULT_BOOT_TIMEOUT_S = 300;
const DEFAULT_STALL_MARGIN_MS = 30_000;
const DEFAULT_POLL_MS = 250;
const DEFAULT_STALL_EVIDENCE_MS = 5_000;
const RATE_WINDOW_MS = 2_000;
const REPORT = /^bm-agent-push wchar=(\d*) rc=(\d+)\s*$/m;

// $1 proc root, $2 cat, then the files. The shell writes nothing itself between the two io reads
// (the count does not start at 0: the spawn machinery writes before exec), so the difference is cat's.
const WRAPPER = [
  'proc=$1; cat=$2; shift 2',
  'wchar() { w=; if [ -r "$proc/$$/io" ]; then while read -r k v; do if [ "$k" = "wchar:" ]; then w=$v; fi; done < "$proc/$$/io"; fi; }',
  'wchar; before=$w',
  '"$cat" -- "$@"',
  'rc=$?',
  'wchar',
  'if [ -n "$before" ] && [ -n "$w" ]; then w=$((w - before)); else w=; fi',
  'printf \'bm-agent-push wchar=%s rc=%s\\n\' "$w" "$rc" >&2',
  'exit "$rc"',
].join('\n');

const OPEN_ERRORS: Record<
  string,
  { code: 'RSHIM_BUSY' | 'RSHIM_LOCKED' | 'RSHIM_OWNED_BY_BMC' | 'RSHIM_NOT_FOUND'; why: string }
> = {
  EBUSY: { code: 'RSHIM_BUSY', why: 'another process has it open (bfb-install, an rshim console)' },
  EPERM: { code: 'RSHIM_LOCKED', why: 'the card is in secure NIC mode' },
  EINVAL: {
    code: 'RSHIM_OWNED_BY_BMC',
    why: "the rshim is in drop mode: another backend (the DPU's BMC) owns it",
  },
  ENODEV: { code: 'RSHIM_NOT_FOUND', why: 'the rshim is not attached' },
  ENOENT: { code: 'RSHIM_NOT_FOUND', why: 'there is no such device' },
  ENXIO: { code: 'RSHIM_NOT_FOUND', why: 'the rshim is not attached' },
  ENOTCONN: { code: 'RSHIM_NOT_FOUND', why: 'the rshim daemon is gone' },
};

const openBoot = async (bootPath: string, signal: AbortSignal | undefined): Promise<FileHandle> => {
  // No O_CREAT: a missing device must not turn into a file. The open resets the SoC and can take
  // seconds; it cannot be interrupted, so an abort meanwhile closes the handle once it arrives.
  const opening = open(bootPath, fsConstants.O_WRONLY);
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<never>((_resolve, reject) => {
    if (signal === undefined) return;
    onAbort = () => reject(abortError(signal, 'the BFB push'));
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([opening, aborted]);
  } catch (error) {
    if (AgentError.is(error)) {
      opening.then((handle) => handle.close()).catch(() => undefined);
      throw error;
    }
    const errno = (error as NodeJS.ErrnoException).code ?? '';
    const known = OPEN_ERRORS[errno];
    const message = `opening ${bootPath} failed (${errno || 'unknown error'})`;
    if (known) {
      throw new AgentError(known.code, `${message}: ${known.why}`, {
        details: { boot: bootPath, errno },
        cause: error,
      });
    }
    throw new AgentError('INTERNAL', `${message}: ${(error as Error).message}`, {
      details: { boot: bootPath, errno: errno || null },
      cause: error,
    });
  } finally {
    if (onAbort !== undefined) signal?.removeEventListener('abort', onAbort);
  }
};

const sizeOf = async (file: string): Promise<number> => {
  try {
    const info = await stat(file);
    if (!info.isFile()) throw new Error('not a regular file');
    return info.size;
  } catch (error) {
    throw new AgentError('INVALID_PARAMS', `${file} cannot be pushed: ${(error as Error).message}`, {
      details: { file },
      cause: error,
    });
  }
};

const readWchar = async (paths: HardwarePaths, pid: number): Promise<number | null> => {
  try {
    const match = /^wchar:\s*(\d+)/m.exec(await readFile(procPath(paths, String(pid), 'io'), 'utf8'));
    return match?.[1] === undefined ? null : Number(match[1]);
  } catch {
    return null;
  }
};

/** The wrapper's one child: from `children` when the kernel has it, else by parent pid. */
const findChild = async (paths: HardwarePaths, parent: number): Promise<number | null> => {
  try {
    const text = await readFile(procPath(paths, String(parent), 'task', String(parent), 'children'), 'utf8');
    const first = text.trim().split(/\s+/)[0];
    return first === undefined || first === '' ? null : Number(first);
  } catch {
    // The shell gone: nothing to find. Else a kernel without CONFIG_PROC_CHILDREN: scan below.
    try {
      await stat(procPath(paths, String(parent)));
    } catch {
      return null;
    }
  }
  let entries: string[];
  try {
    entries = await readdir(paths.proc);
  } catch {
    return null;
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const statLine = await readFile(procPath(paths, entry, 'stat'), 'utf8');
      // The command name may hold spaces and parentheses; fields resume after the last ')'.
      const fields = statLine.slice(statLine.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === parent) return Number(entry);
    } catch {
      continue;
    }
  }
  return null;
};

const killGroup = (pid: number, signal: NodeJS.Signals): void => {
  try {
    process.kill(-pid, signal);
  } catch {
    // Already gone.
  }
};

/**
 * Pushes `bfbPath` and then `cfgPath` into `bootPath`. Resolves once cat wrote every byte.
 * RSHIM_BUSY / RSHIM_LOCKED / RSHIM_OWNED_BY_BMC / RSHIM_NOT_FOUND when the device refuses the
 * open; RSHIM_TIMEOUT when the DPU stops taking bytes (the device's ETIMEDOUT, a write error
 * after a stall, or no progress for BOOT_TIMEOUT plus the margin, after which cat is killed);
 * TOOL_FAILED for anything else, a short write included; the abort reason (CANCELLED) on abort.
 */
export const pushBootStream = async (options: PushBootStreamOptions): Promise<PushResult> => {
  const {
    bootPath,
    bfbPath,
    cfgPath = null,
    paths,
    stallMarginMs = DEFAULT_STALL_MARGIN_MS,
    pollIntervalMs = DEFAULT_POLL_MS,
    onProgress,
    signal,
    killGraceMs = DEFAULT_TOOL_KILL_GRACE_MS,
    env,
  } = options;
  const bootTimeoutS = options.bootTimeoutS ?? DEFAULT_BOOT_TIMEOUT_S;
  const stallLimitMs = bootTimeoutS * 1000 + stallMarginMs;
  const stallEvidenceMs = options.stallEvidenceMs ?? Math.min(DEFAULT_STALL_EVIDENCE_MS, bootTimeoutS * 500);
  const files = cfgPath === null ? [bfbPath] : [bfbPath, cfgPath];
  let total = 0;
  for (const file of files) total += await sizeOf(file);
  const envPATH = env?.PATH ?? process.env.PATH ?? '';
  const shell = requireTool('sh', 'dash', envPATH);
  const catPath = requireTool('cat', 'coreutils', envPATH);
  if (signal?.aborted) throw abortError(signal, 'the BFB push');

  const handle = await openBoot(bootPath, signal);
  const argv = ['cat', ...files];
  const started = performance.now();
  const stderr = new OutputTail();
  let stderrBytes = 0;
  let child: ReturnType<typeof spawn>;
  let exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: Error }>;
  try {
    child = spawn(shell, ['-c', WRAPPER, 'sh', paths.proc, catPath, ...files], {
      stdio: ['ignore', handle.fd, 'pipe'],
      // Its own process group: a stop must reach cat, not only the shell waiting for it.
      detached: true,
      ...(env === undefined ? {} : { env: { ...process.env, ...env } }),
    });
    // Listening before anything is awaited: a quick failure may be over within the next tick.
    const running = child;
    exited = new Promise((resolve) => {
      running.once('error', (error) => resolve({ code: null, signal: null, error }));
      running.once('close', (code, exitSignal) => resolve({ code, signal: exitSignal }));
    });
    running.stderr?.on('data', (chunk: Buffer) => {
      stderrBytes += chunk.length;
      stderr.push(chunk);
    });
  } finally {
    // cat holds its own copy; the device (or FIFO) must close when cat is done, not when we are.
    await handle.close();
  }
  const pid = child.pid;

  let catPid: number | null = null;
  let bytes = 0;
  let lastProgressAt = performance.now();
  let stopping: 'stall' | 'abort' | null = null;
  const samples: Array<[number, number]> = [[started, 0]];
  // When each count was first seen. wchar grows when a write() returns, and cat's last words on
  // stderr count too, so the last progress is the last count seen that the exact final count of
  // boot bytes covers: a write cut short by the failure and the error message come after it.
  const reached: Array<[number, number]> = [[started, 0]];
  let finished = false;
  let killTimer: NodeJS.Timeout | undefined;

  const stop = (why: 'stall' | 'abort'): void => {
    if (stopping !== null || pid === undefined) return;
    stopping = why;
    killGroup(pid, 'SIGTERM');
    killTimer = setTimeout(() => killGroup(pid, 'SIGKILL'), killGraceMs);
  };

  let polling = false;
  const poll = async (): Promise<void> => {
    if (polling || finished || pid === undefined) return;
    polling = true;
    try {
      catPid ??= await findChild(paths, pid);
      const now = performance.now();
      const written = catPid === null ? null : await readWchar(paths, catPid);
      if (finished) return;
      if (written !== null && written > bytes) {
        bytes = written;
        lastProgressAt = now;
        reached.push([now, written]);
        if (reached.length > 4096) reached.splice(1, 2048);
      }
      samples.push([now, bytes]);
      while (samples.length > 2 && (samples[1]?.[0] ?? now) <= now - RATE_WINDOW_MS) samples.shift();
      const [oldAt, oldBytes] = samples[0] ?? [now, bytes];
      const rate = now > oldAt ? ((bytes - oldBytes) * 1000) / (now - oldAt) : 0;
      onProgress?.({ bytes, total, rateBytesPerS: Math.round(rate), elapsedMs: Math.round(now - started) });
      if (now - lastProgressAt > stallLimitMs) stop('stall');
    } finally {
      polling = false;
    }
  };
  const timer = setInterval(() => void poll(), pollIntervalMs);
  const onAbort = (): void => stop('abort');
  signal?.addEventListener('abort', onAbort, { once: true });
  // An abort between the open and here fired no event.
  if (signal?.aborted) stop('abort');

  const exit = await exited;
  finished = true;
  clearInterval(timer);
  clearTimeout(killTimer);
  signal?.removeEventListener('abort', onAbort);
  const endedAt = performance.now();
  const durationMs = Math.round(endedAt - started);

  const text = stderr.text();
  const report = REPORT.exec(text);
  const said = text.replace(REPORT, '').trim();
  let progressAt = lastProgressAt;
  if (report?.[1] !== undefined && report[1] !== '') {
    // wchar counts every write, so what cat said on stderr is taken back out.
    const catStderr = stderrBytes - Buffer.byteLength(`${report[0].trimEnd()}\n`);
    bytes = Math.max(0, Number(report[1]) - catStderr);
    // The last byte went out after the last poll that saw fewer, and no later than the first that
    // saw them all. A starved poller can see the final count long after it was written, so the
    // stall is measured from the earlier poll: a stall is never mistaken for a plain failure.
    const first = reached.findIndex(([, count]) => count >= bytes);
    progressAt = first > 0 ? (reached[first - 1]?.[0] ?? started) : started;
  }
  // sh reports cat's status; 128+n is cat killed by signal n (SIGPIPE when the reader went away).
  const catCode = report?.[2] !== undefined ? Number(report[2]) : exit.code;
  const catSignal =
    exit.signal ??
    (catCode !== null && catCode > 128 ? (signalName(catCode - 128) ?? `signal ${catCode - 128}`) : null);
  const stalledMs = Math.round(endedAt - progressAt);
  const details = {
    argv,
    exitCode: catCode,
    signal: catSignal,
    durationMs,
    stderrTail: said,
    boot: bootPath,
    bytes,
    total,
  };

  if (stopping === 'abort' && signal) throw abortError(signal, 'the BFB push');
  if (stopping === 'stall') {
    throw new AgentError(
      'RSHIM_TIMEOUT',
      `the DPU took no bytes from ${bootPath} for ${seconds(stalledMs)} (BOOT_TIMEOUT ${bootTimeoutS} s ` +
        `plus ${seconds(stallMarginMs)}); stopped after ${bytes} of ${total} bytes`,
      { details: { ...details, stalled_ms: stalledMs, boot_timeout_s: bootTimeoutS } },
    );
  }
  if (exit.error !== undefined) {
    throw new AgentError('TOOL_FAILED', `${formatArgv(argv)} could not be started: ${exit.error.message}`, {
      details,
      cause: exit.error,
    });
  }
  if (catCode === 0) {
    if (bytes === total)
      return {
        bytes,
        durationMs,
        rateBytesPerS: durationMs > 0 ? Math.round((bytes * 1000) / durationMs) : 0,
      };
    throw new AgentError(
      'TOOL_FAILED',
      `${formatArgv(argv)} wrote ${bytes} bytes into ${bootPath} where ${total} were expected (the staged files changed?)`,
      { details },
    );
  }
  const stalled = stalledMs >= stallEvidenceMs;
  if (
    /Connection timed out/i.test(said) ||
    (stalled && (/Broken pipe|Input\/output error/i.test(said) || catSignal === 'SIGPIPE'))
  ) {
    throw new AgentError(
      'RSHIM_TIMEOUT',
      `the DPU stopped taking the boot stream after ${bytes} of ${total} bytes: ${lastLine(said) ?? catSignal ?? 'write failed'}`,
      { details: { ...details, stalled_ms: stalledMs, boot_timeout_s: bootTimeoutS } },
    );
  }
  const how =
    catSignal !== null
      ? `was killed by ${catSignal}`
      : `exited with code ${catCode === null ? 'unknown' : catCode}`;
  const hint = lastLine(said);
  throw new AgentError('TOOL_FAILED', `${formatArgv(argv)} ${how}${hint ? `: ${hint}` : ''}`, { details });
};

const seconds = (ms: number): string =>
  ms < 10_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 1000)} s`;

const signalName = (n: number): string | undefined =>
  Object.entries(osConstants.signals).find(([, value]) => value === n)?.[0];
