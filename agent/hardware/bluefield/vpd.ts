/**
 * PCI Vital Product Data (PCI Local Bus 3.0 appendix I, PCIe base spec 6.28), as sysfs exposes it
 * in `<function>/vpd`: a run of resources, each a tag byte and a length:
 *   0x82 ID string (large), 0x90 VPD-R and 0x91 VPD-W (large, keyword lists), 0x78 end (small).
 * A keyword is two ASCII letters, a length byte and the data. RV in VPD-R carries a checksum byte
 * that makes every byte from the start through itself sum to zero.
 *
 * Real VPD is often short (a read stops at the first unreadable dword), padded with 0xff or
 * garbage after the end tag, or missing the end tag, so the parser never throws: it returns what
 * it could read and says where it stopped.
 */
import { open } from 'node:fs/promises';

export interface VpdData {
  /** The 0x82 ID string: the product name, e.g. "BlueField-2 DPU 25GbE Dual-Port SFP56 ...". */
  idString: string | null;
  /** VPD-R keywords (PN, EC, SN, MN, V0..VZ ...), RV left out. */
  readOnly: Record<string, string>;
  /** VPD-W keywords, RW (the free area) left out. */
  readWrite: Record<string, string>;
  /** Whether the RV checksum holds; null when no RV keyword was read. */
  checksumValid: boolean | null;
  /** The end tag was reached. */
  complete: boolean;
  /** Why parsing stopped early or skipped something; empty for clean VPD. */
  problems: string[];
}

const TAG_ID_STRING = 0x82;
const TAG_VPD_R = 0x90;
const TAG_VPD_W = 0x91;
const SMALL_END = 0x0f;
/** The VPD address space is 15 bits wide; nothing longer is real. */
export const VPD_MAX_BYTES = 0x8000;

const isPrintable = (byte: number): boolean => byte >= 0x20 && byte <= 0x7e;

/** Text when the bytes are text (trailing NULs and blanks dropped), else hex so binary survives. */
const decodeValue = (bytes: Uint8Array): string => {
  let end = bytes.length;
  while (end > 0 && (bytes[end - 1] === 0x00 || bytes[end - 1] === 0x20)) end -= 1;
  const kept = bytes.subarray(0, end);
  if (kept.every(isPrintable)) return Buffer.from(kept).toString('latin1').trim();
  return Buffer.from(kept).toString('hex');
};

const isKeywordName = (a: number | undefined, b: number | undefined): boolean =>
  a !== undefined &&
  b !== undefined &&
  /[A-Z]/.test(String.fromCharCode(a)) &&
  /[A-Z0-9]/.test(String.fromCharCode(b));

const parseKeywords = (
  vpd: Uint8Array,
  start: number,
  end: number,
  into: Record<string, string>,
  result: VpdData,
  section: 'VPD-R' | 'VPD-W',
): void => {
  let offset = start;
  while (offset + 3 <= end) {
    const a = vpd[offset];
    const b = vpd[offset + 1];
    const length = vpd[offset + 2] ?? 0;
    if (!isKeywordName(a, b)) {
      result.problems.push(`${section}: no keyword at byte ${offset}`);
      return;
    }
    const name = String.fromCharCode(a ?? 0, b ?? 0);
    const dataStart = offset + 3;
    const dataEnd = dataStart + length;
    if (dataEnd > end) {
      result.problems.push(`${section}: ${name} runs past the end of the data`);
      return;
    }
    if (name === 'RV') {
      if (length >= 1) {
        let sum = 0;
        for (let i = 0; i <= dataStart; i += 1) sum = (sum + (vpd[i] ?? 0)) & 0xff;
        result.checksumValid = sum === 0;
      }
    } else if (name !== 'RW') {
      into[name] = decodeValue(vpd.subarray(dataStart, dataEnd));
    }
    offset = dataEnd;
  }
};

export const parseVpd = (vpd: Uint8Array): VpdData => {
  const result: VpdData = {
    idString: null,
    readOnly: {},
    readWrite: {},
    checksumValid: null,
    complete: false,
    problems: [],
  };
  let offset = 0;
  while (offset < vpd.length) {
    const tag = vpd[offset] ?? 0;
    if ((tag & 0x80) === 0) {
      const name = (tag >> 3) & 0x0f;
      if (name === SMALL_END) {
        result.complete = true;
        return result;
      }
      // Other small resources (vendor-defined) carry nothing we use.
      offset += 1 + (tag & 0x07);
      continue;
    }
    if (offset + 3 > vpd.length) {
      result.problems.push(`truncated resource header at byte ${offset}`);
      return result;
    }
    const length = (vpd[offset + 1] ?? 0) | ((vpd[offset + 2] ?? 0) << 8);
    const start = offset + 3;
    const declaredEnd = start + length;
    const end = Math.min(declaredEnd, vpd.length);
    if (declaredEnd > vpd.length) result.problems.push(`resource 0x${tag.toString(16)} truncated`);
    if (tag === TAG_ID_STRING) {
      result.idString = decodeValue(vpd.subarray(start, end)) || null;
    } else if (tag === TAG_VPD_R) {
      parseKeywords(vpd, start, end, result.readOnly, result, 'VPD-R');
    } else if (tag === TAG_VPD_W) {
      parseKeywords(vpd, start, end, result.readWrite, result, 'VPD-W');
    } else if (tag === 0xff) {
      // Erased or unimplemented VPD reads back as all ones.
      result.problems.push(`no resource at byte ${offset} (0xff)`);
      return result;
    } else {
      result.problems.push(`unknown large resource 0x${tag.toString(16)} at byte ${offset}`);
    }
    offset = declaredEnd;
  }
  result.problems.push('no end tag');
  return result;
};

/**
 * Reads at most `maxBytes` of a device file (VPD, rshim misc), giving up after `timeoutMs`: a VPD
 * read goes to the device's config space and a misc read to the rshim daemon, and either can hang
 * on a wedged card. A read that gives up leaves its file to be closed when the read returns.
 */
export const readDeviceFile = async (
  file: string,
  options: { maxBytes: number; timeoutMs: number },
): Promise<Buffer | null> => {
  let timer: NodeJS.Timeout | undefined;
  const read = (async (): Promise<Buffer | null> => {
    let handle;
    try {
      handle = await open(file, 'r');
    } catch {
      return null;
    }
    const chunks: Buffer[] = [];
    let total = 0;
    try {
      while (total < options.maxBytes) {
        const buffer = Buffer.alloc(Math.min(65536, options.maxBytes - total));
        // Position null: device files are read sequentially, like cat does.
        const { bytesRead } = await handle.read(buffer, 0, buffer.length, null);
        if (bytesRead === 0) break;
        chunks.push(buffer.subarray(0, bytesRead));
        total += bytesRead;
      }
      return Buffer.concat(chunks, total);
    } catch {
      // A VPD read fails with EIO past the readable part; what came before it is still good.
      return total > 0 ? Buffer.concat(chunks, total) : null;
    } finally {
      await handle.close().catch(() => undefined);
    }
  })();
  const timeout = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), options.timeoutMs);
    timer.unref();
  });
  try {
    return await Promise.race([read, timeout]);
  } finally {
    clearTimeout(timer);
  }
};

/** The VPD of one function, or null when it has none or it cannot be read. */
export const readVpd = async (file: string, timeoutMs = 3000): Promise<VpdData | null> => {
  const bytes = await readDeviceFile(file, { maxBytes: VPD_MAX_BYTES, timeoutMs });
  if (bytes === null || bytes.length === 0) return null;
  return parseVpd(bytes);
};
