/**
 * Splitting an LLDPDU into raw TLVs, IPA's inventory format (`[[type, hex], ..., [0, ""]]`).
 *
 * The input is the LLDPDU itself: the Ethernet payload after the 14-byte header (or after the
 * 18-byte header of a VLAN-tagged frame). The capture layer hands us that; `stripEthernetHeader`
 * exists for callers that hold a whole frame. Nothing here throws: malformed input comes back as
 * the TLVs read before the problem plus warnings, so one bad switch never breaks an inventory.
 */
import type { RawTlv, TlvDecoding } from './types.js';

export const LLDP_ETHERTYPE = 0x88cc;
const VLAN_TAG_ETHERTYPES: readonly number[] = [0x8100, 0x88a8];
const ETHERNET_HEADER_BYTES = 14;
const VLAN_TAG_BYTES = 4;

const TLV_HEADER_BYTES = 2;
const END_TLV_TYPE = 0;
/** Frames shorter than 60 bytes are zero-padded to this payload size, so zeros up to it are not junk. */
const MIN_ETHERNET_PAYLOAD_BYTES = 46;

/**
 * Returns the LLDPDU inside a whole Ethernet frame, or null when the frame is not LLDP. One
 * 802.1Q or 802.1ad tag is skipped because some switches send LLDP on a tagged native VLAN.
 * The result is a view on `frame`, not a copy.
 */
export const stripEthernetHeader = (frame: Buffer): Buffer | null => {
  if (!Buffer.isBuffer(frame) || frame.length < ETHERNET_HEADER_BYTES) return null;
  let typeOffset = ETHERNET_HEADER_BYTES - 2;
  let ethertype = frame.readUInt16BE(typeOffset);
  if (VLAN_TAG_ETHERTYPES.includes(ethertype)) {
    typeOffset += VLAN_TAG_BYTES;
    if (frame.length < typeOffset + 2) return null;
    ethertype = frame.readUInt16BE(typeOffset);
  }
  return ethertype === LLDP_ETHERTYPE ? frame.subarray(typeOffset + 2) : null;
};

/**
 * Walks the 7-bit type / 9-bit length TLV headers and returns every TLV up to and including End.
 * Unlike IPA, which keeps parsing whatever follows End (turning Ethernet padding into extra
 * `[0, ""]` entries) and reports a truncated TLV with a short value, this stops at End and drops
 * a TLV that runs past the frame, saying so in a warning.
 */
export const decodeTlvs = (payload: Buffer): TlvDecoding => {
  const tlvs: RawTlv[] = [];
  const warnings: string[] = [];
  const bytes = asBuffer(payload);
  if (bytes === null) return { tlvs, warnings: ['LLDPDU is not a byte buffer'] };
  let offset = 0;
  while (true) {
    const remaining = bytes.length - offset;
    if (remaining < TLV_HEADER_BYTES) {
      warnings.push(describeMissingEnd(offset, remaining));
      break;
    }
    const header = bytes.readUInt16BE(offset);
    const type = header >> 9;
    const length = header & 0x1ff;
    const valueStart = offset + TLV_HEADER_BYTES;
    const available = bytes.length - valueStart;
    if (length > available) {
      warnings.push(
        `TLV type ${type} at offset ${offset} declares ${length} bytes but only ${available} remain; ` +
          'it was dropped and decoding stopped',
      );
      break;
    }
    tlvs.push([type, bytes.toString('hex', valueStart, valueStart + length)]);
    offset = valueStart + length;
    if (type === END_TLV_TYPE) {
      if (length !== 0) warnings.push(`End TLV at offset ${valueStart - 2} has length ${length}, expected 0`);
      warnings.push(...checkAfterEnd(bytes, offset));
      break;
    }
  }
  return { tlvs, warnings };
};

// Callers in plain JS (or a test) may hand over a Uint8Array or worse; never throw on it.
const asBuffer = (value: unknown): Buffer | null => {
  if (Buffer.isBuffer(value)) return value;
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  return null;
};

const describeMissingEnd = (offset: number, remaining: number): string => {
  if (offset === 0) {
    return remaining === 0
      ? 'LLDPDU is empty'
      : `LLDPDU of ${remaining} byte is shorter than a ${TLV_HEADER_BYTES}-byte TLV header`;
  }
  return remaining === 0
    ? `LLDPDU ends at offset ${offset} without an End TLV`
    : `LLDPDU ends at offset ${offset} with ${remaining} byte too short for a TLV header and no End TLV`;
};

// Zero bytes that only fill the frame up to Ethernet's minimum are padding every short frame
// carries; anything else after End means the sender or the capture is confused.
const checkAfterEnd = (bytes: Buffer, endOffset: number): string[] => {
  const trailing = bytes.subarray(endOffset);
  if (trailing.length === 0) return [];
  const isPadding = bytes.length <= MIN_ETHERNET_PAYLOAD_BYTES && trailing.every((byte) => byte === 0);
  if (isPadding) return [];
  const preview = trailing.subarray(0, 16).toString('hex');
  const ellipsis = trailing.length > 16 ? '...' : '';
  return [
    `${trailing.length} byte(s) after the End TLV at offset ${endOffset} were ignored: ${preview}${ellipsis}`,
  ];
};
