/**
 * A minimal ustar (POSIX.1-1988) writer for the system-logs archive: regular files only, names
 * of at most 100 bytes, everything in memory. Enough for `tar -x` everywhere, and no dependency.
 */
import { AgentError } from '../util/errors.js';

export interface TarEntry {
  /** A relative path, at most 100 bytes of UTF-8, no `..` component. */
  name: string;
  data: Buffer;
  /** Defaults to 0644. */
  mode?: number;
  /** Defaults to now. */
  mtime?: Date;
}

export const TAR_BLOCK = 512;
const NAME_BYTES = 100;
/** The largest size an 11-digit octal field holds: 8 GiB - 1. */
const MAX_SIZE = 8 ** 11 - 1;

/** `value` as zero-padded octal digits followed by a NUL, filling `width` bytes. */
const octal = (value: number, width: number): string => `${value.toString(8).padStart(width - 1, '0')}\0`;

const checkName = (name: string): void => {
  const bytes = Buffer.byteLength(name);
  const problem =
    name === ''
      ? 'is empty'
      : bytes > NAME_BYTES
        ? `is ${bytes} bytes long (at most ${NAME_BYTES})`
        : name.includes('\0')
          ? 'contains a NUL byte'
          : name.startsWith('/')
            ? 'is absolute'
            : name.split('/').some((part) => part === '..' || part === '')
              ? 'has an empty or `..` component'
              : null;
  if (problem !== null)
    throw new AgentError('INTERNAL', `tar entry name ${JSON.stringify(name)} ${problem}`, {
      details: { name },
    });
};

/** One 512-byte ustar header; the checksum is computed with its own field read as spaces. */
export const tarHeader = (entry: TarEntry): Buffer => {
  checkName(entry.name);
  if (entry.data.length > MAX_SIZE)
    throw new AgentError('INTERNAL', `tar entry ${entry.name} is larger than a ustar header can say`);
  const header = Buffer.alloc(TAR_BLOCK);
  const put = (offset: number, text: string): void => {
    header.write(text, offset, 'utf8');
  };
  const mtime = Math.floor((entry.mtime ?? new Date()).getTime() / 1000);
  put(0, entry.name);
  put(100, octal((entry.mode ?? 0o644) & 0o7777, 8));
  put(108, octal(0, 8)); // uid
  put(116, octal(0, 8)); // gid
  put(124, octal(entry.data.length, 12));
  put(136, octal(Math.max(0, mtime), 12));
  put(148, '        '); // the checksum field counts as spaces while summing
  put(156, '0'); // regular file
  put(257, 'ustar\0');
  put(263, '00');
  put(265, 'root');
  put(297, 'root');
  let sum = 0;
  for (const byte of header) sum += byte;
  // Six octal digits, a NUL and a space: the form every tar reads.
  put(148, `${sum.toString(8).padStart(6, '0')}\0 `);
  return header;
};

/** The whole archive: each header, its data padded to a block, then two zero blocks. */
export const createTar = (entries: readonly TarEntry[]): Buffer => {
  const seen = new Set<string>();
  const parts: Buffer[] = [];
  for (const entry of entries) {
    if (seen.has(entry.name))
      throw new AgentError('INTERNAL', `tar entry ${entry.name} is given twice`, {
        details: { name: entry.name },
      });
    seen.add(entry.name);
    parts.push(tarHeader(entry), entry.data);
    const padding = (TAR_BLOCK - (entry.data.length % TAR_BLOCK)) % TAR_BLOCK;
    if (padding > 0) parts.push(Buffer.alloc(padding));
  }
  parts.push(Buffer.alloc(2 * TAR_BLOCK));
  return Buffer.concat(parts);
};
