/** Value parsers shared by every configuration layer. Each throws a ValueError saying what it expected. */

export class ValueError extends Error {
  constructor(readonly expected: string) {
    super(`expected ${expected}`);
  }
}

const TRUE = new Set(['1', 't', 'true', 'on', 'y', 'yes']);
const FALSE = new Set(['0', 'f', 'false', 'off', 'n', 'no']);

/** Booleans as IPA's bool_from_string reads them. */
export const parseBool = (raw: string | boolean): boolean => {
  if (typeof raw === 'boolean') return raw;
  const value = raw.trim().toLowerCase();
  if (TRUE.has(value)) return true;
  if (FALSE.has(value)) return false;
  throw new ValueError('a boolean (1/0, true/false, yes/no, on/off)');
};

export const numberParser =
  (min: number, max: number) =>
  (raw: string | boolean): number => {
    const value = typeof raw === 'string' && raw.trim() !== '' ? Number(raw) : Number.NaN;
    if (!Number.isFinite(value) || value < min || value > max)
      throw new ValueError(`a number from ${min} to ${max}`);
    return value;
  };

export const urlParser =
  (protocols: string[]) =>
  (raw: string | boolean): string => {
    if (typeof raw !== 'string') throw new ValueError(`a URL (${protocols.join(', ')})`);
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      throw new ValueError(`a URL (${protocols.join(', ')})`);
    }
    if (!protocols.includes(url.protocol.replace(/:$/, ''))) {
      throw new ValueError(`a URL with scheme ${protocols.join(' or ')}`);
    }
    return url.toString();
  };

export const parseText = (raw: string | boolean): string => {
  if (typeof raw !== 'string' || raw === '') throw new ValueError('a non-empty value');
  return raw;
};

export const parsePath = (raw: string | boolean): string => {
  if (typeof raw !== 'string' || raw === '' || raw.includes('\0')) throw new ValueError('a file path');
  return raw;
};

export const enumParser =
  <T extends string>(values: readonly T[]) =>
  (raw: string | boolean): T => {
    if (typeof raw === 'string' && (values as readonly string[]).includes(raw)) return raw as T;
    throw new ValueError(`one of ${values.join(', ')}`);
  };

/** `sha256/<base64 of a 32-byte SPKI hash>`, the form HPKP and curl's --pinnedpubkey use. */
export const parsePin = (raw: string | boolean): string => {
  const match = typeof raw === 'string' ? /^sha256\/([A-Za-z0-9+/]{43}=)$/.exec(raw) : null;
  if (!match || Buffer.from(match[1] as string, 'base64').length !== 32) {
    throw new ValueError('sha256/<base64 SHA-256 of the server public key (SPKI)>');
  }
  return raw as string;
};

/** A MAC as Linux prints it. PXELINUX's BOOTIF form `01-aa-bb-cc-dd-ee-ff` is accepted too. */
export const parseMac = (raw: string | boolean): string => {
  if (typeof raw !== 'string') throw new ValueError('a MAC address');
  let value = raw.trim().toLowerCase();
  if (/^[0-9a-f]{2}(-[0-9a-f]{2}){6}$/.test(value)) value = value.slice(3);
  value = value.replace(/-/g, ':');
  if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(value))
    throw new ValueError('a MAC address (aa:bb:cc:dd:ee:ff)');
  return value;
};

export const parseUuid = (raw: string | boolean): string => {
  if (
    typeof raw !== 'string' ||
    !/^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$/.test(raw)
  ) {
    throw new ValueError('a UUID');
  }
  return raw.toLowerCase();
};
