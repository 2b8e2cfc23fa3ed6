/**
 * Turns raw TLVs into ironic-inspector's `lldp_basic` fields (inspector:`common/lldp_parsers.py`,
 * `common/lldp_tlvs.py`), plus LLDP-MED, which inspector does not parse.
 *
 * Semantics kept from inspector: the same key names; scalars keep the first value seen and lists
 * append; a TLV with the wrong length or a value that does not parse is skipped with a warning;
 * an unknown OUI is warned about and ignored; unknown subtypes of a known OUI and TTL/End are
 * ignored silently. Deliberate differences, all towards "raw data plus warnings, never a throw":
 * - 10BASE-T fdx comes from its own bit (inspector reads the hdx bit for both), and the
 *   100BASE-T4 bit is named "100BASE-T4" (inspector says "10BASE-T4");
 * - a MAU type outside the table becomes "unknown MAU type N" instead of dropping the whole
 *   MAC/PHY TLV, and the table goes beyond inspector's 53 entries (10GBASE-T is 54);
 * - invalid UTF-8 and malformed list entries are warnings too (inspector only catches construct
 *   and netaddr errors, so a UnicodeDecodeError would escape its hook).
 */
import type { LldpParsed, LldpVlan, RawTlv } from './types.js';

export interface LldpParseResult {
  parsed: LldpParsed;
  warnings: string[];
}

/** One LLDP-MED Network Policy TLV (ANSI/TIA-1057 10.2.3). */
export type LldpMedNetworkPolicy = {
  application: string;
  application_type: number;
  /** The "U" flag: the device needs a policy for this application but does not know it. */
  unknown: boolean;
  tagged: boolean;
  vlan_id: number;
  /** 802.1p priority (PCP). */
  priority: number;
  dscp: number;
};

export type LldpMedLocation = {
  format: string;
  /** Location data as sent (coordinate, civic address or ELIN), hex-encoded. */
  data: string;
};

export type LldpMedExtendedPower = {
  power_type: string;
  power_source: string;
  priority: string;
  power_watts: number;
};

export type LldpMedInventory = {
  hardware_revision?: string;
  firmware_revision?: string;
  software_revision?: string;
  serial_number?: string;
  manufacturer?: string;
  model?: string;
  asset_id?: string;
};

/** What goes into `switch_med`. Same rules as the rest: scalars first-wins, lists append. */
export type LldpMed = {
  capabilities?: string[];
  device_type?: string;
  network_policies?: LldpMedNetworkPolicy[];
  locations?: LldpMedLocation[];
  extended_power?: LldpMedExtendedPower;
  inventory?: LldpMedInventory;
};

interface ParseState {
  parsed: LldpParsed;
  med: LldpMed;
}

type TlvHandler = (value: Buffer, state: ParseState) => void;

interface TlvSpec {
  name: string;
  handle: TlvHandler;
}

/** Raised by handlers for a TLV that cannot be used; the loop turns it into a warning. */
class MalformedTlvError extends Error {}

const fail = (reason: string): never => {
  throw new MalformedTlvError(reason);
};

const requireLength = (value: Buffer, minimum: number, what: string): void => {
  if (value.length < minimum) {
    fail(`${what} needs ${minimum} ${minimum === 1 ? 'byte' : 'bytes'}, got ${value.length}`);
  }
};

// Inspector checks the exact size of its bit-field TLVs (capabilities, PPVID, MAC/PHY, link
// aggregation) and only a minimum for the rest, where extra bytes are ignored.
const requireExactLength = (value: Buffer, expected: number): void => {
  if (value.length !== expected) fail(`expected ${expected} bytes, got ${value.length}`);
};

// Keep a BOM as a character, as Python's utf-8 codec does, and refuse invalid sequences.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

const decodeUtf8 = (bytes: Uint8Array, what: string): string => {
  try {
    return utf8.decode(bytes);
  } catch {
    return fail(`${what} is not valid UTF-8`);
  }
};

const setFirst = <K extends keyof LldpParsed>(parsed: LldpParsed, key: K, value: LldpParsed[K]): void => {
  if (parsed[key] === undefined) parsed[key] = value;
};

const setFirstMed = <K extends keyof LldpMed>(med: LldpMed, key: K, value: LldpMed[K]): void => {
  if (med[key] === undefined) med[key] = value;
};

const ignore: TlvHandler = () => undefined;

// ---------------------------------------------------------------------------------------------
// Addresses and identifiers

export const formatMac = (bytes: Uint8Array): string =>
  Array.from(bytes, (byte) => byte.toString(16).padStart(2, '0')).join(':');

const formatIpv4 = (bytes: Uint8Array): string => Array.from(bytes).join('.');

/** RFC 5952 text: lowercase, longest run of two or more zero groups as `::`, mapped IPv4 dotted. */
export const formatIpv6 = (bytes: Uint8Array): string => {
  const groups = Array.from({ length: 8 }, (_, i) => ((bytes[2 * i] ?? 0) << 8) | (bytes[2 * i + 1] ?? 0));
  if (groups.slice(0, 5).every((group) => group === 0) && groups[5] === 0xffff) {
    return `::ffff:${formatIpv4(bytes.subarray(12, 16))}`;
  }
  const run = longestZeroRun(groups);
  const hex = groups.map((group) => group.toString(16));
  if (run.length < 2) return hex.join(':');
  const head = hex.slice(0, run.start).join(':');
  const tail = hex.slice(run.start + run.length).join(':');
  return `${head}::${tail}`;
};

const longestZeroRun = (groups: number[]): { start: number; length: number } => {
  let best = { start: -1, length: 0 };
  let start = -1;
  groups.forEach((group, index) => {
    if (group !== 0) {
      start = -1;
      return;
    }
    if (start < 0) start = index;
    const length = index - start + 1;
    if (length > best.length) best = { start, length };
  });
  return best;
};

// IANA address family numbers that inspector understands (1 IPv4, 2 IPv6, 6 "all 802" = MAC).
const ADDRESS_FAMILIES: ReadonlyMap<number, { bytes: number; format: (bytes: Uint8Array) => string }> =
  new Map([
    [1, { bytes: 4, format: formatIpv4 }],
    [2, { bytes: 16, format: formatIpv6 }],
    [6, { bytes: 6, format: formatMac }],
  ]);

/** `family byte + address`, the layout shared by Chassis/Port ID "network address" and TLV 8. */
const decodeNetworkAddress = (value: Buffer): string => {
  requireLength(value, 1, 'network address');
  const family = value[0] ?? 0;
  const spec = ADDRESS_FAMILIES.get(family);
  if (spec === undefined) return fail(`address family ${family} is not IPv4 (1), IPv6 (2) or MAC (6)`);
  requireLength(value, 1 + spec.bytes, `address of family ${family}`);
  return spec.format(value.subarray(1, 1 + spec.bytes));
};

type IdKind = 'string' | 'mac' | 'address';

const CHASSIS_ID_KINDS: ReadonlyMap<number, IdKind> = new Map([
  [1, 'string'], // chassis component (entPhysicalAlias)
  [2, 'string'], // interface alias
  [3, 'string'], // port component (entPhysicalAlias)
  [4, 'mac'],
  [5, 'address'],
  [6, 'string'], // interface name
  [7, 'string'], // locally assigned
]);

// Subtype 6 (agent circuit ID, RFC 3046) is deliberately absent, as in inspector.
const PORT_ID_KINDS: ReadonlyMap<number, IdKind> = new Map([
  [1, 'string'], // interface alias
  [2, 'string'], // port component (entPhysicalAlias)
  [3, 'mac'],
  [4, 'address'],
  [5, 'string'], // interface name
  [7, 'string'], // locally assigned
]);

const decodeId = (value: Buffer, kinds: ReadonlyMap<number, IdKind>): string => {
  requireLength(value, 1, 'subtype');
  const subtype = value[0] ?? 0;
  const body = value.subarray(1);
  const kind = kinds.get(subtype);
  if (kind === undefined) {
    return fail(
      subtype === 6 ? 'subtype 6 (agent circuit ID) is not mapped' : `subtype ${subtype} is unknown`,
    );
  }
  if (kind === 'mac') {
    requireLength(body, 6, 'MAC address');
    return formatMac(body.subarray(0, 6));
  }
  if (kind === 'address') return decodeNetworkAddress(body);
  return decodeUtf8(body, `subtype ${subtype} value`);
};

// ---------------------------------------------------------------------------------------------
// Basic management set (802.1AB 8.5)

const handleChassisId: TlvHandler = (value, { parsed }) =>
  setFirst(parsed, 'switch_chassis_id', decodeId(value, CHASSIS_ID_KINDS));

const handlePortId: TlvHandler = (value, { parsed }) =>
  setFirst(parsed, 'switch_port_id', decodeId(value, PORT_ID_KINDS));

const stringHandler =
  (key: 'switch_port_description' | 'switch_system_name' | 'switch_system_description'): TlvHandler =>
  (value, { parsed }) =>
    setFirst(parsed, key, decodeUtf8(value, 'value'));

// Bit 0x0001 ("Other") has no name in inspector's list, so it is not reported either.
const SYSTEM_CAPABILITIES: ReadonlyArray<[number, string]> = [
  [0x0002, 'Repeater'],
  [0x0004, 'Bridge'],
  [0x0008, 'WLAN'],
  [0x0010, 'Router'],
  [0x0020, 'Telephone'],
  [0x0040, 'DOCSIS cable device'],
  [0x0080, 'Station only'],
  [0x0100, 'C-Vlan'],
  [0x0200, 'S-Vlan'],
  [0x0400, 'TPMR'],
];

const namesOfBits = (bits: number, table: ReadonlyArray<[number, string]>): string[] =>
  table.filter(([mask]) => (bits & mask) !== 0).map(([, name]) => name);

const handleSystemCapabilities: TlvHandler = (value, { parsed }) => {
  requireExactLength(value, 4);
  setFirst(parsed, 'switch_capabilities_support', namesOfBits(value.readUInt16BE(0), SYSTEM_CAPABILITIES));
  setFirst(parsed, 'switch_capabilities_enabled', namesOfBits(value.readUInt16BE(2), SYSTEM_CAPABILITIES));
};

// Layout: address string length, family, address, then interface numbering and OID, which
// inspector ignores (and so does the length byte).
const handleManagementAddress: TlvHandler = (value, { parsed }) => {
  requireLength(value, 2, 'management address');
  const address = decodeNetworkAddress(value.subarray(1));
  (parsed.switch_mgmt_addresses ??= []).push(address);
};

// ---------------------------------------------------------------------------------------------
// IEEE 802.1 organizationally specific TLVs (OUI 00-80-c2, 802.1Q Annex D)

const uint16Handler =
  (key: 'switch_port_untagged_vlan_id' | 'switch_port_management_vlan_id' | 'switch_port_mtu'): TlvHandler =>
  (value, { parsed }) => {
    requireLength(value, 2, 'value');
    setFirst(parsed, key, value.readUInt16BE(0));
  };

const handlePortProtocolVlan: TlvHandler = (value, { parsed }) => {
  requireExactLength(value, 3);
  const flags = value[0] ?? 0;
  setFirst(parsed, 'switch_port_protocol_vlan_enabled', (flags & 0x04) !== 0);
  setFirst(parsed, 'switch_port_protocol_vlan_support', (flags & 0x02) !== 0);
  (parsed.switch_port_protocol_vlan_ids ??= []).push(value.readUInt16BE(1));
};

const handleVlanName: TlvHandler = (value, { parsed }) => {
  requireLength(value, 3, 'VLAN ID and name length');
  const nameLength = value[2] ?? 0;
  requireLength(value, 3 + nameLength, `VLAN name of ${nameLength} bytes`);
  // Inspector's PaddedString drops trailing NULs; some switches pad names with them.
  const name = decodeUtf8(value.subarray(3, 3 + nameLength), 'VLAN name').replace(/\0+$/, '');
  const vlan: LldpVlan = { id: value.readUInt16BE(0), name };
  (parsed.switch_port_vlans ??= []).push(vlan);
};

const handleProtocolIdentity: TlvHandler = (value, { parsed }) => {
  requireLength(value, 1, 'protocol identity length');
  const length = value[0] ?? 0;
  requireLength(value, 1 + length, `protocol identity of ${length} bytes`);
  (parsed.switch_protocol_identities ??= []).push(value.toString('hex', 1, 1 + length));
};

// Same layout in 802.1 (subtype 7) and the deprecated 802.3 (subtype 3) version.
const handleLinkAggregation: TlvHandler = (value, { parsed }) => {
  requireExactLength(value, 5);
  const status = value[0] ?? 0;
  setFirst(parsed, 'switch_port_link_aggregation_enabled', (status & 0x02) !== 0);
  setFirst(parsed, 'switch_port_link_aggregation_support', (status & 0x01) !== 0);
  setFirst(parsed, 'switch_port_link_aggregation_id', value.readUInt32BE(1));
};

// ---------------------------------------------------------------------------------------------
// IEEE 802.3 organizationally specific TLVs (OUI 00-12-0f, 802.3 clause 79)

// IANAifMauAutoNegCapBits (RFC 4836); bit 0 (0x8000, "other") is not named, as in inspector.
// Each bit maps to its own name: inspector reads the 10BASE-T hdx bit for "10BASE-T fdx" too.
const PMD_CAPABILITIES: ReadonlyArray<[number, string]> = [
  [0x4000, '10BASE-T hdx'],
  [0x2000, '10BASE-T fdx'],
  [0x1000, '100BASE-T4'],
  [0x0800, '100BASE-TX hdx'],
  [0x0400, '100BASE-TX fdx'],
  [0x0200, '100BASE-T2 hdx'],
  [0x0100, '100BASE-T2 fdx'],
  [0x0080, 'PAUSE fdx'],
  [0x0040, 'Asym PAUSE fdx'],
  [0x0020, 'Sym PAUSE fdx'],
  [0x0010, 'Asym and Sym PAUSE fdx'],
  [0x0008, '1000BASE-X hdx'],
  [0x0004, '1000BASE-X fdx'],
  [0x0002, '1000BASE-T hdx'],
  [0x0001, '1000BASE-T fdx'],
];

// dot3MauType values (IANA-MAU-MIB). 0-53 use inspector's names (its "100 BASE-T4" typo fixed);
// the rest follow the same style for the speeds servers actually link at.
const MAU_TYPES: ReadonlyMap<number, string> = new Map([
  [0, 'Unknown'],
  [1, 'AUI'],
  [2, '10BASE-5'],
  [3, 'FOIRL'],
  [4, '10BASE-2'],
  [5, '10BASE-T duplex mode unknown'],
  [6, '10BASE-FP'],
  [7, '10BASE-FB'],
  [8, '10BASE-FL duplex mode unknown'],
  [9, '10BROAD36'],
  [10, '10BASE-T half duplex'],
  [11, '10BASE-T full duplex'],
  [12, '10BASE-FL half duplex'],
  [13, '10BASE-FL full duplex'],
  [14, '100BASE-T4'],
  [15, '100BASE-TX half duplex'],
  [16, '100BASE-TX full duplex'],
  [17, '100BASE-FX half duplex'],
  [18, '100BASE-FX full duplex'],
  [19, '100BASE-T2 half duplex'],
  [20, '100BASE-T2 full duplex'],
  [21, '1000BASE-X half duplex'],
  [22, '1000BASE-X full duplex'],
  [23, '1000BASE-LX half duplex'],
  [24, '1000BASE-LX full duplex'],
  [25, '1000BASE-SX half duplex'],
  [26, '1000BASE-SX full duplex'],
  [27, '1000BASE-CX half duplex'],
  [28, '1000BASE-CX full duplex'],
  [29, '1000BASE-T half duplex'],
  [30, '1000BASE-T full duplex'],
  [31, '10GBASE-X'],
  [32, '10GBASE-LX4'],
  [33, '10GBASE-R'],
  [34, '10GBASE-ER'],
  [35, '10GBASE-LR'],
  [36, '10GBASE-SR'],
  [37, '10GBASE-W'],
  [38, '10GBASE-EW'],
  [39, '10GBASE-LW'],
  [40, '10GBASE-SW'],
  [41, '10GBASE-CX4'],
  [42, '2BASE-TL'],
  [43, '10PASS-TS'],
  [44, '100BASE-BX10D'],
  [45, '100BASE-BX10U'],
  [46, '100BASE-LX10'],
  [47, '1000BASE-BX10D'],
  [48, '1000BASE-BX10U'],
  [49, '1000BASE-LX10'],
  [50, '1000BASE-PX10D'],
  [51, '1000BASE-PX10U'],
  [52, '1000BASE-PX20D'],
  [53, '1000BASE-PX20U'],
  [54, '10GBASE-T'],
  [55, '10GBASE-LRM'],
  [56, '1000BASE-KX'],
  [57, '10GBASE-KX4'],
  [58, '10GBASE-KR'],
  [70, '40GBASE-KR4'],
  [71, '40GBASE-CR4'],
  [72, '40GBASE-SR4'],
  [73, '40GBASE-FR'],
  [74, '40GBASE-LR4'],
  [75, '100GBASE-CR10'],
  [76, '100GBASE-SR10'],
  [77, '100GBASE-LR4'],
  [78, '100GBASE-ER4'],
  [79, '1000BASE-T1'],
  [88, '25GBASE-CR'],
  [89, '25GBASE-CR-S'],
  [90, '25GBASE-KR'],
  [91, '25GBASE-KR-S'],
  [92, '25GBASE-R'],
  [93, '25GBASE-SR'],
  [94, '25GBASE-T'],
  [95, '40GBASE-ER4'],
  [96, '40GBASE-R'],
  [97, '40GBASE-T'],
  [98, '100GBASE-CR4'],
  [99, '100GBASE-KR4'],
  [100, '100GBASE-KP4'],
  [101, '100GBASE-R'],
  [102, '100GBASE-SR4'],
  [103, '2.5GBASE-T'],
  [104, '5GBASE-T'],
  [114, '25GBASE-LR'],
  [115, '25GBASE-ER'],
  [116, '50GBASE-R'],
  [117, '50GBASE-CR'],
  [118, '50GBASE-KR'],
  [119, '50GBASE-SR'],
  [120, '50GBASE-FR'],
  [121, '50GBASE-LR'],
  [122, '50GBASE-ER'],
  [123, '100GBASE-CR2'],
  [124, '100GBASE-KR2'],
  [125, '100GBASE-SR2'],
  [126, '100GBASE-DR'],
  [127, '200GBASE-R'],
  [128, '200GBASE-DR4'],
  [129, '200GBASE-FR4'],
  [130, '200GBASE-LR4'],
  [131, '200GBASE-CR4'],
  [132, '200GBASE-KR4'],
  [133, '200GBASE-SR4'],
  [134, '200GBASE-ER4'],
  [135, '400GBASE-R'],
  [137, '400GBASE-DR4'],
  [138, '400GBASE-FR8'],
  [139, '400GBASE-LR8'],
  [140, '400GBASE-ER8'],
  [145, '100GBASE-FR1'],
  [146, '100GBASE-LR1'],
  [147, '400GBASE-FR4'],
]);

export const mauTypeName = (mauType: number): string =>
  MAU_TYPES.get(mauType) ?? `unknown MAU type ${mauType}`;

export const physicalCapabilityNames = (pmd: number): string[] => namesOfBits(pmd, PMD_CAPABILITIES).sort();

const handleMacPhy: TlvHandler = (value, { parsed }) => {
  requireExactLength(value, 5);
  const autoneg = value[0] ?? 0;
  setFirst(parsed, 'switch_port_autonegotiation_enabled', (autoneg & 0x02) !== 0);
  setFirst(parsed, 'switch_port_autonegotiation_support', (autoneg & 0x01) !== 0);
  setFirst(parsed, 'switch_port_physical_capabilities', physicalCapabilityNames(value.readUInt16BE(1)));
  setFirst(parsed, 'switch_port_mau_type', mauTypeName(value.readUInt16BE(3)));
};

// ---------------------------------------------------------------------------------------------
// LLDP-MED (OUI 00-12-bb, ANSI/TIA-1057 10.2)

const MED_CAPABILITIES: ReadonlyArray<[number, string]> = [
  [0x0001, 'LLDP-MED capabilities'],
  [0x0002, 'Network policy'],
  [0x0004, 'Location identification'],
  [0x0008, 'Extended power via MDI-PSE'],
  [0x0010, 'Extended power via MDI-PD'],
  [0x0020, 'Inventory'],
];

const MED_DEVICE_TYPES = [
  'Type not defined',
  'Endpoint class I',
  'Endpoint class II',
  'Endpoint class III',
  'Network connectivity',
];

const MED_APPLICATIONS = [
  'Voice',
  'Voice signaling',
  'Guest voice',
  'Guest voice signaling',
  'Softphone voice',
  'Video conferencing',
  'Streaming video',
  'Video signaling',
];

const MED_LOCATION_FORMATS = ['Coordinate-based LCI', 'Civic address LCI', 'ECS ELIN'];

// Power source meanings depend on the power type.
const MED_POWER_TYPES = ['PSE device', 'PD device'];
const MED_PSE_SOURCES = ['Unknown', 'Primary power source', 'Backup power source', 'Reserved'];
const MED_PD_SOURCES = ['Unknown', 'PSE', 'Local', 'PSE and local'];
const MED_POWER_PRIORITIES = ['Unknown', 'Critical', 'High', 'Low'];

const nameAt = (names: readonly string[], index: number, what: string): string =>
  names[index] ?? `reserved ${what} ${index}`;

// For the TIA tables that start at 1, where 0 is reserved.
const nameFromOne = (names: readonly string[], value: number, what: string): string =>
  (value >= 1 ? names[value - 1] : undefined) ?? `reserved ${what} ${value}`;

const handleMedCapabilities: TlvHandler = (value, { med }) => {
  requireExactLength(value, 3);
  setFirstMed(med, 'capabilities', namesOfBits(value.readUInt16BE(0), MED_CAPABILITIES));
  setFirstMed(med, 'device_type', nameAt(MED_DEVICE_TYPES, value[2] ?? 0, 'device type'));
};

// Application type (8 bits), then U, T, X flags, VLAN ID (12), L2 priority (3), DSCP (6).
const handleMedNetworkPolicy: TlvHandler = (value, { med }) => {
  requireExactLength(value, 4);
  const word = value.readUInt32BE(0);
  const applicationType = word >>> 24;
  const policy: LldpMedNetworkPolicy = {
    application: nameFromOne(MED_APPLICATIONS, applicationType, 'application type'),
    application_type: applicationType,
    unknown: (word & 0x800000) !== 0,
    tagged: (word & 0x400000) !== 0,
    vlan_id: (word >>> 9) & 0xfff,
    priority: (word >>> 6) & 0x7,
    dscp: word & 0x3f,
  };
  (med.network_policies ??= []).push(policy);
};

const handleMedLocation: TlvHandler = (value, { med }) => {
  requireLength(value, 1, 'location data format');
  const format = value[0] ?? 0;
  const location: LldpMedLocation = {
    format: nameFromOne(MED_LOCATION_FORMATS, format, 'format'),
    data: value.toString('hex', 1),
  };
  (med.locations ??= []).push(location);
};

const handleMedExtendedPower: TlvHandler = (value, { med }) => {
  requireExactLength(value, 3);
  const flags = value[0] ?? 0;
  const powerType = flags >> 6;
  const sourceNames = powerType === 1 ? MED_PD_SOURCES : MED_PSE_SOURCES;
  setFirstMed(med, 'extended_power', {
    power_type: nameAt(MED_POWER_TYPES, powerType, 'power type'),
    power_source: nameAt(sourceNames, (flags >> 4) & 0x3, 'power source'),
    priority: nameAt(MED_POWER_PRIORITIES, flags & 0xf, 'priority'),
    // The value is in units of 0.1 W.
    power_watts: value.readUInt16BE(1) / 10,
  });
};

const inventoryHandler =
  (key: keyof LldpMedInventory): TlvHandler =>
  (value, { med }) => {
    const text = decodeUtf8(value, 'inventory string');
    const inventory = (med.inventory ??= {});
    if (inventory[key] === undefined) inventory[key] = text;
  };

// ---------------------------------------------------------------------------------------------
// Dispatch

interface OrgFamily {
  name: string;
  subtypes: ReadonlyMap<number, TlvSpec>;
}

const ORG_FAMILIES: ReadonlyMap<string, OrgFamily> = new Map([
  [
    '0080c2',
    {
      name: '802.1',
      subtypes: new Map<number, TlvSpec>([
        [1, { name: 'Port VLAN ID', handle: uint16Handler('switch_port_untagged_vlan_id') }],
        [2, { name: 'Port and Protocol VLAN ID', handle: handlePortProtocolVlan }],
        [3, { name: 'VLAN Name', handle: handleVlanName }],
        [4, { name: 'Protocol Identity', handle: handleProtocolIdentity }],
        [6, { name: 'Management VID', handle: uint16Handler('switch_port_management_vlan_id') }],
        [7, { name: 'Link Aggregation', handle: handleLinkAggregation }],
      ]),
    },
  ],
  [
    '00120f',
    {
      name: '802.3',
      subtypes: new Map<number, TlvSpec>([
        [1, { name: 'MAC/PHY Configuration/Status', handle: handleMacPhy }],
        [3, { name: 'Link Aggregation', handle: handleLinkAggregation }],
        [4, { name: 'Maximum Frame Size', handle: uint16Handler('switch_port_mtu') }],
      ]),
    },
  ],
  [
    '0012bb',
    {
      name: 'LLDP-MED',
      subtypes: new Map<number, TlvSpec>([
        [1, { name: 'Capabilities', handle: handleMedCapabilities }],
        [2, { name: 'Network Policy', handle: handleMedNetworkPolicy }],
        [3, { name: 'Location Identification', handle: handleMedLocation }],
        [4, { name: 'Extended Power-via-MDI', handle: handleMedExtendedPower }],
        [5, { name: 'Hardware Revision', handle: inventoryHandler('hardware_revision') }],
        [6, { name: 'Firmware Revision', handle: inventoryHandler('firmware_revision') }],
        [7, { name: 'Software Revision', handle: inventoryHandler('software_revision') }],
        [8, { name: 'Serial Number', handle: inventoryHandler('serial_number') }],
        [9, { name: 'Manufacturer Name', handle: inventoryHandler('manufacturer') }],
        [10, { name: 'Model Name', handle: inventoryHandler('model') }],
        [11, { name: 'Asset ID', handle: inventoryHandler('asset_id') }],
      ]),
    },
  ],
]);

const ORG_SPECIFIC_TYPE = 127;

const BASIC_TLVS: ReadonlyMap<number, TlvSpec> = new Map([
  [0, { name: 'End', handle: ignore }],
  [1, { name: 'Chassis ID', handle: handleChassisId }],
  [2, { name: 'Port ID', handle: handlePortId }],
  [3, { name: 'TTL', handle: ignore }],
  [4, { name: 'Port Description', handle: stringHandler('switch_port_description') }],
  [5, { name: 'System Name', handle: stringHandler('switch_system_name') }],
  [6, { name: 'System Description', handle: stringHandler('switch_system_description') }],
  [7, { name: 'System Capabilities', handle: handleSystemCapabilities }],
  [8, { name: 'Management Address', handle: handleManagementAddress }],
]);

const formatOui = (oui: string): string => oui.match(/../g)?.join('-') ?? oui;

/**
 * Picks the handler for one TLV, or explains why there is none. A known OUI with an unmapped
 * subtype (802.3 Power via MDI, EEE, ...) gets a silent no-op, as in inspector: those are valid
 * TLVs we simply have no key for.
 */
const resolveSpec = (type: number, value: Buffer): TlvSpec | string => {
  const basic = BASIC_TLVS.get(type);
  if (basic !== undefined) return basic;
  if (type !== ORG_SPECIFIC_TYPE) return `type ${type} is reserved; ignored`;
  if (value.length < 4)
    return `organizationally specific TLV needs 4 bytes of OUI and subtype, got ${value.length}`;
  const oui = value.toString('hex', 0, 3);
  const subtype = value[3] ?? 0;
  const family = ORG_FAMILIES.get(oui);
  if (family === undefined) {
    return `organizationally specific TLV with OUI ${formatOui(oui)} (subtype ${subtype}) is not recognised; ignored`;
  }
  const spec = family.subtypes.get(subtype);
  if (spec === undefined) return { name: `${family.name} subtype ${subtype}`, handle: ignore };
  return {
    name: `${family.name} ${spec.name}`,
    handle: (body, state) => spec.handle(body.subarray(4), state),
  };
};

const HEX = /^(?:[0-9a-f]{2})*$/i;

/** Checks one inventory entry, since raw TLVs may come from a stored or remote inventory. */
const readEntry = (entry: unknown): { type: number; value: Buffer } | string => {
  if (!Array.isArray(entry) || entry.length < 2) return 'is not a [type, hex] pair';
  const [type, hex] = entry as unknown[];
  if (typeof type !== 'number' || !Number.isInteger(type) || type < 0 || type > ORG_SPECIFIC_TYPE) {
    // Only a number is printed: describing arbitrary values (BigInt, symbols) could throw.
    return typeof type === 'number'
      ? `has an invalid TLV type ${type}`
      : `has a TLV type of type ${typeof type}`;
  }
  if (typeof hex !== 'string' || !HEX.test(hex)) return `(type ${type}) has a value that is not hex`;
  return { type, value: Buffer.from(hex, 'hex') };
};

const parseEntry = (entry: unknown, index: number, state: ParseState): string | undefined => {
  const read = readEntry(entry);
  if (typeof read === 'string') return `TLV entry ${index} ${read}; skipped`;
  const spec = resolveSpec(read.type, read.value);
  if (typeof spec === 'string') return `TLV entry ${index}: ${spec}`;
  try {
    spec.handle(read.value, state);
    return undefined;
  } catch (error) {
    const reason = error instanceof MalformedTlvError ? error.message : `unexpected error: ${String(error)}`;
    return `${spec.name} TLV (entry ${index}) skipped: ${reason}`;
  }
};

/**
 * Derives `lldp_basic`'s fields (and `switch_med`) from raw TLVs. Never throws: anything that
 * cannot be used becomes a warning naming the TLV and its position in the list.
 */
export const parseLldp = (tlvs: RawTlv[]): LldpParseResult => {
  const state: ParseState = { parsed: {}, med: {} };
  const warnings: string[] = [];
  if (!Array.isArray(tlvs)) return { parsed: state.parsed, warnings: ['TLV list is not an array'] };
  tlvs.forEach((entry: unknown, index) => {
    const warning = parseEntry(entry, index, state);
    if (warning !== undefined) warnings.push(warning);
  });
  if (Object.keys(state.med).length > 0) state.parsed.switch_med = state.med;
  return { parsed: state.parsed, warnings };
};
