/** Runs the real agent binary (dist/agent/main.js) as a child process for integration tests and the demo. */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const AGENT_MAIN = fileURLToPath(new URL('../../agent/main.js', import.meta.url));

export interface SpawnedAgent {
  child: ChildProcess;
  /** Parsed NDJSON log records printed on stdout. */
  logs: Array<Record<string, unknown>>;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stop(): Promise<void>;
}

export interface SpawnAgentOptions {
  args?: string[];
  env?: Record<string, string>;
  /** Kernel command line the agent reads (through BMA_CMDLINE). */
  cmdline?: string;
  onLog?: (record: Record<string, unknown>) => void;
}

/** A kernel command line file of the test's own, so the agent never reads this machine's. */
export const writeCmdline = async (text: string): Promise<string> => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bma-cmdline-'));
  const file = path.join(dir, 'cmdline');
  await writeFile(file, `${text}\n`);
  return file;
};

export const spawnAgent = async (verb: string[], options: SpawnAgentOptions = {}): Promise<SpawnedAgent> => {
  const cmdlinePath = await writeCmdline(options.cmdline ?? '');
  const child = spawn(process.execPath, [AGENT_MAIN, ...verb, ...(options.args ?? [])], {
    env: { ...process.env, BMA_CMDLINE: cmdlinePath, BMA_POWER_BACKEND: 'none', ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: Array<Record<string, unknown>> = [];
  let stderr = '';
  let buffered = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    buffered += chunk;
    const lines = buffered.split('\n');
    buffered = lines.pop() ?? '';
    for (const line of lines) {
      if (!line.trim()) continue;
      try {
        const record = JSON.parse(line) as Record<string, unknown>;
        logs.push(record);
        options.onLog?.(record);
      } catch {
        logs.push({ unparsed: line });
      }
    }
  });
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      void rm(path.dirname(cmdlinePath), { recursive: true, force: true });
      resolve({ code, signal });
    }),
  );
  return {
    child,
    logs,
    stderr: () => stderr,
    exited,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(timer);
      }
    },
  };
};

/** Runs a CLI verb to completion and returns its exit code and output. */
export const runCli = async (
  args: string[],
  options: { env?: Record<string, string>; cmdline?: string } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> => {
  const cmdlinePath = await writeCmdline(options.cmdline ?? '');
  const child = spawn(process.execPath, [AGENT_MAIN, ...args], {
    env: { ...process.env, BMA_CMDLINE: cmdlinePath, BMA_POWER_BACKEND: 'none', ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const code = await new Promise<number | null>((resolve) =>
    child.once('exit', (exitCode) => resolve(exitCode)),
  );
  await rm(path.dirname(cmdlinePath), { recursive: true, force: true });
  return { code, stdout, stderr };
};
