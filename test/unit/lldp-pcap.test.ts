import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { PcapStreamReader, type PcapEvent } from '../../agent/lldp/pcap.js';

const FIXTURE = fileURLToPath(new URL('../../../test/fixtures/lldp/lldpd-veth-1frame.pcap', import.meta.url));

interface BuildOptions {
  littleEndian?: boolean;
  nanosecond?: boolean;
  snaplen?: number;
  linktype?: number;
}

const globalHeader = ({
  littleEndian = true,
  nanosecond = false,
  snaplen = 1600,
  linktype = 1,
}: BuildOptions = {}): Buffer => {
  const header = Buffer.alloc(24);
  const u32 = (value: number, at: number): number =>
    littleEndian ? header.writeUInt32LE(value, at) : header.writeUInt32BE(value, at);
  const u16 = (value: number, at: number): number =>
    littleEndian ? header.writeUInt16LE(value, at) : header.writeUInt16BE(value, at);
  u32(nanosecond ? 0xa1b23c4d : 0xa1b2c3d4, 0);
  u16(2, 4);
  u16(4, 6);
  u32(snaplen, 16);
  u32(linktype, 20);
  return header;
};

const record = (
  data: Buffer,
  { littleEndian = true, seconds = 1_700_000_000, fraction = 123_456, originalLength = data.length } = {},
): Buffer => {
  const header = Buffer.alloc(16);
  const u32 = (value: number, at: number): number =>
    littleEndian ? header.writeUInt32LE(value, at) : header.writeUInt32BE(value, at);
  u32(seconds, 0);
  u32(fraction, 4);
  u32(data.length, 8);
  u32(originalLength, 12);
  return Buffer.concat([header, data]);
};

const kinds = (events: PcapEvent[]): string[] => events.map((event) => event.kind);
const records = (events: PcapEvent[]): Buffer[] =>
  events.flatMap((event) => (event.kind === 'record' ? [event.record.data] : []));

describe('PcapStreamReader', () => {
  const frameA = Buffer.from('0180c200000e020000000001' + '88cc' + '0000', 'hex');
  const frameB = Buffer.from('0180c200000e020000000002' + '88cc' + '020704aabbccddeeff0000', 'hex');

  for (const littleEndian of [true, false]) {
    for (const nanosecond of [false, true]) {
      it(`reads ${littleEndian ? 'little' : 'big'}-endian ${nanosecond ? 'nano' : 'micro'}second streams`, () => {
        const reader = new PcapStreamReader();
        const fraction = nanosecond ? 123_456_789 : 123_456;
        const events = reader.push(
          Buffer.concat([
            globalHeader({ littleEndian, nanosecond }),
            record(frameA, { littleEndian, fraction }),
            record(frameB, { littleEndian, fraction }),
          ]),
        );
        assert.deepEqual(kinds(events), ['header', 'record', 'record']);
        const header = events[0];
        assert.ok(header?.kind === 'header');
        assert.equal(header.header.littleEndian, littleEndian);
        assert.equal(header.header.nanosecond, nanosecond);
        assert.equal(header.header.linktype, 1);
        assert.equal(header.header.snaplen, 1600);
        const first = events[1];
        assert.ok(first?.kind === 'record');
        assert.equal(first.record.timestampUs, 1_700_000_000 * 1e6 + 123_456);
        assert.deepEqual(records(events), [frameA, frameB]);
        assert.deepEqual(reader.end(), []);
      });
    }
  }

  it('reassembles a stream delivered one byte at a time', () => {
    const stream = Buffer.concat([globalHeader(), record(frameA), record(frameB)]);
    const reader = new PcapStreamReader();
    const events: PcapEvent[] = [];
    for (const byte of stream) events.push(...reader.push(Buffer.from([byte])));
    assert.deepEqual(kinds(events), ['header', 'record', 'record']);
    assert.deepEqual(records(events), [frameA, frameB]);
    assert.deepEqual(reader.end(), []);
  });

  it('reports the original length of a frame cut by the snaplen', () => {
    const reader = new PcapStreamReader();
    const events = reader.push(
      Buffer.concat([globalHeader({ snaplen: 16 }), record(frameB.subarray(0, 16), { originalLength: 25 })]),
    );
    const cut = events[1];
    assert.ok(cut?.kind === 'record');
    assert.equal(cut.record.data.length, 16);
    assert.equal(cut.record.originalLength, 25);
  });

  it('turns garbage into one error event and ignores what follows', () => {
    const reader = new PcapStreamReader();
    const events = reader.push(Buffer.from('tcpdump: a0: That device is not up\n'));
    assert.deepEqual(kinds(events), ['error']);
    assert.ok(events[0]?.kind === 'error' && /not a pcap stream/.test(events[0].message));
    assert.equal(reader.hasFailed, true);
    assert.deepEqual(reader.push(Buffer.concat([globalHeader(), record(frameA)])), []);
    assert.deepEqual(reader.end(), []);
  });

  it('rejects an unsupported version and an absurd record length', () => {
    const badVersion = globalHeader();
    badVersion.writeUInt16LE(3, 4);
    const versionEvents = new PcapStreamReader().push(badVersion);
    assert.ok(versionEvents[0]?.kind === 'error' && /version 3/.test(versionEvents[0].message));

    const huge = Buffer.alloc(16);
    huge.writeUInt32LE(0xffffff00, 8);
    huge.writeUInt32LE(0xffffff00, 12);
    const reader = new PcapStreamReader();
    const events = reader.push(Buffer.concat([globalHeader(), record(frameA), huge]));
    assert.deepEqual(kinds(events), ['header', 'record', 'error']);
  });

  it('rejects a record longer than the snaplen and its own original length', () => {
    const reader = new PcapStreamReader();
    const events = reader.push(
      Buffer.concat([globalHeader({ snaplen: 8 }), record(frameA, { originalLength: 10 })]),
    );
    assert.deepEqual(kinds(events), ['header', 'error']);
  });

  it('reports a stream cut inside the header or inside a record', () => {
    const empty = new PcapStreamReader();
    assert.ok(empty.end()[0]?.kind === 'error');

    const inHeader = new PcapStreamReader();
    assert.deepEqual(inHeader.push(globalHeader().subarray(0, 10)), []);
    const headerEnd = inHeader.end();
    assert.ok(headerEnd[0]?.kind === 'error' && /inside its header/.test(headerEnd[0].message));

    const inRecord = new PcapStreamReader();
    const stream = Buffer.concat([globalHeader(), record(frameA), record(frameB)]);
    assert.deepEqual(kinds(inRecord.push(stream.subarray(0, stream.length - 3))), ['header', 'record']);
    const recordEnd = inRecord.end();
    assert.ok(recordEnd[0]?.kind === 'error' && /inside a record/.test(recordEnd[0].message));
  });

  it('reads a real tcpdump capture of an lldpd frame', async () => {
    const bytes = await readFile(FIXTURE);
    const reader = new PcapStreamReader();
    // Split mid-record, as a pipe might.
    const events = [...reader.push(bytes.subarray(0, 50)), ...reader.push(bytes.subarray(50))];
    assert.deepEqual(kinds(events), ['header', 'record']);
    assert.deepEqual(reader.end(), []);
    const frame = events[1];
    assert.ok(frame?.kind === 'record');
    // LLDP multicast destination and ethertype 0x88cc, then the Chassis ID TLV.
    assert.equal(frame.record.data.subarray(0, 6).toString('hex'), '0180c200000e');
    assert.equal(frame.record.data.readUInt16BE(12), 0x88cc);
    assert.equal(frame.record.data.length, frame.record.originalLength);
    assert.ok(frame.record.data.subarray(14).includes(Buffer.from('sw-test-1')));
  });
});
