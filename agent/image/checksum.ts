/**
 * The expected checksum of an image, from whichever form a conductor sends (IPA's semantics,
 * ipa.md §7.3), and the inline hasher that checks the downloaded bytes against it. The hash is over
 * the bytes as served (a compressed or qcow2 image is hashed compressed), like IPA.
 */
import { createHash, type Hash } from 'node:crypto';
import type { ExpectedChecksum, HashAlgorithm } from './contracts.js';
import { AgentError } from '../util/errors.js';

/** IPA's image_info fields; os_hash_value may itself be the URL of a checksums file. */
export interface OsHashSpec {
  os_hash_algo?: string;
  os_hash_value?: string;
}

export type ChecksumSpec = string | OsHashSpec | null | undefined;

export type FetchTextFn = (url: string) => Promise<string>;

/** Hex digits per digest: how a bare value names its algorithm (IPA master's rule). */
const HEX_LENGTHS: Record<HashAlgorithm, number> = { md5: 32, sha256: 64, sha512: 128 };

const ALGORITHMS = Object.keys(HEX_LENGTHS) as HashAlgorithm[];

const FORMS =
  'use "sha256:<hex>" (or md5, sha512), a bare md5/sha256/sha512 hex, {os_hash_algo, os_hash_value}, ' +
  'or the http(s) URL of a sha256sum-style checksums file';

const invalid = (message: string, details: Record<string, unknown> = {}): AgentError =>
  new AgentError('INVALID_PARAMS', message, { details });

const notFound = (message: string, details: Record<string, unknown>, cause?: unknown): AgentError =>
  new AgentError('CHECKSUM_NOT_FOUND', message, { details, ...(cause === undefined ? {} : { cause }) });

const isUrl = (value: string): boolean => /^https?:\/\//i.test(value);

const isHex = (value: string): boolean => /^[0-9a-f]+$/i.test(value);

const algorithmOf = (name: string): HashAlgorithm | null => {
  const lower = name.trim().toLowerCase().replace(/-/g, '');
  return (ALGORITHMS as string[]).includes(lower) ? (lower as HashAlgorithm) : null;
};

const algorithmByLength = (hex: string): HashAlgorithm | null =>
  ALGORITHMS.find((algorithm) => HEX_LENGTHS[algorithm] === hex.length) ?? null;

/** Checks a hex value against the algorithm (named or implied by its length). */
const checkedHex = (
  hex: string,
  algorithm: HashAlgorithm | null,
  fail: (message: string) => AgentError,
): { algorithm: HashAlgorithm; hex: string } => {
  if (!isHex(hex)) throw fail(`checksum ${JSON.stringify(hex)} is not hexadecimal`);
  const implied = algorithmByLength(hex);
  if (algorithm === null) {
    if (implied === null) {
      throw fail(
        `a bare checksum of ${hex.length} hex digits names no algorithm (32 is md5, 64 sha256, 128 sha512)`,
      );
    }
    return { algorithm: implied, hex: hex.toLowerCase() };
  }
  if (hex.length !== HEX_LENGTHS[algorithm]) {
    throw fail(`a ${algorithm} checksum has ${HEX_LENGTHS[algorithm]} hex digits, not ${hex.length}`);
  }
  return { algorithm, hex: hex.toLowerCase() };
};

/** The last path segment of the image URL: what a checksums file lists the image under. */
export const imageFileName = (imageUrl: string): string => {
  let path: string;
  try {
    path = new URL(imageUrl).pathname;
  } catch {
    path = imageUrl.split(/[?#]/)[0] ?? '';
  }
  const name = path.split('/').pop() ?? '';
  try {
    return decodeURIComponent(name);
  } catch {
    return name;
  }
};

interface ChecksumLine {
  hex: string;
  name: string;
  /** Only the BSD `--tag` format names its algorithm. */
  algorithm: HashAlgorithm | null;
}

/** `<hex>  <name>`, `<hex> *<name>` (binary mode), or BSD `SHA256 (<name>) = <hex>`. */
const parseLine = (line: string): ChecksumLine | null => {
  const tagged = /^([A-Za-z0-9-]+) ?\((.+)\) ?= ?([0-9a-fA-F]+)$/.exec(line);
  if (tagged) {
    const algorithm = algorithmOf(tagged[1] ?? '');
    return algorithm ? { hex: tagged[3] ?? '', name: tagged[2] ?? '', algorithm } : null;
  }
  const plain = /^\\?([0-9a-fA-F]+)\s+\*?(.+)$/.exec(line);
  return plain ? { hex: plain[1] ?? '', name: (plain[2] ?? '').trim(), algorithm: null } : null;
};

const baseName = (name: string): string => name.replace(/^\.\//, '').split('/').pop() ?? name;

/**
 * The checksum for `fileName` in a checksums file. A file of one bare hex line is the checksum
 * itself (IPA). Names match exactly (after `./`), else by base name when that is unambiguous, so
 * `images/foo.img` in a file still matches `…/foo.img`.
 */
export const findInChecksumFile = (
  text: string,
  fileName: string,
  source: string,
): { hex: string; algorithm: HashAlgorithm | null } => {
  const lines = text
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'));
  if (lines.length === 0) {
    throw notFound(`the checksums file ${source} is empty`, { url: source, name: fileName });
  }
  if (lines.length === 1 && isHex(lines[0] ?? '')) return { hex: lines[0] ?? '', algorithm: null };
  const entries = lines.map(parseLine).filter((entry): entry is ChecksumLine => entry !== null);
  const exact = entries.find((entry) => entry.name.replace(/^\.\//, '') === fileName);
  if (exact) return exact;
  const byBase = entries.filter((entry) => baseName(entry.name) === fileName);
  const distinct = new Set(byBase.map((entry) => entry.hex.toLowerCase()));
  if (byBase.length > 0 && distinct.size === 1) return byBase[0] as ChecksumLine;
  if (distinct.size > 1) {
    throw notFound(`the checksums file ${source} lists different checksums for files named ${fileName}`, {
      url: source,
      name: fileName,
    });
  }
  throw notFound(
    `the checksums file ${source} has no line for ${JSON.stringify(fileName)} (${entries.length} entries read)`,
    { url: source, name: fileName, entries: entries.length },
  );
};

const fromChecksumFile = async (
  url: string,
  algorithm: HashAlgorithm | null,
  imageUrl: string,
  fetchText: FetchTextFn,
): Promise<ExpectedChecksum> => {
  const fileName = imageFileName(imageUrl);
  if (fileName === '') {
    throw invalid(`the image URL ${imageUrl} has no file name to look up in the checksums file ${url}`, {
      url,
      imageUrl,
    });
  }
  let text: string;
  try {
    text = await fetchText(url);
  } catch (error) {
    if (AgentError.is(error) && error.code === 'CANCELLED') throw error;
    const reason = error instanceof Error ? error.message : String(error);
    throw notFound(
      `cannot fetch the checksums file ${url}: ${reason}`,
      { url, ...(AgentError.is(error) ? { fetchError: error.code } : {}) },
      error,
    );
  }
  const found = findInChecksumFile(text, fileName, url);
  const named = found.algorithm ?? algorithm;
  if (found.algorithm && algorithm && found.algorithm !== algorithm) {
    throw notFound(
      `the checksums file ${url} gives a ${found.algorithm} checksum for ${fileName}, not ${algorithm}`,
      {
        url,
        name: fileName,
      },
    );
  }
  const checked = checkedHex(found.hex, named, (message) =>
    notFound(`the checksums file ${url}, entry ${fileName}: ${message}`, { url, name: fileName }),
  );
  return { ...checked, source: url };
};

/**
 * The expected checksum named by `spec`, or null when none was given. Malformed specs are
 * INVALID_PARAMS; a checksums file that cannot be fetched or has no entry is CHECKSUM_NOT_FOUND.
 */
export const resolveChecksum = async (
  spec: ChecksumSpec,
  imageUrl: string,
  fetchText: FetchTextFn,
): Promise<ExpectedChecksum | null> => {
  if (spec === null || spec === undefined) return null;
  if (typeof spec === 'object') return resolveOsHash(spec, imageUrl, fetchText);
  const value = spec.trim();
  if (value === '') return null;
  if (isUrl(value)) return fromChecksumFile(value, null, imageUrl, fetchText);
  const prefixed = /^([A-Za-z0-9-]+):(.*)$/.exec(value);
  if (prefixed && !/^[a-z][a-z0-9+.-]*:\/\//i.test(value)) {
    const algorithm = algorithmOf(prefixed[1] ?? '');
    if (algorithm === null) {
      throw invalid(
        `unsupported checksum algorithm ${JSON.stringify(prefixed[1])}: use md5, sha256 or sha512`,
        {
          spec: value,
        },
      );
    }
    const rest = (prefixed[2] ?? '').trim();
    // `sha256:https://…/SHA256SUMS`: a checksums file with its algorithm stated.
    if (isUrl(rest)) return fromChecksumFile(rest, algorithm, imageUrl, fetchText);
    return {
      ...checkedHex(rest, algorithm, (message) => invalid(message, { spec: value })),
      source: 'params',
    };
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(value)) {
    throw invalid(`checksums file URL ${value} must be http or https`, { spec: value });
  }
  if (isHex(value)) {
    return { ...checkedHex(value, null, (message) => invalid(message, { spec: value })), source: 'params' };
  }
  throw invalid(`cannot read the checksum ${JSON.stringify(value)}: ${FORMS}`, { spec: value });
};

const resolveOsHash = async (
  spec: OsHashSpec,
  imageUrl: string,
  fetchText: FetchTextFn,
): Promise<ExpectedChecksum | null> => {
  const name = spec.os_hash_algo;
  const value = spec.os_hash_value?.trim();
  if ((name === undefined || name === '') && (value === undefined || value === '')) return null;
  if (typeof name !== 'string' || name.trim() === '') {
    throw invalid('os_hash_value was given without os_hash_algo', { spec });
  }
  const algorithm = algorithmOf(name);
  if (algorithm === null) {
    throw invalid(`unsupported os_hash_algo ${JSON.stringify(name)}: use md5, sha256 or sha512`, { spec });
  }
  if (typeof value !== 'string' || value === '') {
    throw invalid(`os_hash_algo ${algorithm} was given without os_hash_value`, { spec });
  }
  if (isUrl(value)) return fromChecksumFile(value, algorithm, imageUrl, fetchText);
  return {
    ...checkedHex(value, algorithm, (message) => invalid(`os_hash_value: ${message}`, { spec })),
    source: 'params',
  };
};

export interface Hasher {
  readonly algorithm: HashAlgorithm;
  update(chunk: Buffer): void;
  /** The digest of everything so far; ends the hash (later updates throw). */
  digestHex(): string;
  /** Throws CHECKSUM_MISMATCH unless the digest equals the expected value; returns the digest. */
  verify(): string;
}

/**
 * Hashes inline as the bytes go by. Without an expected value it still computes sha256, so a
 * result can report what was written.
 */
export const createHasher = (expected: ExpectedChecksum | null): Hasher => {
  const algorithm = expected?.algorithm ?? 'sha256';
  const hash: Hash = createHash(algorithm);
  let digest: string | null = null;
  const digestHex = (): string => (digest ??= hash.digest('hex'));
  return {
    algorithm,
    update(chunk) {
      if (digest !== null) throw new Error('the hash was already finished');
      hash.update(chunk);
    },
    digestHex,
    verify: () => checkDigest(expected, algorithm, digestHex()),
  };
};

/** Throws CHECKSUM_MISMATCH unless `actual` equals the expected value; returns `actual`. */
export const checkDigest = (
  expected: ExpectedChecksum | null,
  algorithm: HashAlgorithm,
  actual: string,
): string => {
  if (expected !== null && actual !== expected.hex.toLowerCase()) {
    throw new AgentError(
      'CHECKSUM_MISMATCH',
      `the image's ${algorithm} is ${actual}, expected ${expected.hex} (from ${expected.source})`,
      { details: { algorithm, expected: expected.hex, actual, source: expected.source } },
    );
  }
  return actual;
};
