/**
 * The image server of the benchmarks, in a process of its own so its CPU is not counted as the
 * agent's: test/support/faulty-http-server.js serving one file, which prints {"url": …} once
 * listening and stops when its stdin closes.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface } from 'node:readline';

export interface Served {
  url: string;
  child: ChildProcessWithoutNullStreams;
}

export const serveFile = async (file: string): Promise<Served> => {
  const child = spawn(process.execPath, [
    new URL('../test/support/faulty-http-server.js', import.meta.url).pathname,
    file,
  ]);
  child.stderr.pipe(process.stderr);
  const lines = createInterface({ input: child.stdout });
  try {
    const first = await new Promise<string>((resolve, reject) => {
      lines.once('line', resolve);
      child.once('exit', (code) => reject(new Error(`the image server exited ${String(code)}`)));
    });
    const parsed = JSON.parse(first) as { url?: unknown };
    if (typeof parsed.url !== 'string') throw new Error(`the image server printed ${first}`);
    return { url: parsed.url, child };
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  } finally {
    lines.close();
  }
};

export const stopServer = async (served: Served): Promise<void> => {
  if (served.child.exitCode !== null || served.child.signalCode !== null) return;
  const exited = new Promise((resolve) => served.child.once('exit', resolve));
  served.child.stdin.end();
  const timer = setTimeout(() => served.child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
};
