import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { createTar, TAR_BLOCK, tarHeader } from '../../agent/system/tar.js';
import { AgentError } from '../../agent/util/errors.js';

const exec = promisify(execFile);

/*
 * The ustar writer checked against GNU tar: what `tar -tvf` lists (names, sizes, modes, times)
 * and what `tar -xf` extracts, byte for byte, including sizes on and off the 512-byte blocks.
 */

describe('tar writer', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'bma-tar-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const mtime = new Date('2024-05-06T07:08:09Z');
  const entries = [
    { name: 'empty.txt', data: Buffer.alloc(0), mtime },
    { name: 'one-block.bin', data: randomBytes(TAR_BLOCK), mtime },
    { name: 'run/init.log', data: Buffer.from('line one\nline two\n'), mtime, mode: 0o600 },
    { name: 'odd.bin', data: randomBytes(3 * TAR_BLOCK + 17), mtime },
    { name: `${'n'.repeat(96)}.txt`, data: Buffer.from('a name of exactly 100 bytes'), mtime },
  ];

  it('is listed by tar -tvf with every name, size, mode and time', async () => {
    const archive = createTar(entries);
    assert.equal(archive.length % TAR_BLOCK, 0);
    const file = path.join(dir, 'list.tar');
    await writeFile(file, archive);
    const { stdout, stderr } = await exec('tar', ['-tvf', file, '--utc', '--numeric-owner']);
    assert.equal(stderr, '');
    const lines = stdout.trim().split('\n');
    assert.equal(lines.length, entries.length);
    entries.forEach((entry, index) => {
      const line = lines[index] ?? '';
      const mode = (entry.mode ?? 0o644) === 0o600 ? '-rw-------' : '-rw-r--r--';
      assert.match(line, new RegExp(`^${mode} 0/0 +${entry.data.length} 2024-05-06 07:08 `), line);
      assert.ok(line.endsWith(` ${entry.name}`), line);
    });
  });

  it('extracts with tar -xf to the same bytes', async () => {
    const file = path.join(dir, 'extract.tar');
    await writeFile(file, createTar(entries));
    const out = await mkdtemp(path.join(dir, 'out-'));
    await exec('tar', ['-xf', file, '-C', out]);
    for (const entry of entries)
      assert.deepEqual(await readFile(path.join(out, entry.name)), entry.data, entry.name);
  });

  it('writes a checksum tar accepts and the ustar magic', () => {
    const header = tarHeader({ name: 'a.txt', data: Buffer.from('x'), mtime });
    assert.equal(header.length, TAR_BLOCK);
    assert.equal(header.subarray(257, 263).toString('latin1'), 'ustar\0');
    const stored = Number.parseInt(header.subarray(148, 154).toString('latin1'), 8);
    const copy = Buffer.from(header);
    copy.fill(0x20, 148, 156);
    assert.equal(
      stored,
      copy.reduce((sum, byte) => sum + byte, 0),
    );
  });

  it('a corrupted checksum makes tar refuse the archive', async () => {
    const archive = createTar([{ name: 'a.txt', data: Buffer.from('x'), mtime }]);
    archive[0] = 'b'.charCodeAt(0);
    const file = path.join(dir, 'corrupt.tar');
    await writeFile(file, archive);
    await assert.rejects(exec('tar', ['-tf', file]), /checksum|header/i);
  });

  it('refuses names it cannot store safely, and duplicates', () => {
    const data = Buffer.from('x');
    for (const name of [
      '',
      'n'.repeat(101),
      '/etc/passwd',
      '../up',
      'a/../b',
      'a//b',
      'nul\0byte',
      `é${'n'.repeat(99)}`,
    ])
      assert.throws(
        () => createTar([{ name, data }]),
        (error: unknown) => AgentError.is(error) && error.code === 'INTERNAL',
        JSON.stringify(name),
      );
    assert.throws(
      () =>
        createTar([
          { name: 'twice', data },
          { name: 'twice', data },
        ]),
      /given twice/,
    );
  });

  it('an empty archive is two zero blocks', async () => {
    const archive = createTar([]);
    assert.equal(archive.length, 2 * TAR_BLOCK);
    assert.ok(archive.every((byte) => byte === 0));
    const file = path.join(dir, 'empty.tar');
    await writeFile(file, archive);
    assert.equal((await exec('tar', ['-tf', file])).stdout, '');
  });
});
