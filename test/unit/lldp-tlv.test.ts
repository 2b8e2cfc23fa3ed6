import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { decodeTlvs, stripEthernetHeader } from '../../agent/lldp/tlv.js';
import type { RawTlv } from '../../agent/lldp/types.js';

// Tests run from dist/test/unit, the fixtures stay in the source tree.
const readFixture = (name: string): Buffer => {
  const text = readFileSync(new URL(`../../../test/fixtures/lldp/${name}`, import.meta.url), 'utf8');
  const hex = text
    .split('\n')
    .filter((line) => !line.startsWith('#'))
    .join('')
    .replace(/\s+/g, '');
  return Buffer.from(hex, 'hex');
};

/** One TLV as on the wire: 7-bit type, 9-bit length, value. Lengths over 511 are masked on purpose. */
const buildTlv = (type: number, value: Buffer | string = Buffer.alloc(0)): Buffer => {
  const body = typeof value === 'string' ? Buffer.from(value, 'hex') : value;
  const header = Buffer.alloc(2);
  header.writeUInt16BE(((type & 0x7f) << 9) | (body.length & 0x1ff));
  return Buffer.concat([header, body]);
};

const END = buildTlv(0);
const MINIMAL = [buildTlv(1, '04112233445566'), buildTlv(2, '0565746830'), buildTlv(3, '0078')];

/** Re-encodes decoded TLVs, to check they are exactly the bytes that were read. */
const encodeTlvs = (tlvs: RawTlv[]): Buffer => Buffer.concat(tlvs.map(([type, hex]) => buildTlv(type, hex)));

/** Small seeded PRNG (mulberry32) so the random cases are the same on every run. */
const seededRandom = (seed: number): (() => number) => {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
};

describe('decodeTlvs on real lldpd 1.0.16 captures', () => {
  it('splits the default lldpd frame into IPA-style [type, hex] pairs ending with End', () => {
    const { tlvs, warnings } = decodeTlvs(readFixture('lldpd-basic.hex'));
    assert.deepEqual(tlvs, [
      [1, '04525400aabb01'],
      [2, '03525400aabb01'],
      [3, '0004'],
      [5, '73772d74657374'],
      [6, '626d2d6167656e7420746573742073776974636820286c6c64706420312e302e313629'],
      [7, '009c0080'],
      [8, '0501c000020a020000000600'],
      [4, '75706c696e6b20746f20686f73742065746830'],
      [127, '00120f030100000000'],
      [127, '00120f010080000036'],
      [0, ''],
    ]);
    assert.deepEqual(warnings, []);
  });

  it('reads every TLV of the LLDP-MED capture, in wire order', () => {
    const payload = readFixture('lldpd-vlans-med.hex');
    const { tlvs, warnings } = decodeTlvs(payload);
    assert.deepEqual(warnings, []);
    assert.equal(tlvs.length, 30);
    assert.deepEqual(
      tlvs.map(([type]) => type),
      [1, 2, 3, 5, 6, 7, 8, 8, 4, ...Array<number>(20).fill(127), 0],
    );
    assert.deepEqual(tlvs[1], [2, '05766574682d7377']);
    assert.deepEqual(tlvs[7], [8, '110220010db8000000000000000000000010020000000600']);
    assert.deepEqual(tlvs[21], [127, '0012bb020140c96e']);
    assert.deepEqual(tlvs[28], [127, '00120f042400']);
    assert.ok(encodeTlvs(tlvs).equals(payload), 'the TLVs cover the whole LLDPDU');
  });

  it('keeps locally assigned chassis and port IDs as raw hex', () => {
    const { tlvs, warnings } = decodeTlvs(readFixture('lldpd-local-ids.hex'));
    assert.deepEqual(warnings, []);
    assert.deepEqual(tlvs.slice(0, 3), [
      [1, '076c6561662d30372d63686173736973'],
      [2, '074769302f37'],
      [3, '0004'],
    ]);
    assert.deepEqual(tlvs.at(-1), [0, '']);
  });
});

describe('stripEthernetHeader', () => {
  const frame = readFixture('lldpd-basic-frame.hex');
  const payload = readFixture('lldpd-basic.hex');
  const withTag = (tpid: number, inner: Buffer = frame): Buffer => {
    const tag = Buffer.from([tpid >> 8, tpid & 0xff, 0x00, 0x64]);
    return Buffer.concat([inner.subarray(0, 12), tag, inner.subarray(12)]);
  };

  it('returns the LLDPDU of a captured frame', () => {
    assert.equal(frame.readUInt16BE(12), 0x88cc);
    assert.ok(stripEthernetHeader(frame)?.equals(payload));
  });

  it('skips one 802.1Q or 802.1ad tag', () => {
    assert.ok(stripEthernetHeader(withTag(0x8100))?.equals(payload));
    assert.ok(stripEthernetHeader(withTag(0x88a8))?.equals(payload));
  });

  it('returns null for other ethertypes, two tags and frames too short for a header', () => {
    const ipv4 = Buffer.from(frame);
    ipv4.writeUInt16BE(0x0800, 12);
    assert.equal(stripEthernetHeader(ipv4), null);
    assert.equal(stripEthernetHeader(withTag(0x88a8, withTag(0x8100))), null);
    assert.equal(stripEthernetHeader(frame.subarray(0, 13)), null);
    assert.equal(stripEthernetHeader(withTag(0x8100).subarray(0, 17)), null);
    assert.equal(stripEthernetHeader(Buffer.alloc(0)), null);
  });

  it('returns an empty LLDPDU for a bare LLDP header', () => {
    assert.deepEqual(stripEthernetHeader(frame.subarray(0, 14)), Buffer.alloc(0));
  });
});

describe('decodeTlvs on malformed input', () => {
  it('reports an empty LLDPDU and one shorter than a TLV header', () => {
    assert.deepEqual(decodeTlvs(Buffer.alloc(0)), { tlvs: [], warnings: ['LLDPDU is empty'] });
    assert.deepEqual(decodeTlvs(Buffer.from([0x02])), {
      tlvs: [],
      warnings: ['LLDPDU of 1 byte is shorter than a 2-byte TLV header'],
    });
  });

  it('drops a TLV that runs past the end and reports its declared length and what remained', () => {
    const truncated = Buffer.concat([...MINIMAL, buildTlv(5, 'aabbccdd').subarray(0, 4)]);
    truncated.writeUInt16BE((5 << 9) | 30, truncated.length - 4);
    const { tlvs, warnings } = decodeTlvs(truncated);
    assert.deepEqual(tlvs, [
      [1, '04112233445566'],
      [2, '0565746830'],
      [3, '0078'],
    ]);
    assert.deepEqual(warnings, [
      'TLV type 5 at offset 20 declares 30 bytes but only 2 remain; it was dropped and decoding stopped',
    ]);
  });

  it('reports a missing End, including a stray byte where a header should be', () => {
    assert.deepEqual(decodeTlvs(Buffer.concat(MINIMAL)).warnings, [
      'LLDPDU ends at offset 20 without an End TLV',
    ]);
    const stray = decodeTlvs(Buffer.concat([...MINIMAL, Buffer.from([0xfe])]));
    assert.equal(stray.tlvs.length, 3);
    assert.deepEqual(stray.warnings, [
      'LLDPDU ends at offset 20 with 1 byte too short for a TLV header and no End TLV',
    ]);
  });

  it('stops at End and reports what follows instead of parsing it', () => {
    const after = buildTlv(5, Buffer.from('sneaky'));
    const { tlvs, warnings } = decodeTlvs(Buffer.concat([...MINIMAL, END, after]));
    assert.deepEqual(tlvs.at(-1), [0, '']);
    assert.equal(tlvs.length, 4);
    assert.deepEqual(warnings, ['8 byte(s) after the End TLV at offset 22 were ignored: 0a06736e65616b79']);
  });

  it('shortens the preview of long trailing data', () => {
    const { warnings } = decodeTlvs(Buffer.concat([...MINIMAL, END, Buffer.alloc(40, 0xab)]));
    assert.deepEqual(warnings, [
      `40 byte(s) after the End TLV at offset 22 were ignored: ${'ab'.repeat(16)}...`,
    ]);
  });

  it('accepts the zero padding of a minimum-size Ethernet frame but not zeros past it', () => {
    const short = Buffer.concat([...MINIMAL, END]);
    const padded = Buffer.concat([short, Buffer.alloc(46 - short.length)]);
    assert.deepEqual(decodeTlvs(padded), decodeTlvs(short));
    assert.deepEqual(decodeTlvs(padded).warnings, []);
    const overPadded = Buffer.concat([short, Buffer.alloc(47 - short.length)]);
    assert.deepEqual(decodeTlvs(overPadded).warnings, [
      '25 byte(s) after the End TLV at offset 22 were ignored: 00000000000000000000000000000000...',
    ]);
  });

  it('keeps the value of an End TLV that has one, with a warning', () => {
    const { tlvs, warnings } = decodeTlvs(Buffer.concat([...MINIMAL, buildTlv(0, 'beef')]));
    assert.deepEqual(tlvs.at(-1), [0, 'beef']);
    assert.deepEqual(warnings, ['End TLV at offset 20 has length 2, expected 0']);
  });

  it('decodes zero-length TLVs of every kind as empty values', () => {
    const types = [1, 2, 3, 4, 5, 6, 7, 8, 9, 126, 127];
    const { tlvs, warnings } = decodeTlvs(Buffer.concat([...types.map((type) => buildTlv(type)), END]));
    assert.deepEqual(tlvs, [...types.map((type): RawTlv => [type, '']), [0, '']]);
    assert.deepEqual(warnings, []);
  });

  it('decodes 511-byte TLVs, the largest a 9-bit length allows', () => {
    const big = Buffer.alloc(511, 0x5a);
    const input = Buffer.concat([buildTlv(6, big), buildTlv(127, big), END]);
    assert.equal(input.readUInt16BE(513), 0xffff, 'type 127 with length 511 is an all-ones header');
    const { tlvs, warnings } = decodeTlvs(input);
    assert.deepEqual(tlvs, [
      [6, '5a'.repeat(511)],
      [127, '5a'.repeat(511)],
      [0, ''],
    ]);
    assert.deepEqual(warnings, []);
  });

  it('accepts a plain Uint8Array and reports other values instead of throwing', () => {
    const bytes = Uint8Array.from(Buffer.concat([...MINIMAL, END]));
    assert.deepEqual(decodeTlvs(bytes as Buffer).tlvs.length, 4);
    for (const junk of [undefined, null, 'frame', 42, {}, [1, 2]]) {
      assert.deepEqual(decodeTlvs(junk as unknown as Buffer), {
        tlvs: [],
        warnings: ['LLDPDU is not a byte buffer'],
      });
    }
  });

  it('survives 10k seeded random buffers and only ever returns bytes it read', () => {
    const random = seededRandom(0x11dd);
    for (let run = 0; run < 10_000; run += 1) {
      const input = Buffer.alloc(Math.floor(random() * 700));
      for (let i = 0; i < input.length; i += 1) input[i] = Math.floor(random() * 256);
      const { tlvs, warnings } = decodeTlvs(input);
      const encoded = encodeTlvs(tlvs);
      assert.ok(
        input.subarray(0, encoded.length).equals(encoded),
        `run ${run}: TLVs are a prefix of the input`,
      );
      const endsWithEnd = tlvs.at(-1)?.[0] === 0;
      assert.ok(endsWithEnd || warnings.length > 0, `run ${run}: no End means a warning`);
      assert.ok(
        tlvs.every(([type], i) => type !== 0 || i === tlvs.length - 1),
        `run ${run}: End is last`,
      );
    }
  });

  it('survives 10k seeded near-valid frames with corrupted lengths', () => {
    const random = seededRandom(0x88cc);
    for (let run = 0; run < 10_000; run += 1) {
      const parts = Array.from({ length: Math.floor(random() * 8) }, () =>
        buildTlv(Math.floor(random() * 128), Buffer.alloc(Math.floor(random() * 40), run & 0xff)),
      );
      const input = Buffer.concat([...parts, END]);
      const position = Math.floor(random() * input.length);
      input[position] = Math.floor(random() * 256);
      const cut = input.subarray(0, input.length - Math.floor(random() * 4));
      const { tlvs } = decodeTlvs(cut);
      const encoded = encodeTlvs(tlvs);
      assert.ok(cut.subarray(0, encoded.length).equals(encoded), `run ${run}`);
    }
  });
});
