/**
 * Runs Ironic's all-in-one process (API + conductor, `ironic.cmd.singleprocess`) on 127.0.0.1 for a
 * test: a fresh work dir, a fresh sqlite schema, a free port, its own process group so that stop()
 * can take down whatever it started.
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { AgentError } from '../../../agent/util/errors.js';
import { runProcess, tailOf } from '../../../agent/util/run-process.js';
import { writeIronicConf, type IronicConfigOptions, type IronicPaths } from './config.js';
import { IronicHarnessError } from './errors.js';
import { SYSTEM_PYTHON } from './install.js';
import { processGroupMembers } from './processes.js';

export interface StartIronicOptions extends Omit<IronicConfigOptions, 'workDir' | 'apiPort'> {
  /** A directory of the caller's, which stop() never deletes; by default a new temp dir that it does. */
  workDir?: string;
  /** Keep the temp work dir on stop() (logs, database, deploy logs); BMA_KEEP_IRONIC=1 does the same. */
  keepWorkDir?: boolean;
  /** Start-up takes 5–15 s here, most of it importing Ironic. */
  startTimeoutMs?: number;
  /** Between SIGTERM and SIGKILL on stop(). */
  stopGraceMs?: number;
  /** More environment for Ironic's process, e.g. `http_proxy` (see guest-proxy.ts). */
  env?: Readonly<Record<string, string>>;
}

export interface StopIronicOptions {
  /** Overrides the start option, e.g. `{keepWorkDir: testFailed}`. */
  keepWorkDir?: boolean;
}

export interface IronicService {
  /** `http://127.0.0.1:<port>`, without a trailing slash. */
  apiUrl: string;
  port: number;
  workDir: string;
  confPath: string;
  /** Ironic's log, at debug level: `moved to provision state`, every agent command and its result. */
  logPath: string;
  /** Start-up tracebacks. */
  stdoutPath: string;
  deployLogsDir: string;
  /** [deploy] http_root. */
  httpRoot: string;
  /** The process, which also leads its own process group. */
  pid: number;
  /** From spawning the process to the API answering. */
  startMs: number;
  /** Time the schema creation took. */
  dbsyncMs: number;
  running(): boolean;
  /** The last lines of the log and of stdout, for an error message. */
  logTail(lines?: number): Promise<string>;
  /** SIGTERM to the group, SIGKILL after the grace time, then waits until no member is left. */
  stop(options?: StopIronicOptions): Promise<void>;
}

const DEFAULT_START_TIMEOUT_MS = 90_000;
const DEFAULT_STOP_GRACE_MS = 10_000;
const DBSYNC_TIMEOUT_MS = 120_000;
const GROUP_GONE_TIMEOUT_MS = 10_000;

// Run through `python3 -c`: Debian's python3-ironic ships the modules but no /usr/bin/ironic* scripts.
const SINGLE_PROCESS =
  'import sys; sys.argv[0] = "ironic"; from ironic.cmd import singleprocess; singleprocess.main()';
const DBSYNC = 'import sys; sys.argv[0] = "ironic-dbsync"; from ironic.cmd import dbsync; dbsync.main()';

/** A port nothing listens on right now: bind port 0 on loopback, read it, close. */
export const pickFreePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => (port > 0 ? resolve(port) : reject(new Error('no port was assigned'))));
    });
  });

const readTail = async (file: string, lines: number): Promise<string> => {
  try {
    return tailOf(await readFile(file, 'utf8'), lines, 16_384);
  } catch {
    return '(none)';
  }
};

const logTailOf = async (paths: IronicPaths, lines = 30): Promise<string> =>
  `--- ${paths.stdoutPath}\n${await readTail(paths.stdoutPath, lines)}\n--- ${paths.logPath}\n${await readTail(paths.logPath, lines)}`;

const createSchema = async (paths: IronicPaths): Promise<number> => {
  const started = Date.now();
  try {
    const result = await runProcess(
      SYSTEM_PYTHON,
      ['-c', DBSYNC, '--config-file', paths.confPath, 'create_schema'],
      { timeoutMs: DBSYNC_TIMEOUT_MS },
    );
    await writeFile(paths.dbsyncLogPath, result.stdout + result.stderr);
  } catch (error) {
    const details = AgentError.is(error) ? error.details : {};
    await writeFile(paths.dbsyncLogPath, JSON.stringify(details, null, 2));
    throw new IronicHarnessError(
      'IRONIC_START_FAILED',
      `creating Ironic's schema failed: ${error instanceof Error ? error.message : String(error)}\n` +
        `${String(details.stderrTail ?? '')}`,
      { details, cause: error },
    );
  }
  return Date.now() - started;
};

const signalGroup = (pgid: number, signal: NodeJS.Signals): void => {
  try {
    process.kill(-pgid, signal);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
  }
};

const waitGroupGone = async (pgid: number, timeoutMs: number): Promise<void> => {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const members = await processGroupMembers(pgid);
    if (members.length === 0) return;
    if (Date.now() > deadline) {
      throw new IronicHarnessError(
        'IRONIC_STOP_FAILED',
        `processes of Ironic's group ${pgid} outlived SIGKILL: ${members.join(', ')}`,
      );
    }
    signalGroup(pgid, 'SIGKILL');
    await sleep(100);
  }
};

/** True once `GET /v1` answers 200 with the v1 document. */
const apiAnswers = async (apiUrl: string): Promise<boolean> => {
  try {
    const response = await fetch(`${apiUrl}/v1`, { signal: AbortSignal.timeout(2000) });
    const body: unknown = await response.json();
    return response.status === 200 && typeof body === 'object' && body !== null && 'id' in body;
  } catch {
    return false;
  }
};

export const startIronic = async (options: StartIronicOptions = {}): Promise<IronicService> => {
  const {
    workDir: givenWorkDir,
    keepWorkDir = process.env.BMA_KEEP_IRONIC === '1',
    startTimeoutMs = DEFAULT_START_TIMEOUT_MS,
    stopGraceMs = DEFAULT_STOP_GRACE_MS,
    env: extraEnv = {},
    ...configOptions
  } = options;
  if (givenWorkDir !== undefined) await mkdir(givenWorkDir, { recursive: true });
  const workDir = givenWorkDir ?? (await mkdtemp(path.join(os.tmpdir(), 'bma-ironic-')));
  const ownsWorkDir = givenWorkDir === undefined;
  const removeWorkDir = async (keep: boolean): Promise<void> => {
    if (ownsWorkDir && !keep) await rm(workDir, { recursive: true, force: true });
  };

  let paths: IronicPaths;
  let dbsyncMs: number;
  let port: number;
  try {
    port = await pickFreePort();
    paths = await writeIronicConf({ ...configOptions, workDir, apiPort: port });
    dbsyncMs = await createSchema(paths);
  } catch (error) {
    await removeWorkDir(keepWorkDir);
    throw error;
  }

  const apiUrl = `http://127.0.0.1:${port}`;
  const started = Date.now();
  const output = openSync(paths.stdoutPath, 'a');
  const child = spawn(SYSTEM_PYTHON, ['-c', SINGLE_PROCESS, '--config-file', paths.confPath], {
    cwd: workDir,
    // A new session and process group: stop() signals the group, not just the Python process.
    detached: true,
    stdio: ['ignore', output, output],
    env: { ...process.env, ...extraEnv, PYTHONUNBUFFERED: '1' },
  });
  closeSync(output);
  let spawnError: Error | undefined;
  child.once('error', (error) => (spawnError = error));
  const pgid = child.pid;
  if (pgid === undefined) {
    await removeWorkDir(keepWorkDir);
    // The 'error' event comes on a later tick.
    await sleep(0);
    throw new IronicHarnessError(
      'IRONIC_START_FAILED',
      `could not spawn ${SYSTEM_PYTHON}: ${spawnError?.message ?? 'no pid'}`,
      { cause: spawnError },
    );
  }
  let exitStatus: string | null = null;
  const exited = new Promise<void>((resolve) =>
    child.once('exit', (code, signal) => {
      exitStatus = signal ? `killed by ${signal}` : `exited with code ${String(code)}`;
      resolve();
    }),
  );
  // A test that forgets stop() must neither hang on the child nor leave Ironic running once it exits.
  child.unref();
  const killOnExit = (): void => signalGroup(pgid, 'SIGKILL');
  process.once('exit', killOnExit);

  let stopping: Promise<void> | undefined;
  const stop = (stopOptions: StopIronicOptions = {}): Promise<void> => {
    stopping ??= (async () => {
      // Keeps the event loop alive until the exit is seen.
      child.ref();
      signalGroup(pgid, 'SIGTERM');
      // Unreferenced: a pending grace timer must not hold the test process open after the exit.
      await Promise.race([exited, sleep(stopGraceMs, undefined, { ref: false })]);
      // Also catches members that outlived the leader.
      signalGroup(pgid, 'SIGKILL');
      await exited;
      await waitGroupGone(pgid, GROUP_GONE_TIMEOUT_MS);
      process.removeListener('exit', killOnExit);
      await removeWorkDir(stopOptions.keepWorkDir ?? keepWorkDir);
    })();
    return stopping;
  };

  const deadline = started + startTimeoutMs;
  while (!(await apiAnswers(apiUrl))) {
    if (exitStatus !== null || Date.now() > deadline) {
      const what =
        exitStatus !== null
          ? `Ironic ${exitStatus as string} before its API answered`
          : `Ironic's API did not answer on ${apiUrl}/v1 within ${startTimeoutMs} ms`;
      const tail = await logTailOf(paths);
      await stop();
      throw new IronicHarnessError('IRONIC_START_FAILED', `${what}\n${tail}`, {
        details: { workDir, apiUrl },
      });
    }
    await sleep(200);
  }

  return {
    apiUrl,
    port,
    workDir,
    confPath: paths.confPath,
    logPath: paths.logPath,
    stdoutPath: paths.stdoutPath,
    deployLogsDir: paths.deployLogsDir,
    httpRoot: paths.httpRoot,
    pid: pgid,
    startMs: Date.now() - started,
    dbsyncMs,
    running: () => exitStatus === null,
    logTail: (lines?: number) => logTailOf(paths, lines),
    stop,
  };
};
