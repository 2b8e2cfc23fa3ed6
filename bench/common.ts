/** Small helpers every benchmark script uses. */
import { readFile } from 'node:fs/promises';

export const MiB = 1024 * 1024;

/** `--name N` from the command line, a positive integer, else the fallback. */
export const argument = (name: string, fallback: number): number => {
  const index = process.argv.indexOf(`--${name}`);
  const value = index >= 0 ? Number(process.argv[index + 1]) : NaN;
  return Number.isInteger(value) && value > 0 ? value : fallback;
};

export const median = (values: number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[middle] ?? 0)
    : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2;
};

/** `--name VALUE` from the command line as text, else the fallback. */
export const textArgument = (name: string, fallback: string): string => {
  const index = process.argv.indexOf(`--${name}`);
  const value = index >= 0 ? process.argv[index + 1] : undefined;
  return value ?? fallback;
};

/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ, 100 on every Linux build here). */
const TICKS_PER_SECOND = 100;

/**
 * CPU seconds (user + system) from /proc/<pid>/stat: the process's own, or with `children` those
 * of its children it has waited for (a finished pipeline, whole).
 */
export const procCpuSeconds = async (pid: number | 'self', children = false): Promise<number> => {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name, which may itself hold spaces: field 3 (state) is index 0.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const [user, system] = children ? [fields[13], fields[14]] : [fields[11], fields[12]];
  return (Number(user) + Number(system)) / TICKS_PER_SECOND;
};
