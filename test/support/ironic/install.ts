/**
 * Makes Debian's Ironic (python3-ironic, 21.4 in Debian 12) importable by the system Python, installing
 * it when it is missing and this process may do so. Only the library package is installed: the
 * ironic-api / ironic-conductor packages bring systemd units, dbconfig-common and much more that the
 * tests never use, since they run the all-in-one process themselves.
 */
import { constants as fsConstants } from 'node:fs';
import { access, writeFile, rm } from 'node:fs/promises';
import { AgentError } from '../../../agent/util/errors.js';
import { findOnPath, runProcess, tailOf } from '../../../agent/util/run-process.js';
import { IronicHarnessError } from './errors.js';

/** Debian's interpreter: a `python3` earlier on PATH (pyenv, venv) does not see Debian's packages. */
export const SYSTEM_PYTHON = '/usr/bin/python3';
export const IRONIC_PACKAGE = 'python3-ironic';

export type IronicAvailability =
  | { ok: true; version: string | null; installedNow: boolean; installMs: number }
  | { ok: false; reason: string };

export interface EnsureIronicOptions {
  /** Covers waiting for another apt/dpkg to finish (up to 15 min) plus the install itself (~4 min). */
  installTimeoutMs?: number;
}

const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const LOCK_TIMEOUT_S = 900;
const DEFAULT_INSTALL_TIMEOUT_MS = 25 * 60_000;
const POLICY_RC_D = '/usr/sbin/policy-rc.d';
// Looked up without importing: importing Ironic takes seconds (oslo, eventlet, the driver entry points).
const PROBE = [
  'import importlib.util, sys',
  "wanted = ('ironic.cmd.singleprocess', 'ironic.cmd.dbsync')",
  'sys.exit(0 if all(importlib.util.find_spec(m) is not None for m in wanted) else 1)',
].join('\n');

const isExecutable = async (file: string): Promise<boolean> => {
  try {
    await access(file, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
};

/** True when the system Python can find the modules the harness runs (single process and dbsync). */
export const ironicAvailable = async (): Promise<boolean> => {
  if (!(await isExecutable(SYSTEM_PYTHON))) return false;
  try {
    await runProcess(SYSTEM_PYTHON, ['-c', PROBE], { timeoutMs: 30_000 });
    return true;
  } catch (error) {
    if (AgentError.is(error) && error.code === 'TOOL_FAILED' && error.details.exitCode === 1) return false;
    throw error;
  }
};

/** The installed package's Debian version, or null when dpkg does not know it (e.g. a pip install). */
export const ironicPackageVersion = async (): Promise<string | null> => {
  try {
    const { stdout } = await runProcess('dpkg-query', ['-W', '-f=${Version}', IRONIC_PACKAGE], {
      env: { PATH: SYSTEM_PATH },
      timeoutMs: 30_000,
    });
    return stdout.trim() === '' ? null : stdout.trim();
  } catch {
    return null;
  }
};

export interface InstallFacts {
  uid?: number;
  env?: NodeJS.ProcessEnv;
  /** Where apt-get is looked for. */
  searchPath?: string;
}

/** Why the package cannot be installed here, or null when it can; by default for this process. */
export const installSkipReason = async (facts: InstallFacts = {}): Promise<string | null> => {
  const { uid = process.getuid?.(), env = process.env, searchPath = SYSTEM_PATH } = facts;
  if (env.BMA_IRONIC_INSTALL === '0') {
    return `${IRONIC_PACKAGE} is not installed and BMA_IRONIC_INSTALL=0 forbids installing it`;
  }
  if (uid !== 0) {
    return `${IRONIC_PACKAGE} is not installed and installing it needs root (run as root, or apt-get install --no-install-recommends ${IRONIC_PACKAGE})`;
  }
  if ((await findOnPath('apt-get', searchPath)) === null) {
    return `${IRONIC_PACKAGE} is not installed and there is no apt-get to install it (Debian 12 is needed)`;
  }
  return null;
};

const aptGet = async (args: string[], timeoutMs: number): Promise<void> => {
  try {
    await runProcess('apt-get', ['-q', '-o', `DPkg::Lock::Timeout=${LOCK_TIMEOUT_S}`, ...args], {
      env: { PATH: SYSTEM_PATH, DEBIAN_FRONTEND: 'noninteractive' },
      timeoutMs,
    });
  } catch (error) {
    const details = AgentError.is(error) ? error.details : {};
    const stderr = typeof details.stderrTail === 'string' ? details.stderrTail : '';
    const stdout = typeof details.stdoutTail === 'string' ? details.stdoutTail : '';
    throw new IronicHarnessError(
      'IRONIC_INSTALL_FAILED',
      `apt-get ${args.join(' ')} failed: ${error instanceof Error ? error.message : String(error)}\n${tailOf(stderr || stdout, 10)}`,
      { details, cause: error },
    );
  }
};

const install = async (timeoutMs: number): Promise<void> => {
  // Package scripts must not start system-wide daemons; the tests run their own processes.
  let madePolicy = false;
  try {
    await access(POLICY_RC_D);
  } catch {
    await writeFile(POLICY_RC_D, '#!/bin/sh\nexit 101\n', { mode: 0o755 });
    madePolicy = true;
  }
  try {
    const started = Date.now();
    await aptGet(['update'], timeoutMs);
    await aptGet(
      ['install', '-y', '--no-install-recommends', IRONIC_PACKAGE],
      Math.max(1, timeoutMs - (Date.now() - started)),
    );
  } finally {
    if (madePolicy) await rm(POLICY_RC_D, { force: true });
  }
};

let ensuring: Promise<IronicAvailability> | undefined;

/**
 * Ironic ready to run, installing it when missing. `{ok: false}` (a reason to skip) only when it is
 * missing and cannot be installed here (not root, no apt, or forbidden); a failed install throws.
 * Concurrent callers in one process share one attempt.
 */
export const ensureIronic = (options: EnsureIronicOptions = {}): Promise<IronicAvailability> => {
  ensuring ??= (async (): Promise<IronicAvailability> => {
    if (await ironicAvailable()) {
      return { ok: true, version: await ironicPackageVersion(), installedNow: false, installMs: 0 };
    }
    const reason = await installSkipReason();
    if (reason !== null) return { ok: false, reason };
    const started = Date.now();
    await install(options.installTimeoutMs ?? DEFAULT_INSTALL_TIMEOUT_MS);
    const installMs = Date.now() - started;
    if (!(await ironicAvailable())) {
      throw new IronicHarnessError(
        'IRONIC_INSTALL_FAILED',
        `${IRONIC_PACKAGE} was installed but ${SYSTEM_PYTHON} still cannot find ironic.cmd.singleprocess`,
      );
    }
    return { ok: true, version: await ironicPackageVersion(), installedNow: true, installMs };
  })();
  // A failed attempt may be retried by a later caller (e.g. after the dpkg lock holder finished).
  ensuring.catch(() => (ensuring = undefined));
  return ensuring;
};
