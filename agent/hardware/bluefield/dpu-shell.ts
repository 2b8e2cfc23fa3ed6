/**
 * Commands on a DPU's Arm system over SSH (through the tmfifo network), for what the firmware only
 * lets the Arm side do (mlxprivhost restrict, some mlxconfig settings).
 *
 * Each run is one `ssh` process. The remote side is a small bash wrapper that
 *   1. prints a per-run marker on stderr, so a failure before it is ssh's own (exit 255 from ssh
 *      and exit 255 from a script are otherwise the same number);
 *   2. reads the script as one base64 line from stdin, and runs it from a temporary file in a
 *      process group of its own with stdin from /dev/null;
 *   3. keeps reading stdin, which the agent holds open for as long as it wants the script to run:
 *      when the agent kills ssh (timeout, cancel) the connection drops, stdin ends, and the wrapper
 *      kills the script's process group. Without this a command that does not write (a sleep, a
 *      firmware tool waiting on the device) would outlive the connection, since sshd sends no
 *      hangup to sessions without a terminal.
 */
import { spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { AgentError } from '../../util/errors.js';
import { silentLogger, type Logger } from '../../util/logger.js';
import { findOnPath, type ProcessResult } from '../../util/run-process.js';
import { OutputTail, abortError, lastLine, terminate } from '../../util/tool-process.js';
import type { ToolRunner } from './contracts.js';

export interface DpuShellOptions {
  /** The DPU's address on the tmfifo network, e.g. `192.168.100.2`. */
  host: string;
  /** The agent's private key (see ssh-key.ts). */
  keyPath: string;
  /** The agent's own known_hosts; the system's is never read or written. */
  knownHostsPath: string;
  /** Where ssh is looked up. */
  toolPath: string;
  user?: string;
  port?: number;
  connectTimeoutS?: number;
  sshProgram?: string;
  logger?: Logger;
  /** Between SIGTERM and SIGKILL to ssh. */
  killGraceMs?: number;
  /** Keep-alive probes, so a DPU that reboots mid-script is noticed. */
  serverAliveIntervalS?: number;
}

export type OutputStream = 'stdout' | 'stderr';

export interface RunScriptOptions {
  /** No limit when absent or 0. */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Called for every complete line as it arrives (without its newline). */
  onLine?: (stream: OutputStream, line: string) => void;
}

export interface ScriptResult {
  exit_code: number;
  stdout_tail: string;
  stderr_tail: string;
  seconds: number;
}

export interface DpuShell extends ToolRunner {
  readonly where: 'dpu';
  readonly host: string;
  /** Runs a bash script on the DPU; a non-zero exit is DPU_SCRIPT_FAILED. */
  runScript(script: string, options?: RunScriptOptions): Promise<ScriptResult>;
}

const DEFAULT_CONNECT_TIMEOUT_S = 10;
const DEFAULT_KILL_GRACE_MS = 2000;
const DEFAULT_SERVER_ALIVE_S = 15;
/** A line longer than this is passed on in pieces, so one endless line cannot eat memory. */
const MAX_LINE_CHARS = 65536;
/** What run() keeps of a program's output (mlxconfig's full query is about 100 KiB). */
const MAX_COLLECT_CHARS = 16 * 1024 * 1024;
const SSH_FAILURE = 255;

/**
 * The remote wrapper (see the top of this file). `$1` is the marker. Job control (`set -m`) gives
 * the script its own process group; it is switched off again so bash prints no job reports.
 */
const REMOTE_WRAPPER = [
  `printf '%s\\n' "$1" >&2`,
  `IFS= read -r payload || { echo 'bm-agent: no script received' >&2; exit 254; }`,
  `f=$(mktemp "\${TMPDIR:-/tmp}/bm-agent-script.XXXXXX") || exit 254`,
  `trap 'rm -f "$f"' EXIT`,
  `printf '%s' "$payload" | base64 -d > "$f" || { echo 'bm-agent: script could not be decoded' >&2; exit 254; }`,
  `set -m`,
  `bash "$f" </dev/null &`,
  `job=$!`,
  `{ cat >/dev/null; kill -TERM -- -"$job"; sleep 3; kill -KILL -- -"$job"; } 2>/dev/null &`,
  `watcher=$!`,
  `set +m`,
  `disown "$watcher"`,
  `wait "$job"; rc=$?`,
  `kill -KILL -- -"$watcher" 2>/dev/null`,
  `exit "$rc"`,
].join('\n');

// No `=`: a first word with one would be read as a variable assignment.
const SAFE_WORD = /^[A-Za-z0-9_@%+:,./-]+$/;

/**
 * One word for a POSIX shell: bare when it cannot be misread, else single-quoted (inside single
 * quotes nothing is special but the quote itself, which is closed, escaped and reopened).
 */
export const quoteShellWord = (word: string): string => {
  if (word.includes('\0')) {
    throw new AgentError('INVALID_PARAMS', 'a command argument for the DPU contains a NUL byte', {
      details: { argument: JSON.stringify(word) },
    });
  }
  if (SAFE_WORD.test(word)) return word;
  return `'${word.replaceAll("'", `'\\''`)}'`;
};

/** `host` or `[host]:port`, as known_hosts names a host. */
const knownHostsName = (host: string, port: number): string => (port === 22 ? host : `[${host}]:${port}`);

const matchesHostField = (field: string, name: string): boolean => {
  if (field.startsWith('|1|')) {
    const [salt = '', hash = ''] = field.slice(3).split('|');
    const digest = createHmac('sha1', Buffer.from(salt, 'base64')).update(name).digest('base64');
    return digest === hash;
  }
  return field.split(',').some((pattern) => pattern.toLowerCase() === name.toLowerCase());
};

/**
 * Removes the entries for `host` (plain or hashed) from a known_hosts file, as
 * `ssh-keygen -R` would; certificate-authority and revocation lines stay. Returns how many went.
 */
export const removeKnownHost = async (file: string, host: string, port = 22): Promise<number> => {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    return 0;
  }
  const name = knownHostsName(host, port);
  let removed = 0;
  const kept = text.split('\n').filter((line) => {
    const fields = line.trim().split(/\s+/);
    if (
      fields[0] === undefined ||
      fields[0] === '' ||
      fields[0].startsWith('#') ||
      fields[0].startsWith('@')
    ) {
      return true;
    }
    if (!matchesHostField(fields[0], name)) return true;
    removed += 1;
    return false;
  });
  if (removed > 0) {
    const temporary = `${file}.${process.pid}.tmp`;
    await writeFile(temporary, kept.join('\n'), { mode: 0o600 });
    await rename(temporary, file);
  }
  return removed;
};

interface SessionOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
  onLine?: (stream: OutputStream, line: string) => void;
  /** Keep the whole output (for run()); runScript keeps tails only. */
  collect: boolean;
}

interface SessionOutcome {
  exitCode: number | null;
  signal: string | null;
  /** The wrapper's marker arrived: ssh connected and authenticated, and the remote side ran. */
  started: boolean;
  timedOut: boolean;
  aborted: boolean;
  /** What came on stderr before the marker: ssh's own messages. */
  sshStderr: string;
  stdoutTail: string;
  stderrTail: string;
  stdout: string;
  stderr: string;
  durationMs: number;
}

/** Splits a stream into lines, passing each on as soon as its newline arrives. */
class LineSplitter {
  private readonly decoder = new StringDecoder('utf8');
  private partial = '';

  constructor(private readonly emit: (line: string) => void) {}

  push(chunk: Buffer): void {
    this.partial += this.decoder.write(chunk);
    let newline = this.partial.indexOf('\n');
    while (newline >= 0) {
      this.emit(this.partial.slice(0, newline).replace(/\r$/, ''));
      this.partial = this.partial.slice(newline + 1);
      newline = this.partial.indexOf('\n');
    }
    while (this.partial.length > MAX_LINE_CHARS) {
      this.emit(this.partial.slice(0, MAX_LINE_CHARS));
      this.partial = this.partial.slice(MAX_LINE_CHARS);
    }
  }

  end(): void {
    this.partial += this.decoder.end();
    if (this.partial !== '') this.emit(this.partial.replace(/\r$/, ''));
    this.partial = '';
  }
}

class Collector {
  private text = '';
  private truncated = false;

  add(line: string): void {
    if (this.truncated) return;
    if (this.text.length + line.length + 1 > MAX_COLLECT_CHARS) {
      this.truncated = true;
      return;
    }
    this.text += `${line}\n`;
  }

  value(): string {
    return this.text;
  }
}

const hostKeyChanged = (stderr: string): boolean =>
  /REMOTE HOST IDENTIFICATION HAS CHANGED|Host key for \S+ has changed/i.test(stderr);

/** A shell for one DPU. Nothing connects until the first run. */
export const createDpuShell = (options: DpuShellOptions): DpuShell => {
  const logger = options.logger ?? silentLogger();
  const user = options.user ?? 'root';
  const port = options.port ?? 22;
  const sshProgram = options.sshProgram ?? 'ssh';
  const killGraceMs = options.killGraceMs ?? DEFAULT_KILL_GRACE_MS;
  const connectTimeoutS = options.connectTimeoutS ?? DEFAULT_CONNECT_TIMEOUT_S;
  const aliveS = options.serverAliveIntervalS ?? DEFAULT_SERVER_ALIVE_S;

  const sshArgs = (marker: string): string[] => [
    // No user or system ssh_config: every setting that matters is here.
    '-F',
    '/dev/null',
    '-T',
    '-i',
    options.keyPath,
    '-l',
    user,
    '-p',
    String(port),
    '-o',
    'BatchMode=yes',
    '-o',
    'IdentitiesOnly=yes',
    '-o',
    'IdentityAgent=none',
    '-o',
    'PasswordAuthentication=no',
    '-o',
    'KbdInteractiveAuthentication=no',
    '-o',
    'StrictHostKeyChecking=accept-new',
    '-o',
    `UserKnownHostsFile=${options.knownHostsPath}`,
    '-o',
    'GlobalKnownHostsFile=/dev/null',
    '-o',
    'HashKnownHosts=no',
    '-o',
    'CheckHostIP=no',
    '-o',
    'UpdateHostKeys=no',
    '-o',
    `ConnectTimeout=${Math.max(1, Math.ceil(connectTimeoutS))}`,
    '-o',
    'ConnectionAttempts=1',
    '-o',
    `ServerAliveInterval=${aliveS}`,
    '-o',
    'ServerAliveCountMax=4',
    '-o',
    'ControlMaster=no',
    '-o',
    'ControlPath=none',
    '-o',
    'ForwardAgent=no',
    '-o',
    'ForwardX11=no',
    '-o',
    'LogLevel=ERROR',
    // `--` keeps a host that starts with "-" from being read as an option.
    '--',
    options.host,
    `bash -c ${quoteShellWord(REMOTE_WRAPPER)} bm-agent ${marker}`,
  ];

  const session = async (script: string, opts: SessionOptions): Promise<SessionOutcome> => {
    if (opts.signal?.aborted) throw abortError(opts.signal, 'the DPU command');
    const resolved = await findOnPath(sshProgram, options.toolPath);
    if (resolved === null) {
      throw new AgentError(
        'TOOL_NOT_FOUND',
        `${sshProgram} is not on PATH; the ramdisk needs openssh-client`,
        {
          details: { program: sshProgram, package: 'openssh-client', path: options.toolPath },
        },
      );
    }
    await mkdir(path.dirname(options.knownHostsPath), { recursive: true, mode: 0o700 });
    const marker = `bm-agent-started-${randomBytes(8).toString('hex')}`;
    const started = performance.now();
    const child = spawn(resolved, sshArgs(marker), {
      argv0: sshProgram,
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, PATH: options.toolPath },
    });

    const outcome: SessionOutcome = {
      exitCode: null,
      signal: null,
      started: false,
      timedOut: false,
      aborted: false,
      sshStderr: '',
      stdoutTail: '',
      stderrTail: '',
      stdout: '',
      stderr: '',
      durationMs: 0,
    };
    const sshTail = new OutputTail();
    const stdoutTail = new OutputTail();
    const stderrTail = new OutputTail();
    const stdoutAll = new Collector();
    const stderrAll = new Collector();
    const deliver = (stream: OutputStream, line: string): void => {
      const tail = stream === 'stdout' ? stdoutTail : stderrTail;
      tail.push(Buffer.from(`${line}\n`));
      if (opts.collect) (stream === 'stdout' ? stdoutAll : stderrAll).add(line);
      try {
        opts.onLine?.(stream, line);
      } catch (error) {
        logger.warn({ err: error }, 'DPU output listener failed');
      }
    };
    const stdoutLines = new LineSplitter((line) => deliver('stdout', line));
    const stderrLines = new LineSplitter((line) => {
      if (!outcome.started && line === marker) {
        outcome.started = true;
        return;
      }
      if (outcome.started) deliver('stderr', line);
      else sshTail.push(Buffer.from(`${line}\n`));
    });
    child.stdout.on('data', (chunk: Buffer) => stdoutLines.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => stderrLines.push(chunk));
    // ssh may exit before reading stdin (unreachable): the broken pipe is expected, not an error.
    child.stdin.on('error', () => undefined);
    child.stdin.write(`${Buffer.from(script, 'utf8').toString('base64')}\n`);

    let timer: NodeJS.Timeout | undefined;
    let stopping: Promise<void> | undefined;
    const stop = (): void => {
      stopping ??= terminate(child, killGraceMs);
    };
    if (opts.timeoutMs) {
      timer = setTimeout(() => {
        outcome.timedOut = true;
        stop();
      }, opts.timeoutMs);
    }
    const onAbort = (): void => {
      outcome.aborted = true;
      stop();
    };
    opts.signal?.addEventListener('abort', onAbort, { once: true });

    const spawnError = await new Promise<Error | null>((resolve) => {
      child.once('error', (error) => resolve(error));
      child.once('close', (code, signal) => {
        outcome.exitCode = code;
        outcome.signal = signal;
        resolve(null);
      });
    });
    clearTimeout(timer);
    opts.signal?.removeEventListener('abort', onAbort);
    child.stdin.destroy();
    await stopping;
    stdoutLines.end();
    stderrLines.end();
    if (spawnError !== null) {
      throw new AgentError('TOOL_FAILED', `${sshProgram} could not be started: ${spawnError.message}`, {
        details: { program: sshProgram },
        cause: spawnError,
      });
    }
    outcome.durationMs = Math.round(performance.now() - started);
    outcome.sshStderr = sshTail.text();
    outcome.stdoutTail = stdoutTail.text();
    outcome.stderrTail = stderrTail.text();
    outcome.stdout = stdoutAll.value();
    outcome.stderr = stderrAll.value();
    return outcome;
  };

  const unreachable = (outcome: SessionOutcome): AgentError => {
    const hint = lastLine(outcome.sshStderr);
    return new AgentError(
      'DPU_UNREACHABLE',
      `SSH to the DPU at ${options.host} failed${hint ? `: ${hint}` : ''}`,
      {
        details: {
          host: options.host,
          port,
          user,
          exit_code: outcome.exitCode,
          ssh_stderr_tail: outcome.sshStderr,
          seconds: outcome.durationMs / 1000,
        },
      },
    );
  };

  /** A run, retried once after forgetting the host's old key when the DPU was reinstalled. */
  const connect = async (script: string, sessionOptions: SessionOptions): Promise<SessionOutcome> => {
    const first = await session(script, sessionOptions);
    if (first.started || first.aborted || first.timedOut || !hostKeyChanged(first.sshStderr)) return first;
    const removed = await removeKnownHost(options.knownHostsPath, options.host, port);
    logger.warn(
      {
        host: options.host,
        knownHosts: options.knownHostsPath,
        removed,
        fingerprint: /SHA256:[A-Za-z0-9+/=]+/.exec(first.sshStderr)?.[0] ?? null,
      },
      'DPU host key changed (the DPU was reinstalled?); the old key was forgotten and the new one accepted',
    );
    return session(script, sessionOptions);
  };

  const runScript = async (script: string, scriptOptions: RunScriptOptions = {}): Promise<ScriptResult> => {
    const outcome = await connect(script, {
      collect: false,
      ...(scriptOptions.timeoutMs ? { timeoutMs: scriptOptions.timeoutMs } : {}),
      ...(scriptOptions.signal ? { signal: scriptOptions.signal } : {}),
      ...(scriptOptions.onLine ? { onLine: scriptOptions.onLine } : {}),
    });
    const seconds = Math.round(outcome.durationMs) / 1000;
    const tails = {
      stdout_tail: outcome.stdoutTail,
      stderr_tail: outcome.started ? outcome.stderrTail : outcome.sshStderr,
    };
    if (outcome.aborted && scriptOptions.signal) throw abortError(scriptOptions.signal, 'the DPU script');
    if (outcome.timedOut) {
      throw new AgentError(
        'DPU_SCRIPT_TIMEOUT',
        `the script on the DPU at ${options.host} did not finish within ${(scriptOptions.timeoutMs ?? 0) / 1000} s and was stopped`,
        {
          details: {
            host: options.host,
            timeout_s: (scriptOptions.timeoutMs ?? 0) / 1000,
            seconds,
            ...tails,
          },
        },
      );
    }
    if (!outcome.started && (outcome.exitCode === SSH_FAILURE || outcome.exitCode === null)) {
      throw unreachable(outcome);
    }
    if (outcome.exitCode === 0) return { exit_code: 0, ...tails, seconds };
    const exitCode = outcome.exitCode ?? -1;
    const hint = lastLine(tails.stderr_tail);
    throw new AgentError(
      'DPU_SCRIPT_FAILED',
      `the script on the DPU at ${options.host} exited with code ${exitCode}${hint ? `: ${hint}` : ''}`,
      { details: { host: options.host, exit_code: exitCode, seconds, ...tails } },
    );
  };

  const run: ToolRunner['run'] = async (program, args, runOptions = {}) => {
    const argv = [program, ...args];
    const command = `exec ${argv.map(quoteShellWord).join(' ')}\n`;
    const outcome = await connect(command, {
      collect: true,
      ...(runOptions.timeoutMs ? { timeoutMs: runOptions.timeoutMs } : {}),
      ...(runOptions.signal ? { signal: runOptions.signal } : {}),
    });
    if (outcome.aborted && runOptions.signal) throw abortError(runOptions.signal, `${program} on the DPU`);
    if (
      !outcome.timedOut &&
      !outcome.started &&
      (outcome.exitCode === SSH_FAILURE || outcome.exitCode === null)
    ) {
      throw unreachable(outcome);
    }
    const result: ProcessResult = {
      argv,
      exitCode: outcome.timedOut ? null : outcome.exitCode,
      signal: outcome.timedOut ? 'SIGTERM' : null,
      timedOut: outcome.timedOut,
      cancelled: false,
      durationMs: outcome.durationMs,
      stdout: outcome.stdout,
      stderr: outcome.started ? outcome.stderr : outcome.sshStderr,
    };
    if (result.exitCode === 0) return result;
    if (result.exitCode === 127 && /exec: .*: not found/.test(outcome.stderrTail)) {
      throw new AgentError('TOOL_NOT_FOUND', `${program} is not on the DPU's PATH`, {
        details: { program, where: 'dpu', host: options.host },
      });
    }
    const hint = lastLine(result.stderr);
    const what = result.timedOut
      ? `timed out after ${runOptions.timeoutMs ?? '?'} ms and was stopped`
      : `exited with code ${result.exitCode ?? 'unknown'}`;
    throw new AgentError(
      'TOOL_FAILED',
      `${program} on the DPU at ${options.host} ${what}${hint ? `: ${hint}` : ''}`,
      {
        details: {
          argv,
          where: 'dpu',
          host: options.host,
          exitCode: result.exitCode,
          signal: result.signal,
          timedOut: result.timedOut,
          cancelled: false,
          durationMs: result.durationMs,
          stdoutTail: outcome.stdoutTail,
          stderrTail: outcome.started ? outcome.stderrTail : outcome.sshStderr,
        },
      },
    );
  };

  return { where: 'dpu', host: options.host, run, runScript };
};
