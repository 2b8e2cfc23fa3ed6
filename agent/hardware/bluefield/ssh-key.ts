/**
 * The agent's own SSH identity for the DPUs' Arm systems: one ed25519 key pair in the state
 * directory, made at start and reused for as long as the directory lives, so a DPU that was given
 * the public key (through bf.cfg at install) keeps accepting the agent after a restart.
 */
import { chmod, mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { AgentError } from '../../util/errors.js';
import { silentLogger, type Logger } from '../../util/logger.js';
import { runProcess } from '../../util/run-process.js';

export const KEY_FILE = 'dpu_ed25519';
export const KNOWN_HOSTS_FILE = 'dpu_known_hosts';

export interface AgentKey {
  privateKeyPath: string;
  publicKeyPath: string;
  /** The `ssh-ed25519 AAAA... comment` line, as it goes into authorized_keys. */
  publicKey: string;
  /** Where the DPUs' host keys are remembered (the file need not exist yet). */
  knownHostsPath: string;
  /** True when this call generated the pair. */
  created: boolean;
}

export interface EnsureKeyOptions {
  stateDir: string;
  /** Where ssh-keygen is looked up. */
  toolPath: string;
  signal?: AbortSignal;
  logger?: Logger;
  comment?: string;
}

const PUBLIC_KEY = /^ssh-ed25519 [A-Za-z0-9+/]+={0,3}(?: .*)?$/;
const KEYGEN_TIMEOUT_MS = 30_000;

const readPublicKey = async (file: string): Promise<string | null> => {
  try {
    const line = (await readFile(file, 'utf8')).trim();
    return PUBLIC_KEY.test(line) ? line : null;
  } catch {
    return null;
  }
};

const fileExists = async (file: string): Promise<boolean> => {
  try {
    return (await stat(file)).isFile();
  } catch {
    return false;
  }
};

const writePublicKey = (file: string, line: string): Promise<void> =>
  writeFile(file, `${line}\n`, { mode: 0o644 });

// Concurrent callers in one process share one generation instead of racing ssh-keygen.
const pending = new Map<string, Promise<AgentKey>>();

const ensure = async (options: EnsureKeyOptions): Promise<AgentKey> => {
  const logger = options.logger ?? silentLogger();
  const stateDir = path.resolve(options.stateDir);
  const privateKeyPath = path.join(stateDir, KEY_FILE);
  const publicKeyPath = `${privateKeyPath}.pub`;
  const knownHostsPath = path.join(stateDir, KNOWN_HOSTS_FILE);
  const env = { PATH: options.toolPath };
  const runOptions = {
    env,
    timeoutMs: KEYGEN_TIMEOUT_MS,
    ...(options.signal ? { signal: options.signal } : {}),
  };
  await mkdir(stateDir, { recursive: true, mode: 0o700 });

  if (await fileExists(privateKeyPath)) {
    // ssh refuses a private key that others can read.
    await chmod(privateKeyPath, 0o600);
    const existing = await readPublicKey(publicKeyPath);
    if (existing !== null)
      return { privateKeyPath, publicKeyPath, publicKey: existing, knownHostsPath, created: false };
    try {
      const derived = await runProcess('ssh-keygen', ['-y', '-f', privateKeyPath], runOptions);
      const line = derived.stdout.trim();
      if (PUBLIC_KEY.test(line)) {
        await writePublicKey(publicKeyPath, line);
        logger.info({ publicKeyPath }, 'DPU SSH public key re-derived from the private key');
        return { privateKeyPath, publicKeyPath, publicKey: line, knownHostsPath, created: false };
      }
    } catch (error) {
      if (AgentError.is(error) && (error.code === 'CANCELLED' || error.code === 'TOOL_NOT_FOUND'))
        throw error;
    }
    const aside = `${privateKeyPath}.unusable-${Date.now()}`;
    await rename(privateKeyPath, aside);
    logger.warn({ privateKeyPath, movedTo: aside }, 'DPU SSH key unusable; generating a new one');
  }

  // Generated under a temporary name and renamed, so a crash never leaves half a key behind.
  const temporary = path.join(stateDir, `.${KEY_FILE}.${process.pid}.tmp`);
  await rm(temporary, { force: true });
  await rm(`${temporary}.pub`, { force: true });
  const comment = options.comment ?? `bm-agent@${os.hostname()}`;
  await runProcess(
    'ssh-keygen',
    ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', temporary],
    runOptions,
  );
  const publicKey = await readPublicKey(`${temporary}.pub`);
  if (publicKey === null) {
    throw new AgentError('TOOL_FAILED', `ssh-keygen wrote no usable public key to ${temporary}.pub`, {
      details: { program: 'ssh-keygen' },
    });
  }
  await chmod(temporary, 0o600);
  await rename(`${temporary}.pub`, publicKeyPath);
  await rename(temporary, privateKeyPath);
  logger.info({ privateKeyPath }, 'DPU SSH key pair generated');
  return { privateKeyPath, publicKeyPath, publicKey, knownHostsPath, created: true };
};

/** The agent's key pair in `stateDir`, generated with `ssh-keygen -t ed25519` when absent. */
export const ensureAgentKey = (options: EnsureKeyOptions): Promise<AgentKey> => {
  const key = path.resolve(options.stateDir);
  const running = pending.get(key);
  if (running) return running;
  const started = ensure(options).finally(() => pending.delete(key));
  pending.set(key, started);
  return started;
};
