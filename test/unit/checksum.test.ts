/**
 * Every form a conductor may give the expected checksum in (IPA's semantics, ipa.md §7.3), the
 * sha256sum-style checksums file lookup, and the inline hasher's verdict.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import {
  createHasher,
  findInChecksumFile,
  imageFileName,
  resolveChecksum,
  type FetchTextFn,
} from '../../agent/image/checksum.js';
import type { ExpectedChecksum } from '../../agent/image/contracts.js';
import { AgentError } from '../../agent/util/errors.js';

const CONTENT = Buffer.from('the image bytes\n');
const MD5 = createHash('md5').update(CONTENT).digest('hex');
const SHA256 = createHash('sha256').update(CONTENT).digest('hex');
const SHA512 = createHash('sha512').update(CONTENT).digest('hex');
const IMAGE_URL = 'http://images.example/pub/focal/disk-image.qcow2?token=abc';
const SUMS_URL = 'https://images.example/pub/focal/SHA256SUMS';

const noFetch: FetchTextFn = () => {
  throw new Error('no fetch expected');
};

/** A fetchText that serves fixed documents and records what was asked for. */
const serving = (documents: Record<string, string>): FetchTextFn & { asked: string[] } => {
  const asked: string[] = [];
  const fetchText = async (url: string): Promise<string> => {
    asked.push(url);
    const text = documents[url];
    if (text === undefined) throw new AgentError('DOWNLOAD_FAILED', `HTTP 404 fetching ${url}`);
    return text;
  };
  return Object.assign(fetchText, { asked });
};

const rejectsWith = async (promise: Promise<unknown>, code: string, pattern?: RegExp): Promise<void> => {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(AgentError.is(error), String(error));
    assert.equal(error.code, code, error.message);
    if (pattern) assert.match(error.message, pattern);
    return true;
  });
};

describe('resolveChecksum: values given in the params', () => {
  it('returns null when no checksum was given', async () => {
    assert.equal(await resolveChecksum(undefined, IMAGE_URL, noFetch), null);
    assert.equal(await resolveChecksum(null, IMAGE_URL, noFetch), null);
    assert.equal(await resolveChecksum('  ', IMAGE_URL, noFetch), null);
    assert.equal(await resolveChecksum({}, IMAGE_URL, noFetch), null);
  });

  it('reads algo:hex for md5, sha256 and sha512, case-insensitively', async () => {
    assert.deepEqual(await resolveChecksum(`sha256:${SHA256}`, IMAGE_URL, noFetch), {
      algorithm: 'sha256',
      hex: SHA256,
      source: 'params',
    });
    assert.deepEqual(await resolveChecksum(`MD5:${MD5.toUpperCase()}`, IMAGE_URL, noFetch), {
      algorithm: 'md5',
      hex: MD5,
      source: 'params',
    });
    assert.equal((await resolveChecksum(`sha512:${SHA512}`, IMAGE_URL, noFetch))?.algorithm, 'sha512');
  });

  it('names the algorithm of a bare hex by its length', async () => {
    const cases: Array<[string, string]> = [
      [MD5, 'md5'],
      [SHA256, 'sha256'],
      [SHA512, 'sha512'],
    ];
    for (const [hex, algorithm] of cases) {
      assert.equal((await resolveChecksum(hex, IMAGE_URL, noFetch))?.algorithm, algorithm);
    }
  });

  it("reads IPA's os_hash_algo and os_hash_value", async () => {
    assert.deepEqual(
      await resolveChecksum({ os_hash_algo: 'sha512', os_hash_value: SHA512 }, IMAGE_URL, noFetch),
      { algorithm: 'sha512', hex: SHA512, source: 'params' },
    );
  });

  it('refuses malformed values with INVALID_PARAMS', async () => {
    await rejectsWith(resolveChecksum('abc123', IMAGE_URL, noFetch), 'INVALID_PARAMS', /6 hex digits/);
    await rejectsWith(
      resolveChecksum(`sha1:${'a'.repeat(40)}`, IMAGE_URL, noFetch),
      'INVALID_PARAMS',
      /sha1/,
    );
    await rejectsWith(
      resolveChecksum(`sha256:${MD5}`, IMAGE_URL, noFetch),
      'INVALID_PARAMS',
      /64 hex digits/,
    );
    await rejectsWith(resolveChecksum(`sha256:${'z'.repeat(64)}`, IMAGE_URL, noFetch), 'INVALID_PARAMS');
    await rejectsWith(
      resolveChecksum('not a checksum', IMAGE_URL, noFetch),
      'INVALID_PARAMS',
      /sha256:<hex>/,
    );
    await rejectsWith(resolveChecksum('ftp://host/SHA256SUMS', IMAGE_URL, noFetch), 'INVALID_PARAMS', /http/);
    await rejectsWith(
      resolveChecksum({ os_hash_algo: 'sha1', os_hash_value: 'a'.repeat(40) }, IMAGE_URL, noFetch),
      'INVALID_PARAMS',
      /os_hash_algo/,
    );
    await rejectsWith(
      resolveChecksum({ os_hash_algo: 'sha256', os_hash_value: MD5 }, IMAGE_URL, noFetch),
      'INVALID_PARAMS',
    );
    await rejectsWith(resolveChecksum({ os_hash_value: SHA256 }, IMAGE_URL, noFetch), 'INVALID_PARAMS');
    await rejectsWith(resolveChecksum({ os_hash_algo: 'sha256' }, IMAGE_URL, noFetch), 'INVALID_PARAMS');
  });
});

describe('resolveChecksum: checksums files', () => {
  it("matches the image URL's file name in sha256sum format, text and binary mode", async () => {
    const fetchText = serving({
      [SUMS_URL]: [
        `${'0'.repeat(64)}  other-image.qcow2`,
        `${SHA256} *disk-image.qcow2`,
        `${'1'.repeat(64)}  disk-image.qcow2.manifest`,
        '',
      ].join('\n'),
    });
    assert.deepEqual(await resolveChecksum(SUMS_URL, IMAGE_URL, fetchText), {
      algorithm: 'sha256',
      hex: SHA256,
      source: SUMS_URL,
    });
    assert.deepEqual(fetchText.asked, [SUMS_URL]);
  });

  it('takes a file of one bare hex line as the checksum itself', async () => {
    const fetchText = serving({ [SUMS_URL]: `${SHA512}\n` });
    assert.deepEqual(await resolveChecksum(SUMS_URL, IMAGE_URL, fetchText), {
      algorithm: 'sha512',
      hex: SHA512,
      source: SUMS_URL,
    });
  });

  it('uses os_hash_algo with a checksums file URL in os_hash_value', async () => {
    const fetchText = serving({ [SUMS_URL]: `${MD5}  disk-image.qcow2\n` });
    const spec = { os_hash_algo: 'md5', os_hash_value: SUMS_URL };
    assert.equal((await resolveChecksum(spec, IMAGE_URL, fetchText))?.hex, MD5);
    await rejectsWith(
      resolveChecksum({ os_hash_algo: 'sha256', os_hash_value: SUMS_URL }, IMAGE_URL, fetchText),
      'CHECKSUM_NOT_FOUND',
      /64 hex digits/,
    );
  });

  it('accepts algo:URL and the BSD tag format', async () => {
    const fetchText = serving({ [SUMS_URL]: `SHA256 (disk-image.qcow2) = ${SHA256}\n` });
    assert.equal((await resolveChecksum(`sha256:${SUMS_URL}`, IMAGE_URL, fetchText))?.hex, SHA256);
    await rejectsWith(
      resolveChecksum(`sha512:${SUMS_URL}`, IMAGE_URL, fetchText),
      'CHECKSUM_NOT_FOUND',
      /sha256 checksum/,
    );
  });

  it('fails CHECKSUM_NOT_FOUND on an empty file, a missing name, or a failed fetch', async () => {
    await rejectsWith(
      resolveChecksum(SUMS_URL, IMAGE_URL, serving({ [SUMS_URL]: '\n\n' })),
      'CHECKSUM_NOT_FOUND',
      /empty/,
    );
    await rejectsWith(
      resolveChecksum(SUMS_URL, IMAGE_URL, serving({ [SUMS_URL]: `${SHA256}  other.img\n` })),
      'CHECKSUM_NOT_FOUND',
      /no line for "disk-image.qcow2"/,
    );
    await rejectsWith(
      resolveChecksum(SUMS_URL, IMAGE_URL, serving({})),
      'CHECKSUM_NOT_FOUND',
      /cannot fetch the checksums file .*404/,
    );
  });

  it('lets a cancellation through unchanged', async () => {
    const cancelled: FetchTextFn = async () => {
      throw new AgentError('CANCELLED', 'cancelled on request');
    };
    await rejectsWith(resolveChecksum(SUMS_URL, IMAGE_URL, cancelled), 'CANCELLED');
  });
});

describe('checksums file lookup', () => {
  it('ignores comments and blank lines and prefers an exact name over a base name', () => {
    const text = [
      '# made by sha256sum',
      '',
      `${'a'.repeat(64)}  old/disk.img`,
      `${'b'.repeat(64)}  ./disk.img`,
    ].join('\r\n');
    assert.equal(findInChecksumFile(text, 'disk.img', 'u').hex, 'b'.repeat(64));
  });

  it('matches by base name when that is unambiguous, and refuses when it is not', () => {
    assert.equal(
      findInChecksumFile(`${'a'.repeat(64)}  images/disk.img\n`, 'disk.img', 'u').hex,
      'a'.repeat(64),
    );
    const twice = `${'a'.repeat(64)}  x/disk.img\n${'b'.repeat(64)}  y/disk.img\n`;
    assert.throws(
      () => findInChecksumFile(twice, 'disk.img', 'u'),
      (error: unknown) => AgentError.is(error) && error.code === 'CHECKSUM_NOT_FOUND',
    );
  });

  it('takes the file name from the URL path, decoded, without the query', () => {
    assert.equal(imageFileName(IMAGE_URL), 'disk-image.qcow2');
    assert.equal(imageFileName('http://h/a/my%20image.raw'), 'my image.raw');
    assert.equal(imageFileName('http://h/'), '');
  });
});

describe('createHasher', () => {
  const expected = (algorithm: 'md5' | 'sha256' | 'sha512', hex: string): ExpectedChecksum => ({
    algorithm,
    hex,
    source: 'params',
  });

  it('accepts the right digest over chunks, whatever the case of the expected hex', () => {
    const hasher = createHasher(expected('sha256', SHA256.toUpperCase()));
    hasher.update(CONTENT.subarray(0, 5));
    hasher.update(CONTENT.subarray(5));
    assert.equal(hasher.verify(), SHA256);
    assert.equal(hasher.digestHex(), SHA256);
  });

  it('throws CHECKSUM_MISMATCH with expected, actual and source', () => {
    const hasher = createHasher({ algorithm: 'md5', hex: '0'.repeat(32), source: SUMS_URL });
    hasher.update(CONTENT);
    assert.throws(
      () => hasher.verify(),
      (error: unknown) => {
        assert.ok(AgentError.is(error));
        assert.equal(error.code, 'CHECKSUM_MISMATCH');
        assert.deepEqual(error.details, {
          algorithm: 'md5',
          expected: '0'.repeat(32),
          actual: MD5,
          source: SUMS_URL,
        });
        return true;
      },
    );
  });

  it('computes sha256 when nothing is expected', () => {
    const hasher = createHasher(null);
    hasher.update(CONTENT);
    assert.equal(hasher.algorithm, 'sha256');
    assert.equal(hasher.verify(), SHA256);
  });

  it('uses sha512 when asked', () => {
    const hasher = createHasher(expected('sha512', SHA512));
    hasher.update(CONTENT);
    assert.equal(hasher.verify(), SHA512);
  });
});
