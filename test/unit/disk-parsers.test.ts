import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseHintFlags } from '../../agent/cli/disk.js';
import { splitDevNumber } from '../../agent/hardware/generic/disks/device.js';
import { parseMountInfo, parseSwaps } from '../../agent/hardware/generic/disks/safety.js';
import { parseWipefsOutput, zeroRanges, ZERO_BYTES } from '../../agent/hardware/generic/disks/wipe.js';
import { AgentError } from '../../agent/util/errors.js';

describe('disk safety parsers', () => {
  it('reads device numbers, mount points and sources from mountinfo', () => {
    const text = [
      '27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard',
      '43 27 259:0 / /tmp/with\\040space rw,relatime shared:1 master:2 - ext4 /dev/loop1p1 rw',
      '50 27 0:45 / /srv rw - btrfs /dev/sdb2 rw',
    ].join('\n');
    assert.deepEqual(parseMountInfo(text), [
      { majMin: '254:0', mountPoint: '/', source: '/dev/vda' },
      { majMin: '259:0', mountPoint: '/tmp/with space', source: '/dev/loop1p1' },
      { majMin: '0:45', mountPoint: '/srv', source: '/dev/sdb2' },
    ]);
  });

  it('reads swap areas from /proc/swaps', () => {
    const text =
      'Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/dev/loop1p2                            partition\t8188\t\t0\t\t-2\n/swap\\040file file 1024 0 -3\n';
    assert.deepEqual(parseSwaps(text), ['/dev/loop1p2', '/swap file']);
    assert.deepEqual(parseSwaps('Filename Type Size Used Priority\n'), []);
  });

  it('splits a dev_t into major:minor, large minors included', () => {
    assert.equal(splitDevNumber((7n << 8n) | 3n), '7:3');
    // glibc's makedev(259, 1048575): minor bits above 8 live at bit 12 and up.
    const major = 259n;
    const minor = 1048575n;
    const dev =
      ((major & 0xfffn) << 8n) | ((major & ~0xfffn) << 32n) | (minor & 0xffn) | ((minor & ~0xffn) << 12n);
    assert.equal(splitDevNumber(dev), '259:1048575');
  });
});

describe('wipe helpers', () => {
  it('lists what wipefs says it erased', () => {
    const output = [
      '/dev/loop3p1: 2 bytes were erased at offset 0x00000438 (ext4): 53 ef',
      '/dev/loop3: 8 bytes were erased at offset 0x00000200 (gpt): 45 46 49 20 50 41 52 54',
      '/dev/loop3: 8 bytes were erased at offset 0x03fffe00 (gpt): 45 46 49 20 50 41 52 54',
      '/dev/loop3: 2 bytes were erased at offset 0x000001fe (PMBR): 55 aa',
      '/dev/loop3: calling ioctl to re-read partition table: Success',
    ].join('\n');
    assert.deepEqual(parseWipefsOutput(output), [
      'ext4 at 0x438',
      'gpt at 0x200',
      'gpt at 0x3fffe00',
      'PMBR at 0x1fe',
    ]);
  });

  it('zeroes the first and last MiB, or the whole of a tiny disk', () => {
    assert.deepEqual(zeroRanges(64 * ZERO_BYTES), [
      { offset: 0, length: ZERO_BYTES },
      { offset: 63 * ZERO_BYTES, length: ZERO_BYTES },
    ]);
    assert.deepEqual(zeroRanges(2 * ZERO_BYTES), [{ offset: 0, length: 2 * ZERO_BYTES }]);
    assert.deepEqual(zeroRanges(4096), [{ offset: 0, length: 4096 }]);
    assert.deepEqual(zeroRanges(0), []);
  });
});

describe('bm-agent disk erase-metadata --hint', () => {
  it('turns KEY=VALUE flags into hints, values kept as written', () => {
    assert.deepEqual(parseHintFlags(['serial=S3Z', 'size=>= 100', 'model=<in> a=b']), {
      serial: 'S3Z',
      size: '>= 100',
      model: '<in> a=b',
    });
  });

  it('refuses a flag without KEY= and a key given twice', () => {
    for (const flags of [['serial'], ['=x'], ['size=1', 'size=2']])
      assert.throws(
        () => parseHintFlags(flags),
        (error: unknown) => AgentError.is(error) && error.code === 'INVALID_CONFIG',
      );
  });
});
