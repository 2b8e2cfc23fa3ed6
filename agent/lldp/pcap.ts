/**
 * A streaming reader for the classic pcap format that `tcpdump -w -` writes. Chunks arrive as
 * the pipe delivers them, so a header or a record may be split anywhere; nothing here throws on
 * bad input: a garbage or truncated stream ends in an `error` event instead.
 */

export const LINKTYPE_ETHERNET = 1;

const GLOBAL_HEADER_LENGTH = 24;
const RECORD_HEADER_LENGTH = 16;
/** No link type in pcap carries frames this large; a bigger length means the stream is garbage. */
const MAX_RECORD_LENGTH = 256 * 1024;

const MAGIC_MICROSECONDS = 0xa1b2c3d4;
const MAGIC_NANOSECONDS = 0xa1b23c4d;

export interface PcapHeader {
  littleEndian: boolean;
  nanosecond: boolean;
  versionMajor: number;
  versionMinor: number;
  snaplen: number;
  linktype: number;
}

export interface PcapRecord {
  /** Capture time in microseconds since the epoch (nanosecond streams are rounded down). */
  timestampUs: number;
  /** Bytes on the wire; larger than `data.length` when the snaplen cut the frame. */
  originalLength: number;
  data: Buffer;
}

export type PcapEvent =
  | { kind: 'header'; header: PcapHeader }
  | { kind: 'record'; record: PcapRecord }
  | { kind: 'error'; message: string };

export class PcapStreamReader {
  private buffered: Buffer = Buffer.alloc(0);
  private header: PcapHeader | null = null;
  private failed = false;
  private ended = false;

  get pcapHeader(): PcapHeader | null {
    return this.header;
  }

  /** True once the stream was found to be garbage; later chunks are ignored. */
  get hasFailed(): boolean {
    return this.failed;
  }

  /** Feeds the next chunk; returns the header, records and at most one error it completed. */
  push(chunk: Buffer): PcapEvent[] {
    if (this.failed || this.ended || chunk.length === 0) return [];
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    const events: PcapEvent[] = [];
    let offset = 0;
    if (this.header === null) {
      if (this.buffered.length < GLOBAL_HEADER_LENGTH) return events;
      const parsed = parseGlobalHeader(this.buffered);
      if (typeof parsed === 'string') return this.fail(parsed, events);
      this.header = parsed;
      events.push({ kind: 'header', header: parsed });
      offset = GLOBAL_HEADER_LENGTH;
    }
    const header = this.header;
    while (this.buffered.length - offset >= RECORD_HEADER_LENGTH) {
      const read = (at: number): number =>
        header.littleEndian
          ? this.buffered.readUInt32LE(offset + at)
          : this.buffered.readUInt32BE(offset + at);
      const seconds = read(0);
      const fraction = read(4);
      const capturedLength = read(8);
      const originalLength = read(12);
      if (capturedLength > MAX_RECORD_LENGTH || capturedLength > Math.max(header.snaplen, originalLength)) {
        return this.fail(
          `pcap record of ${capturedLength} bytes exceeds the snaplen ${header.snaplen}: the stream is corrupt`,
          events,
        );
      }
      if (header.nanosecond ? fraction >= 1e9 : fraction >= 1e6) {
        return this.fail(
          `pcap record timestamp fraction ${fraction} is out of range: the stream is corrupt`,
          events,
        );
      }
      const end = offset + RECORD_HEADER_LENGTH + capturedLength;
      if (this.buffered.length < end) break;
      events.push({
        kind: 'record',
        record: {
          timestampUs: seconds * 1e6 + (header.nanosecond ? Math.floor(fraction / 1000) : fraction),
          originalLength,
          // A copy, so a kept frame does not pin the whole chunk it arrived in.
          data: Buffer.from(this.buffered.subarray(offset + RECORD_HEADER_LENGTH, end)),
        },
      });
      offset = end;
    }
    this.buffered = this.buffered.subarray(offset);
    return events;
  }

  /** Marks the end of the stream; leftover bytes mean it was cut short. */
  end(): PcapEvent[] {
    if (this.failed || this.ended) return [];
    this.ended = true;
    if (this.header === null) {
      return [
        {
          kind: 'error',
          message:
            this.buffered.length === 0
              ? 'the pcap stream ended before its header'
              : `the pcap stream ended inside its header (${this.buffered.length} of ${GLOBAL_HEADER_LENGTH} bytes)`,
        },
      ];
    }
    if (this.buffered.length > 0) {
      return [
        {
          kind: 'error',
          message: `the pcap stream ended inside a record (${this.buffered.length} bytes left over)`,
        },
      ];
    }
    return [];
  }

  private fail(message: string, events: PcapEvent[]): PcapEvent[] {
    this.failed = true;
    this.buffered = Buffer.alloc(0);
    events.push({ kind: 'error', message });
    return events;
  }
}

const parseGlobalHeader = (bytes: Buffer): PcapHeader | string => {
  // The writer stores the magic in its own byte order, so reading it both ways tells the order.
  const magicLE = bytes.readUInt32LE(0);
  const magicBE = bytes.readUInt32BE(0);
  let littleEndian: boolean;
  let nanosecond: boolean;
  if (magicLE === MAGIC_MICROSECONDS || magicLE === MAGIC_NANOSECONDS) {
    littleEndian = true;
    nanosecond = magicLE === MAGIC_NANOSECONDS;
  } else if (magicBE === MAGIC_MICROSECONDS || magicBE === MAGIC_NANOSECONDS) {
    littleEndian = false;
    nanosecond = magicBE === MAGIC_NANOSECONDS;
  } else {
    return `not a pcap stream (magic 0x${magicBE.toString(16).padStart(8, '0')})`;
  }
  const u16 = (at: number): number => (littleEndian ? bytes.readUInt16LE(at) : bytes.readUInt16BE(at));
  const u32 = (at: number): number => (littleEndian ? bytes.readUInt32LE(at) : bytes.readUInt32BE(at));
  const versionMajor = u16(4);
  const versionMinor = u16(6);
  if (versionMajor !== 2) return `unsupported pcap version ${versionMajor}.${versionMinor}`;
  // The upper bits of the link-type field carry FCS flags in newer writers; the type is the low 16.
  return {
    littleEndian,
    nanosecond,
    versionMajor,
    versionMinor,
    snaplen: u32(16),
    linktype: u32(20) & 0xffff,
  };
};
