import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  findFirstMatch,
  HINT_FIELDS,
  matchesHint,
  parseRootDeviceHints,
  type HintSubject,
  type ParsedHint,
} from '../../agent/hardware/generic/disks/hints.js';
import { chooseDefaultDisk } from '../../agent/hardware/generic/disks/select.js';
import type { DiskInventory } from '../../agent/hardware/generic/inventory/types.js';
import { AgentError } from '../../agent/util/errors.js';

const GIB = 2 ** 30;

const subject = (fields: Partial<HintSubject> & { name: string; size: number }): HintSubject => ({
  rotational: null,
  model: null,
  vendor: null,
  serial: null,
  wwn: null,
  wwn_with_extension: null,
  wwn_vendor_extension: null,
  hctl: null,
  by_path: null,
  tran: null,
  ...fields,
});

// IPA's own matcher fixture (ironic_python_agent/tests/unit/test_device_hints.py).
const IPA_DEVICES = [
  subject({ name: '/dev/sda', size: 64424509440, model: 'ok model', serial: 'fakeserial' }),
  subject({
    name: '/dev/sdb',
    size: 128849018880,
    model: 'big model',
    serial: 'veryfakeserial',
    rotational: true,
  }),
  subject({
    name: '/dev/sdc',
    size: 10737418240,
    model: 'small model',
    serial: 'veryveryfakeserial',
    rotational: false,
  }),
];

// Every field filled, so each field and operator can be tested on one disk.
const FULL = subject({
  name: '/dev/nvme0n1',
  size: Math.round(465.76 * GIB),
  rotational: false,
  model: 'Samsung SSD 860 EVO 500GB',
  vendor: 'ATA',
  serial: 'S3Z1NB0K123456',
  wwn: '0x5002538e40a1b2c3',
  wwn_with_extension: '0x5002538e40a1b2c3',
  wwn_vendor_extension: '0x0000000000000001',
  hctl: '0:0:0:0',
  by_path: '/dev/disk/by-path/pci-0000:00:17.0-ata-1',
  tran: 'nvme',
});

const matches = (hints: Record<string, unknown>, device: HintSubject = FULL): boolean =>
  parseRootDeviceHints(hints).every((hint) => matchesHint(device, hint));

describe('root device hints: IPA examples', () => {
  const cases: Array<[string, Record<string, unknown>, string | null]> = [
    ['one hint', { size: '>= 70' }, '/dev/sdb'],
    ['rotational false', { rotational: false }, '/dev/sdc'],
    ['rotational with size, no space after the operator', { size: '>=100', rotational: true }, '/dev/sdb'],
    ['several hints', { size: '>= 50', model: 's==big model', serial: 's==veryfakeserial' }, '/dev/sdb'],
    [
      '<or> with a trailing empty alternative',
      {
        size: '<= 20',
        model: '<or> model 5 <or> foomodel <or> small model <or>',
        serial: 's== veryveryfakeserial',
      },
      '/dev/sdc',
    ],
    ['<in> with rotational', { rotational: false, model: '<in> small' }, '/dev/sdc'],
    ['no operators', { size: '120', model: 'big model', serial: 'veryfakeserial' }, '/dev/sdb'],
    ['nothing matches', { size: '>=50', model: 's==foo' }, null],
    ['name with s==', { name: 's== /dev/sda' }, '/dev/sda'],
    ['every device matches: the first wins', { size: '>= 10' }, '/dev/sda'],
    ['none is that large', { size: '>= 100500' }, null],
  ];
  for (const [title, hints, expected] of cases)
    it(title, () => {
      assert.equal(findFirstMatch(IPA_DEVICES, parseRootDeviceHints(hints))?.name ?? null, expected);
    });

  it('skips a disk whose attribute is empty, even for s!=', () => {
    const blank = subject({ name: '/dev/sda', size: GIB, model: ' ' });
    assert.equal(findFirstMatch([blank], parseRootDeviceHints({ model: 'foo' })), null);
    assert.equal(findFirstMatch([blank], parseRootDeviceHints({ model: 's!= foo' })), null);
  });
});

describe('root device hints: every field and operator', () => {
  const cases: Array<[Record<string, unknown>, boolean]> = [
    // size: GiB as a float, so == on a 465.76 GiB disk fails and the ranges work
    [{ size: 465 }, false],
    [{ size: '== 465' }, false],
    [{ size: '>= 465' }, true],
    [{ size: '> 465' }, true],
    [{ size: '<= 466' }, true],
    [{ size: '< 466' }, true],
    [{ size: '< 465' }, false],
    [{ size: '!= 465' }, true],
    [{ size: '= 400' }, true], // specs_matcher's legacy "at least"
    [{ size: '= 500' }, false],
    [{ size: '<or> 100 <or> 200' }, false],
    // rotational: booleans and IPA's strict words
    [{ rotational: false }, true],
    [{ rotational: 'no' }, true],
    [{ rotational: 'OFF' }, true],
    [{ rotational: '0' }, true],
    [{ rotational: 0 }, true],
    [{ rotational: 'true' }, false],
    [{ rotational: 'Yes' }, false],
    // strings: case-insensitive, blanks around ignored
    [{ model: 'samsung ssd 860 evo 500gb' }, true],
    [{ model: '  SAMSUNG SSD 860 EVO 500GB  ' }, true],
    [{ model: 's== Samsung SSD 860 EVO 500GB' }, true],
    [{ model: 's== Samsung' }, false],
    [{ model: 's!= Samsung' }, true],
    [{ model: 's!= samsung ssd 860 evo 500gb' }, false],
    [{ model: '<in> SSD 860' }, true],
    [{ model: '<in> 970' }, false],
    [{ model: '<all-in> samsung evo' }, true],
    [{ model: '<all-in> samsung pro' }, false],
    [{ model: '<or> Intel <or> samsung ssd 860 evo 500gb' }, true],
    [{ model: '<or> Intel <or> Micron' }, false],
    [{ model: 's>= samsung' }, true],
    [{ model: 's> t' }, false],
    [{ model: 's<= samsung z' }, true],
    [{ model: 's< samsung' }, false],
    [{ vendor: 'ata' }, true],
    [{ vendor: 'ATA ' }, true],
    [{ serial: 'S3Z1NB0K123456' }, true],
    [{ serial: '<in> nb0k' }, true],
    [{ serial: 's!= S3Z1NB0K123456' }, false],
    [{ wwn: '0x5002538E40A1B2C3' }, true],
    [{ wwn: '<or> 0x5000c5008 <or> 0x5002538e40a1b2c3' }, true],
    [{ wwn_with_extension: '0x5002538e40a1b2c3' }, true],
    [{ wwn_vendor_extension: '0x0000000000000001' }, true],
    [{ wwn_vendor_extension: '0x2' }, false],
    [{ hctl: '0:0:0:0' }, true],
    [{ hctl: '1:0:0:0' }, false],
    [{ tran: 'nvme' }, true],
    [{ tran: 'sata' }, false],
    // name and by_path: with or without the /dev/ prefix
    [{ name: '/dev/nvme0n1' }, true],
    [{ name: 'nvme0n1' }, true],
    [{ name: '/DEV/NVME0N1' }, true],
    [{ name: 's== nvme0n1' }, true],
    [{ name: 's!= nvme0n1' }, false],
    [{ name: '<or> sda <or> nvme0n1' }, true],
    [{ name: '<in> nvme' }, true],
    [{ name: 'sda' }, false],
    [{ by_path: '/dev/disk/by-path/pci-0000:00:17.0-ata-1' }, true],
    [{ by_path: 'pci-0000:00:17.0-ata-1' }, true],
    [{ by_path: '<in> 00:17.0' }, true],
    // all hints must match
    [{ size: '>= 400', model: '<in> samsung', rotational: false }, true],
    [{ size: '>= 400', model: '<in> samsung', rotational: true }, false],
    [{}, true],
  ];
  for (const [hints, expected] of cases)
    it(`${JSON.stringify(hints)} ${expected ? 'matches' : 'does not match'}`, () => {
      assert.equal(matches(hints), expected);
    });

  it('covers every field', () => {
    const tested = new Set(cases.flatMap(([hints]) => Object.keys(hints)));
    assert.deepEqual(
      HINT_FIELDS.filter((field) => !tested.has(field)),
      [],
    );
  });

  it('compares size in GiB as a float: == matches an exact size only', () => {
    const exact = subject({ name: '/dev/sdz', size: 100 * GIB });
    assert.equal(matches({ size: 100 }, exact), true);
    assert.equal(matches({ size: '<or> 50 <or> 100' }, exact), true);
    assert.equal(matches({ size: 100 }, subject({ name: '/dev/sdz', size: 100 * GIB + 512 })), false);
  });

  it('a disk without a rotational flag matches neither true nor false', () => {
    const unknown = subject({ name: '/dev/sdz', size: GIB });
    assert.equal(matches({ rotational: true }, unknown), false);
    assert.equal(matches({ rotational: false }, unknown), false);
  });
});

describe('root device hints: normalisation', () => {
  const parsed = (hints: Record<string, unknown>): ParsedHint[] => parseRootDeviceHints(hints);

  it('adds the default operators and lower-cases', () => {
    assert.deepEqual(parsed({ size: 12345, model: 'FOO model', rotational: 'yes' }), [
      { field: 'size', op: '==', values: [12345], expression: '12345' },
      { field: 'model', op: 's==', values: ['foo model'], expression: 'foo model' },
      { field: 'rotational', value: true, expression: 'yes' },
    ]);
  });

  it('splits <or> alternatives that contain blanks, like IPA', () => {
    assert.deepEqual(parsed({ model: '<or> foo <or> foo bar <or> bar' })[0], {
      field: 'model',
      op: '<or>',
      values: ['foo', 'foo bar', 'bar'],
      expression: '<or> foo <or> foo bar <or> bar',
    });
  });

  it('completes names to their /dev form', () => {
    assert.deepEqual(
      parsed({ name: '<or> sda <or> /dev/sdb' }).map((hint) => ('values' in hint ? hint.values : [])),
      [['/dev/sda', '/dev/sdb']],
    );
    assert.deepEqual(
      parsed({ by_path: 'pci-0000:00:1f.2-ata-1' }).map((hint) => ('values' in hint ? hint.values : [])),
      [['/dev/disk/by-path/pci-0000:00:1f.2-ata-1']],
    );
  });

  it('accepts size as a number or a string, with or without an operator', () => {
    for (const size of [12345, '12345', '== 12345', '==12345'])
      assert.deepEqual(parsed({ size })[0], {
        field: 'size',
        op: '==',
        values: [12345],
        expression: String(size),
      });
  });
});

describe('root device hints: malformed hints are INVALID_PARAMS naming the field', () => {
  const cases: Array<[string, Record<string, unknown>, string, RegExp]> = [
    [
      'an unknown field',
      { non_existent: 'foo' },
      'root_device_hints.non_existent',
      /unknown root device hint/,
    ],
    ['a misspelt field', { serail: 'x', size: 10 }, 'root_device_hints.serail', /valid hints are/],
    ['size not an integer', { size: 'not-int' }, 'root_device_hints.size', /not a positive integer/],
    ['size negative', { size: -123 }, 'root_device_hints.size', /not a positive integer/],
    ['size zero', { size: 0 }, 'root_device_hints.size', /not a positive integer/],
    ['size with a fraction', { size: '10.5' }, 'root_device_hints.size', /not a positive integer/],
    ['size with a unit', { size: '100 GiB' }, 'root_device_hints.size', /not a positive integer/],
    ['size as a Boolean', { size: true }, 'root_device_hints.size', /positive integer/],
    [
      'size with a string operator',
      { size: 's== 10' },
      'root_device_hints.size',
      /does not apply to a number/,
    ],
    ['size <in>', { size: '<in> 10' }, 'root_device_hints.size', /does not apply to a number/],
    [
      'size <or> with a non-integer',
      { size: '<or> 123 <or> non-int <or> 789' },
      'root_device_hints.size',
      /non-int/,
    ],
    ['size operator without a value', { size: '>=' }, 'root_device_hints.size', /has no value/],
    ['size empty', { size: '  ' }, 'root_device_hints.size', /empty/],
    ['rotational not a Boolean', { rotational: 'not-bool' }, 'root_device_hints.rotational', /Boolean/],
    ['rotational 2', { rotational: 2 }, 'root_device_hints.rotational', /Boolean/],
    ['wwn as a number', { wwn: 123 }, 'root_device_hints.wwn', /must be a string/],
    ['serial as a number', { serial: 123 }, 'root_device_hints.serial', /must be a string/],
    ['model as a number', { model: 123 }, 'root_device_hints.model', /must be a string/],
    ['vendor as a Boolean', { vendor: true }, 'root_device_hints.vendor', /must be a string/],
    ['name as a number', { name: 123 }, 'root_device_hints.name', /must be a string/],
    ['hctl as a number', { hctl: 123 }, 'root_device_hints.hctl', /must be a string/],
    ['by_path as a number', { by_path: 123 }, 'root_device_hints.by_path', /must be a string/],
    [
      'wwn_with_extension as a number',
      { wwn_with_extension: 1 },
      'root_device_hints.wwn_with_extension',
      /string/,
    ],
    [
      'wwn_vendor_extension as a number',
      { wwn_vendor_extension: 1 },
      'root_device_hints.wwn_vendor_extension',
      /string/,
    ],
    ['a numeric operator on a string', { model: '>= 5' }, 'root_device_hints.model', /compares numbers/],
    ['an empty string', { serial: '' }, 'root_device_hints.serial', /empty/],
    ['an operator without a value', { serial: 's==' }, 'root_device_hints.serial', /has no value/],
    ['<or> without alternatives', { model: '<or> <or>' }, 'root_device_hints.model', /has no value/],
    ['several <in> values', { model: '<in> a <in> b' }, 'root_device_hints.model', /<in> takes one value/],
    ['<range-in>', { model: '<range-in> [1 2]' }, 'root_device_hints.model', /not supported/],
  ];
  for (const [title, hints, field, message] of cases)
    it(title, () => {
      assert.throws(
        () => parseRootDeviceHints(hints),
        (error: unknown) => {
          assert.ok(AgentError.is(error));
          assert.equal(error.code, 'INVALID_PARAMS');
          assert.equal(error.details.field, field);
          assert.match(error.message, message);
          return true;
        },
      );
    });
});

describe('default disk without hints (IPA guess_root_disk)', () => {
  const disk = (name: string, size: number): DiskInventory => ({
    name,
    size,
    model: null,
    rotational: false,
    wwn: null,
    serial: null,
    vendor: null,
    wwn_with_extension: null,
    wwn_vendor_extension: null,
    hctl: null,
    by_path: null,
    logical_sectors: 512,
    physical_sectors: 512,
    tran: null,
  });

  it('picks the smallest disk of at least 4 GiB, the name breaking ties', () => {
    const disks = [disk('/dev/sdc', 500 * GIB), disk('/dev/sdb', 8 * GIB), disk('/dev/sda', 8 * GIB)];
    assert.equal(chooseDefaultDisk(disks)?.name, '/dev/sda');
  });

  it('skips disks under 4 GiB and takes exactly 4 GiB', () => {
    const disks = [disk('/dev/sda', 4 * GIB - 512), disk('/dev/sdb', 4 * GIB), disk('/dev/sdc', 5 * GIB)];
    assert.equal(chooseDefaultDisk(disks)?.name, '/dev/sdb');
  });

  it('finds none when every disk is under 4 GiB', () => {
    assert.equal(chooseDefaultDisk([disk('/dev/sda', GIB), disk('/dev/sdb', 2 * GIB)]), null);
    assert.equal(chooseDefaultDisk([]), null);
  });
});
