import { readFile, readdir, readlink, realpath, stat } from 'node:fs/promises';
import path from 'node:path';

// Sysfs and procfs reads for the inventory. Attributes may be absent, unreadable or fail with
// EINVAL (carrier of a down link); every such case is null, so one odd file never fails a part.

export const readAttribute = async (file: string): Promise<string | null> => {
  try {
    const text = (await readFile(file, 'utf8')).trim();
    return text === '' ? null : text;
  } catch {
    return null;
  }
};

export const readBinary = async (file: string): Promise<Buffer | null> => {
  try {
    return await readFile(file);
  } catch {
    return null;
  }
};

/** Follows links, like Python's os.path.exists: a dangling link does not exist. */
export const exists = async (file: string): Promise<boolean> => {
  try {
    await stat(file);
    return true;
  } catch {
    return false;
  }
};

export const isDirectory = async (file: string): Promise<boolean> => {
  try {
    return (await stat(file)).isDirectory();
  } catch {
    return false;
  }
};

/** Entries in sorted order, or none when the directory cannot be listed. */
export const listDirectory = async (directory: string): Promise<string[]> => {
  try {
    return (await readdir(directory)).sort();
  } catch {
    return [];
  }
};

/** The last component of a link's target (`driver` -> "mlx5_core"), or null. */
export const linkName = async (file: string): Promise<string | null> => {
  try {
    return path.basename(await readlink(file));
  } catch {
    return null;
  }
};

export const resolvedPath = async (file: string): Promise<string | null> => {
  try {
    return await realpath(file);
  } catch {
    return null;
  }
};

export const toInteger = (value: string | null): number | null => {
  if (value === null || !/^-?\d+$/.test(value)) return null;
  const number = Number.parseInt(value, 10);
  return Number.isSafeInteger(number) ? number : null;
};

/** "0x15b3" -> "15b3"; anything that is not a hex number is null. */
export const stripHexPrefix = (value: string | null): string | null => {
  const match = value === null ? null : /^(?:0x)?([0-9a-f]+)$/i.exec(value);
  return match?.[1]?.toLowerCase() ?? null;
};
