/**
 * Parsers for mlxconfig/mstconfig output. The table layout changed over the years (16-wide value
 * columns with a 9-space row indent; a diff/RO prefix with an 8-space indent; 33-wide columns in
 * 2026 builds), and a value that fills its column is followed by a single space only, so rows are
 * split on whitespace and the columns are taken from the header line, never from positions.
 */
import type { NvValue } from '../contracts.js';

export type ConfigColumn = 'default' | 'current' | 'next' | 'new';

export interface ConfigDeviceHeader {
  deviceType: string | null;
  name: string | null;
  description: string | null;
  device: string | null;
}

export interface ConfigRow {
  name: string;
  /** `*`: the next-boot value differs from the default or current one. */
  modified: boolean;
  readOnly: boolean;
  values: Partial<Record<ConfigColumn, string>>;
}

export interface ConfigTable {
  header: ConfigDeviceHeader;
  /** As announced by the `Configurations:` line, left to right; empty when there was none. */
  columns: ConfigColumn[];
  rows: ConfigRow[];
  /** `-E-` lines, without the marker. */
  errors: string[];
  /** `-I-` lines, without the marker. */
  infos: string[];
  /** Rows that did not have a value for every announced column. */
  malformed: string[];
}

const COLUMN_TITLES: Array<[RegExp, ConfigColumn]> = [
  [/Default/g, 'default'],
  [/Current/g, 'current'],
  [/Next Boot/g, 'next'],
  [/\bNew\b/g, 'new'],
];

const HEADER_KEYS: Record<string, keyof ConfigDeviceHeader> = {
  'Device type': 'deviceType',
  Name: 'name',
  Description: 'description',
  Device: 'device',
};

const columnsOf = (line: string): ConfigColumn[] => {
  const found: Array<[number, ConfigColumn]> = [];
  for (const [pattern, column] of COLUMN_TITLES) {
    for (const match of line.matchAll(pattern)) found.push([match.index, column]);
  }
  return found.sort((a, b) => a[0] - b[0]).map(([, column]) => column);
};

// A row starts indented (or with `*`); `RO` is a prefix only when it stands alone before the name.
const ROW = /^(\*?)(\s*)(RO)?\s+([A-Za-z][A-Za-z0-9_.[\]]*)(?:\s+(.*))?$/;

const markedLines = (text: string, marker: string): string[] =>
  text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line.includes(marker))
    .map((line) => line.slice(line.indexOf(marker) + marker.length).trim());

/** Parses `q`, `-e q` and `set` tables (the first device only). */
export const parseConfigTable = (text: string): ConfigTable => {
  const table: ConfigTable = {
    header: { deviceType: null, name: null, description: null, device: null },
    columns: [],
    rows: [],
    errors: markedLines(text, '-E-'),
    infos: markedLines(text, '-I-'),
    malformed: [],
  };
  let inTable = false;
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '');
    if (!inTable) {
      const header = /^(Device type|Name|Description|Device):\s*(.*)$/.exec(line);
      const key = header?.[1];
      if (header && key !== undefined) {
        const field = HEADER_KEYS[key];
        if (field && table.header[field] === null) table.header[field] = (header[2] ?? '').trim();
        continue;
      }
      if (line.startsWith('Configurations:')) {
        table.columns = columnsOf(line.slice('Configurations:'.length));
        inTable = true;
      }
      continue;
    }
    if (line.trim() === '') continue;
    if (/^Device #\d+:/.test(line) || /^\s*Apply/.test(line)) break;
    const match = ROW.exec(line);
    const name = match?.[4];
    if (!match || name === undefined) continue;
    const tokens = (match[5] ?? '')
      .trim()
      .split(/\s+/)
      .filter((token) => token !== '');
    if (tokens.length !== table.columns.length) {
      table.malformed.push(line);
      continue;
    }
    const values: Partial<Record<ConfigColumn, string>> = {};
    table.columns.forEach((column, index) => {
      const value = tokens[index];
      if (value !== undefined) values[column] = value;
    });
    table.rows.push({ name, modified: match[1] === '*', readOnly: match[3] === 'RO', values });
  }
  return table;
};

/** Rows of a query table as NvValues; rows without a next-boot value are left out. */
export const nvValuesOf = (table: ConfigTable): Record<string, NvValue> => {
  const params: Record<string, NvValue> = {};
  for (const row of table.rows) {
    const next = row.values.next;
    if (next === undefined) continue;
    params[row.name] = { default: row.values.default ?? null, current: row.values.current ?? null, next };
  }
  return params;
};

export interface ConfigQuery {
  header: ConfigDeviceHeader;
  columns: ConfigColumn[];
  params: Record<string, NvValue>;
  errors: string[];
  malformed: string[];
}

export const parseConfigQuery = (text: string): ConfigQuery => {
  const table = parseConfigTable(text);
  return {
    header: table.header,
    columns: table.columns,
    params: nvValuesOf(table),
    errors: table.errors,
    malformed: table.malformed,
  };
};

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

const jsonValue = (value: unknown): string | null => {
  if (typeof value === 'string') return value;
  if (typeof value === 'number' && Number.isFinite(value)) return String(value);
  return null;
};

/**
 * The file `-j FILE q` writes (mstflint ≥ 4.31, MFT): `{"Device #1": {device_type, name,
 * description, device, tlv_configuration: {NAME: {default_value, current_value, next_value}}}}`.
 * Numbers come as numbers and enums as `NAME(n)` strings; both are returned as the table text.
 */
export const parseConfigJson = (text: string): ConfigQuery => {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new SyntaxError(`mlxconfig JSON output is not JSON: ${(error as Error).message}`);
  }
  if (!isRecord(parsed)) throw new SyntaxError('mlxconfig JSON output is not an object');
  const device = Object.entries(parsed).find(([key]) => key.startsWith('Device #'))?.[1];
  const query: ConfigQuery = {
    header: { deviceType: null, name: null, description: null, device: null },
    columns: [],
    params: {},
    errors: [],
    malformed: [],
  };
  if (!isRecord(device)) return query;
  query.header = {
    deviceType: jsonValue(device.device_type),
    name: jsonValue(device.name),
    description: jsonValue(device.description),
    device: jsonValue(device.device),
  };
  const tlvs = device.tlv_configuration;
  if (!isRecord(tlvs)) return query;
  const seen = new Set<ConfigColumn>();
  for (const [name, entry] of Object.entries(tlvs)) {
    if (!isRecord(entry)) continue;
    const next = jsonValue(entry.next_value);
    if (next === null) {
      query.malformed.push(name);
      continue;
    }
    const def = jsonValue(entry.default_value);
    const current = jsonValue(entry.current_value);
    if (def !== null) seen.add('default');
    if (current !== null) seen.add('current');
    query.params[name] = { default: def, current, next };
  }
  query.columns = (['default', 'current'] as const).filter((column) => seen.has(column));
  query.columns.push('next');
  return query;
};

export type ConfigSetStatus = 'applied' | 'failed' | 'aborted' | 'error';

export interface ConfigSetOutcome {
  status: ConfigSetStatus;
  /** `-I- Please reboot machine to load new configurations.` */
  rebootRequired: boolean;
  /** `-I- Please power cycle machine to load new configurations.` */
  powerCycleRequired: boolean;
  /** The `Next Boot`/`New` table the tool printed before applying. */
  rows: ConfigRow[];
  errors: string[];
  infos: string[];
}

/**
 * `set` transcripts: `Applying... Done!` then `-I- Please reboot|power cycle machine ...`, or
 * `Applying... Failed!` then `-E- ...`; exit 0 ok, 2 aborted by the user, 3 error (mlxCfgStatus).
 */
export const parseConfigSet = (text: string, exitCode: number | null): ConfigSetOutcome => {
  const table = parseConfigTable(text);
  const done = /Applying\.\.\.\s*Done!/.test(text);
  const failed = /Applying\.\.\.\s*Failed!/.test(text);
  let status: ConfigSetStatus;
  if (exitCode === 2 || table.errors.some((e) => /Aborted by user/i.test(e))) status = 'aborted';
  else if (failed) status = 'failed';
  else if (done && exitCode === 0) status = 'applied';
  else status = 'error';
  return {
    status,
    rebootRequired: table.infos.some((i) => /^Please reboot/i.test(i)),
    powerCycleRequired: table.infos.some((i) => /^Please power cycle/i.test(i)),
    rows: table.rows,
    errors: table.errors,
    infos: table.infos,
  };
};

/** `EMBEDDED_CPU(1)` -> {name: EMBEDDED_CPU, number: 1}; `16` -> {name: null, number: 16}. */
export const splitNvValue = (value: string): { name: string | null; number: number | null } => {
  const enumMatch = /^(.*)\((\d+)\)$/.exec(value.trim());
  if (enumMatch) return { name: enumMatch[1] ?? null, number: Number(enumMatch[2]) };
  if (/^\d+$/.test(value.trim())) return { name: null, number: Number(value.trim()) };
  return { name: value.trim(), number: null };
};

/** Whether a shown value is the given enum (by number when both have one, else by name). */
export const nvValueIs = (shown: string | null, expected: { name: string; number: number }): boolean => {
  if (shown === null) return false;
  const { name, number } = splitNvValue(shown);
  if (number !== null) return number === expected.number;
  return name !== null && name.toLowerCase() === expected.name.toLowerCase();
};
