import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { formatIpv6, mauTypeName, parseLldp, physicalCapabilityNames } from '../../agent/lldp/parse.js';
import { decodeTlvs } from '../../agent/lldp/tlv.js';
import type { LldpParsed, RawTlv } from '../../agent/lldp/types.js';

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

/** One TLV as on the wire: 7-bit type, 9-bit length, value. */
const buildTlv = (type: number, value: Buffer | string = Buffer.alloc(0)): Buffer => {
  const body = typeof value === 'string' ? Buffer.from(value, 'hex') : value;
  const header = Buffer.alloc(2);
  header.writeUInt16BE((type << 9) | body.length);
  return Buffer.concat([header, body]);
};

const text = (value: string): string => Buffer.from(value, 'utf8').toString('hex');

/** An organizationally specific TLV (type 127): OUI, subtype, then the value. */
const org = (oui: string, subtype: number, value = ''): Buffer =>
  buildTlv(127, `${oui}${subtype.toString(16).padStart(2, '0')}${value}`);
const DOT1 = '0080c2';
const DOT3 = '00120f';
const MED = '0012bb';

/** A hand-built LLDPDU (TLVs plus End) run through the decoder and the parser. */
const parseFrame = (...tlvs: Buffer[]): ReturnType<typeof parseLldp> => {
  const decoded = decodeTlvs(Buffer.concat([...tlvs, buildTlv(0)]));
  assert.deepEqual(decoded.warnings, [], 'the hand-built frame is well formed');
  return parseLldp(decoded.tlvs);
};

const parseFixture = (name: string): ReturnType<typeof parseLldp> =>
  parseLldp(decodeTlvs(readFixture(name)).tlvs);

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

const LLDPD_SYSTEM = {
  switch_system_description: 'bm-agent test switch (lldpd 1.0.16)',
  switch_capabilities_support: ['Bridge', 'WLAN', 'Router', 'Station only'],
};

// What lldpd 1.0.16 says about a veth: no autonegotiation, PMD "other" only, 10GBASE-T.
const LLDPD_DOT3: LldpParsed = {
  switch_port_link_aggregation_enabled: false,
  switch_port_link_aggregation_support: true,
  switch_port_link_aggregation_id: 0,
  switch_port_autonegotiation_enabled: false,
  switch_port_autonegotiation_support: false,
  switch_port_physical_capabilities: [],
  switch_port_mau_type: '10GBASE-T',
};

describe('parseLldp on real lldpd 1.0.16 captures', () => {
  it('reads the default frame: MAC chassis and port IDs, capabilities, IPv4 management, 802.3', () => {
    assert.deepEqual(parseFixture('lldpd-basic.hex'), {
      parsed: {
        switch_chassis_id: '52:54:00:aa:bb:01',
        switch_port_id: '52:54:00:aa:bb:01',
        switch_system_name: 'sw-test',
        ...LLDPD_SYSTEM,
        switch_capabilities_enabled: ['Station only'],
        switch_mgmt_addresses: ['192.0.2.10'],
        switch_port_description: 'uplink to host eth0',
        ...LLDPD_DOT3,
      },
      warnings: [],
    });
  });

  it('reads VLANs, MTU and LLDP-MED, and warns about the unknown OUI only', () => {
    const { parsed, warnings } = parseFixture('lldpd-vlans-med.hex');
    assert.deepEqual(parsed, {
      switch_chassis_id: '52:54:00:aa:bb:01',
      switch_port_id: 'veth-sw',
      switch_system_name: 'sw-test',
      ...LLDPD_SYSTEM,
      switch_capabilities_enabled: ['Bridge', 'Router'],
      switch_mgmt_addresses: ['192.0.2.10', '2001:db8::10'],
      switch_port_description: 'Ethernet1/7 to host eth0',
      ...LLDPD_DOT3,
      switch_port_untagged_vlan_id: 100,
      switch_port_vlans: [
        { id: 100, name: 'vlan100' },
        { id: 200, name: 'storage' },
      ],
      switch_port_mtu: 9216,
      switch_med: {
        capabilities: [
          'LLDP-MED capabilities',
          'Network policy',
          'Location identification',
          'Extended power via MDI-PSE',
          'Extended power via MDI-PD',
          'Inventory',
        ],
        device_type: 'Network connectivity',
        inventory: {
          hardware_revision: 'HW-1.2',
          firmware_revision: 'FW-3.4',
          software_revision: 'SW-5.6',
          serial_number: 'SN12345',
          manufacturer: 'ExampleNet',
          model: 'EX-48T',
          asset_id: 'ASSET-7',
        },
        locations: [{ format: 'ECS ELIN', data: text('5551234567') }],
        network_policies: [
          {
            application: 'Voice',
            application_type: 1,
            unknown: false,
            tagged: true,
            vlan_id: 100,
            priority: 5,
            dscp: 46,
          },
          {
            application: 'Video conferencing',
            application_type: 6,
            unknown: false,
            tagged: true,
            vlan_id: 200,
            priority: 4,
            dscp: 34,
          },
        ],
        extended_power: {
          power_type: 'PSE device',
          power_source: 'Primary power source',
          priority: 'High',
          power_watts: 15,
        },
      },
    });
    // The 802.3 Power via MDI TLV (known OUI, unmapped subtype) is ignored without a warning.
    assert.deepEqual(warnings, [
      'TLV entry 27: organizationally specific TLV with OUI 00-90-69 (subtype 1) is not recognised; ignored',
    ]);
  });

  it('reads locally assigned IDs and an IPv6-only management address', () => {
    assert.deepEqual(parseFixture('lldpd-local-ids.hex'), {
      parsed: {
        switch_chassis_id: 'leaf-07-chassis',
        switch_port_id: 'Gi0/7',
        switch_system_name: 'leaf-07.example.net',
        ...LLDPD_SYSTEM,
        switch_capabilities_enabled: ['Station only'],
        switch_mgmt_addresses: ['2001:db8::10'],
        switch_port_description: 'server rack 12 port 7',
        ...LLDPD_DOT3,
      },
      warnings: [],
    });
  });
});

describe('chassis and port IDs', () => {
  const chassis = (hex: string): string | undefined => parseFrame(buildTlv(1, hex)).parsed.switch_chassis_id;
  const port = (hex: string): string | undefined => parseFrame(buildTlv(2, hex)).parsed.switch_port_id;

  it('decodes every chassis ID subtype inspector maps', () => {
    for (const subtype of ['01', '02', '03', '06', '07'])
      assert.equal(chassis(subtype + text('sw01')), 'sw01');
    assert.equal(chassis('04001b21aabbcc'), '00:1b:21:aa:bb:cc');
    assert.equal(chassis('0501c000020f'), '192.0.2.15');
    assert.equal(chassis('050220010db8000000000000000000000001'), '2001:db8::1');
    assert.equal(chassis('0506001b21aabbcc'), '00:1b:21:aa:bb:cc');
  });

  it('decodes port ID subtypes 1-5 and 7', () => {
    for (const subtype of ['01', '02', '05', '07'])
      assert.equal(port(subtype + text('Ethernet1/7')), 'Ethernet1/7');
    assert.equal(port('03001b21aabbcc'), '00:1b:21:aa:bb:cc');
    assert.equal(port('0401c0000201'), '192.0.2.1');
  });

  it('does not map port ID subtype 6 (agent circuit ID) and names it in the warning', () => {
    assert.deepEqual(parseFrame(buildTlv(2, '06' + text('circuit-9'))), {
      parsed: {},
      warnings: ['Port ID TLV (entry 0) skipped: subtype 6 (agent circuit ID) is not mapped'],
    });
  });

  it('warns about unknown subtypes, families, short MACs and bad UTF-8', () => {
    const { parsed, warnings } = parseFrame(
      buildTlv(1, '00' + text('x')),
      buildTlv(1, '08' + text('x')),
      buildTlv(1, '0507c000020f'),
      buildTlv(1, '04001b21'),
      buildTlv(1, ''),
      buildTlv(2, '05c328'),
      buildTlv(1, '0502c0000201'),
    );
    assert.deepEqual(parsed, {});
    assert.deepEqual(warnings, [
      'Chassis ID TLV (entry 0) skipped: subtype 0 is unknown',
      'Chassis ID TLV (entry 1) skipped: subtype 8 is unknown',
      'Chassis ID TLV (entry 2) skipped: address family 7 is not IPv4 (1), IPv6 (2) or MAC (6)',
      'Chassis ID TLV (entry 3) skipped: MAC address needs 6 bytes, got 3',
      'Chassis ID TLV (entry 4) skipped: subtype needs 1 byte, got 0',
      'Port ID TLV (entry 5) skipped: subtype 5 value is not valid UTF-8',
      'Chassis ID TLV (entry 6) skipped: address of family 2 needs 17 bytes, got 5',
    ]);
  });

  it('keeps the first usable value; a malformed first TLV does not block the next', () => {
    const { parsed } = parseFrame(
      buildTlv(1, '04001b21'),
      buildTlv(1, '04001b21aabbcc'),
      buildTlv(1, '04001b21ddeeff'),
      buildTlv(2, '05' + text('eth0')),
      buildTlv(2, '05' + text('eth1')),
    );
    assert.equal(parsed.switch_chassis_id, '00:1b:21:aa:bb:cc');
    assert.equal(parsed.switch_port_id, 'eth0');
  });

  it('ignores bytes after a MAC address, as inspector does', () => {
    assert.equal(chassis('04001b21aabbccdd'), '00:1b:21:aa:bb:cc');
  });
});

describe('strings, capabilities and management addresses', () => {
  it('keeps empty and 511-byte strings as they are', () => {
    const long = 'd'.repeat(511);
    assert.deepEqual(parseFrame(buildTlv(4), buildTlv(5), buildTlv(6, text(long))).parsed, {
      switch_port_description: '',
      switch_system_name: '',
      switch_system_description: long,
    });
  });

  it('names every capability bit in inspector order and ignores "other"', () => {
    assert.deepEqual(parseFrame(buildTlv(7, '07ff0015')).parsed, {
      switch_capabilities_support: [
        'Repeater',
        'Bridge',
        'WLAN',
        'Router',
        'Telephone',
        'DOCSIS cable device',
        'Station only',
        'C-Vlan',
        'S-Vlan',
        'TPMR',
      ],
      switch_capabilities_enabled: ['Bridge', 'Router'],
    });
  });

  it('requires exactly 4 bytes of capabilities', () => {
    assert.deepEqual(parseFrame(buildTlv(7, '001400'), buildTlv(7, '0014001400')).warnings, [
      'System Capabilities TLV (entry 0) skipped: expected 4 bytes, got 3',
      'System Capabilities TLV (entry 1) skipped: expected 4 bytes, got 5',
    ]);
  });

  it('collects IPv4, IPv6 and MAC management addresses in order', () => {
    const { parsed, warnings } = parseFrame(
      buildTlv(8, '0501c000020f020000000000'),
      buildTlv(8, '110220010db885a3000000008a2e03707334020000000000'),
      buildTlv(8, '0706001b21aabbcc02000003e900'),
      buildTlv(8, '0501'),
      buildTlv(8, '0510c000020f'),
    );
    assert.deepEqual(parsed.switch_mgmt_addresses, [
      '192.0.2.15',
      '2001:db8:85a3::8a2e:370:7334',
      '00:1b:21:aa:bb:cc',
    ]);
    assert.deepEqual(warnings, [
      'Management Address TLV (entry 3) skipped: address of family 1 needs 5 bytes, got 1',
      'Management Address TLV (entry 4) skipped: address family 16 is not IPv4 (1), IPv6 (2) or MAC (6)',
    ]);
  });

  it('formats IPv6 addresses the RFC 5952 way', () => {
    const v6 = (hex: string): string => formatIpv6(Buffer.from(hex, 'hex'));
    assert.equal(v6('00000000000000000000000000000000'), '::');
    assert.equal(v6('00000000000000000000000000000001'), '::1');
    assert.equal(v6('fe800000000000000000000000000000'), 'fe80::');
    assert.equal(v6('20010db8000000010001000100010001'), '2001:db8:0:1:1:1:1:1');
    assert.equal(v6('20010db8000000000001000000000001'), '2001:db8::1:0:0:1');
    assert.equal(v6('20010db800000000000000000000ABCD'), '2001:db8::abcd');
    assert.equal(v6('00000000000000000000ffffc0000201'), '::ffff:192.0.2.1');
  });
});

describe('802.1 TLVs', () => {
  it('reads PVID, port-and-protocol VLANs, VLAN names, protocol identities, MVID, link aggregation', () => {
    const { parsed, warnings } = parseFrame(
      org(DOT1, 1, '0066'),
      org(DOT1, 1, '0067'),
      org(DOT1, 2, '06000a'),
      org(DOT1, 2, '000014'),
      org(DOT1, 3, '0065' + '07' + text('vlan101')),
      org(DOT1, 3, '0ffe' + '08' + text('prod') + '00000000'),
      org(DOT1, 3, '0001' + '00'),
      org(DOT1, 4, '080026424203000000'),
      org(DOT1, 4, '02888e'),
      org(DOT1, 6, '0058'),
      org(DOT1, 7, '0300000002'),
    );
    assert.deepEqual(warnings, []);
    assert.deepEqual(parsed, {
      switch_port_untagged_vlan_id: 102,
      switch_port_protocol_vlan_enabled: true,
      switch_port_protocol_vlan_support: true,
      switch_port_protocol_vlan_ids: [10, 20],
      switch_port_vlans: [
        { id: 101, name: 'vlan101' },
        { id: 4094, name: 'prod' },
        { id: 1, name: '' },
      ],
      switch_protocol_identities: ['0026424203000000', '888e'],
      switch_port_management_vlan_id: 88,
      switch_port_link_aggregation_enabled: true,
      switch_port_link_aggregation_support: true,
      switch_port_link_aggregation_id: 2,
    });
  });

  it('reads the support and enabled flags separately', () => {
    assert.deepEqual(parseFrame(org(DOT1, 2, '02000a'), org(DOT1, 7, '0100000007')).parsed, {
      switch_port_protocol_vlan_enabled: false,
      switch_port_protocol_vlan_support: true,
      switch_port_protocol_vlan_ids: [10],
      switch_port_link_aggregation_enabled: false,
      switch_port_link_aggregation_support: true,
      switch_port_link_aggregation_id: 7,
    });
  });

  it('skips truncated and wrongly sized 802.1 TLVs with a warning naming each', () => {
    const { parsed, warnings } = parseFrame(
      org(DOT1, 1),
      org(DOT1, 1, '00'),
      org(DOT1, 2, '0600'),
      org(DOT1, 3, '006507'),
      org(DOT1, 3, '0065'),
      org(DOT1, 4, '08002642'),
      org(DOT1, 6),
      org(DOT1, 7, '03000000'),
      org(DOT1, 3, '0065' + '02' + 'c328'),
    );
    assert.deepEqual(parsed, {});
    assert.deepEqual(warnings, [
      '802.1 Port VLAN ID TLV (entry 0) skipped: value needs 2 bytes, got 0',
      '802.1 Port VLAN ID TLV (entry 1) skipped: value needs 2 bytes, got 1',
      '802.1 Port and Protocol VLAN ID TLV (entry 2) skipped: expected 3 bytes, got 2',
      '802.1 VLAN Name TLV (entry 3) skipped: VLAN name of 7 bytes needs 10 bytes, got 3',
      '802.1 VLAN Name TLV (entry 4) skipped: VLAN ID and name length needs 3 bytes, got 2',
      '802.1 Protocol Identity TLV (entry 5) skipped: protocol identity of 8 bytes needs 9 bytes, got 4',
      '802.1 Management VID TLV (entry 6) skipped: value needs 2 bytes, got 0',
      '802.1 Link Aggregation TLV (entry 7) skipped: expected 5 bytes, got 4',
      '802.1 VLAN Name TLV (entry 8) skipped: VLAN name is not valid UTF-8',
    ]);
  });

  it('reads a VLAN name TLV filling the largest possible TLV', () => {
    const name = 'v'.repeat(255);
    const { parsed } = parseFrame(org(DOT1, 3, '0064ff' + text(name) + 'ee'.repeat(249)));
    assert.deepEqual(parsed.switch_port_vlans, [{ id: 100, name }]);
  });
});

describe('802.3 TLVs', () => {
  const macPhy = (hex: string): LldpParsed => parseFrame(org(DOT3, 1, hex)).parsed;

  it('reads autonegotiation, physical capabilities (sorted) and the MAU type', () => {
    assert.deepEqual(macPhy('036c110010'), {
      switch_port_autonegotiation_enabled: true,
      switch_port_autonegotiation_support: true,
      switch_port_physical_capabilities: [
        '1000BASE-T fdx',
        '100BASE-TX fdx',
        '100BASE-TX hdx',
        '10BASE-T fdx',
        '10BASE-T hdx',
        'Asym and Sym PAUSE fdx',
      ],
      switch_port_mau_type: '100BASE-TX full duplex',
    });
    assert.deepEqual(macPhy('0100000036'), {
      switch_port_autonegotiation_enabled: false,
      switch_port_autonegotiation_support: true,
      switch_port_physical_capabilities: [],
      switch_port_mau_type: '10GBASE-T',
    });
  });

  // Inspector reads the 10BASE-T hdx bit for both names; each bit has its own meaning here.
  it('maps the 10BASE-T hdx and fdx bits separately', () => {
    assert.deepEqual(physicalCapabilityNames(0x4000), ['10BASE-T hdx']);
    assert.deepEqual(physicalCapabilityNames(0x2000), ['10BASE-T fdx']);
    assert.deepEqual(physicalCapabilityNames(0x8000), []);
    assert.deepEqual(physicalCapabilityNames(0xffff), [
      '1000BASE-T fdx',
      '1000BASE-T hdx',
      '1000BASE-X fdx',
      '1000BASE-X hdx',
      '100BASE-T2 fdx',
      '100BASE-T2 hdx',
      '100BASE-T4',
      '100BASE-TX fdx',
      '100BASE-TX hdx',
      '10BASE-T fdx',
      '10BASE-T hdx',
      'Asym PAUSE fdx',
      'Asym and Sym PAUSE fdx',
      'PAUSE fdx',
      'Sym PAUSE fdx',
    ]);
  });

  it('names common MAU types and falls back for unknown ones instead of dropping the TLV', () => {
    const expected: Array<[number, string]> = [
      [0, 'Unknown'],
      [11, '10BASE-T full duplex'],
      [16, '100BASE-TX full duplex'],
      [30, '1000BASE-T full duplex'],
      [36, '10GBASE-SR'],
      [54, '10GBASE-T'],
      [93, '25GBASE-SR'],
      [88, '25GBASE-CR'],
      [72, '40GBASE-SR4'],
      [102, '100GBASE-SR4'],
      [98, '100GBASE-CR4'],
      [133, '200GBASE-SR4'],
      [105, 'unknown MAU type 105'],
      [0xffff, 'unknown MAU type 65535'],
    ];
    for (const [mau, name] of expected) assert.equal(mauTypeName(mau), name);
    assert.equal(macPhy('036c11ffff').switch_port_mau_type, 'unknown MAU type 65535');
  });

  it('reads the deprecated 802.3 link aggregation TLV and the maximum frame size', () => {
    assert.deepEqual(parseFrame(org(DOT3, 3, '0300000002'), org(DOT3, 4, '05ea'), org(DOT3, 4, '2400')), {
      parsed: {
        switch_port_link_aggregation_enabled: true,
        switch_port_link_aggregation_support: true,
        switch_port_link_aggregation_id: 2,
        switch_port_mtu: 1514,
      },
      warnings: [],
    });
  });

  it('skips wrongly sized 802.3 TLVs with a warning naming each', () => {
    const { parsed, warnings } = parseFrame(
      org(DOT3, 1, '036c11'),
      org(DOT3, 1, '036c110010ff'),
      org(DOT3, 3, '03'),
      org(DOT3, 4, '05'),
    );
    assert.deepEqual(parsed, {});
    assert.deepEqual(warnings, [
      '802.3 MAC/PHY Configuration/Status TLV (entry 0) skipped: expected 5 bytes, got 3',
      '802.3 MAC/PHY Configuration/Status TLV (entry 1) skipped: expected 5 bytes, got 6',
      '802.3 Link Aggregation TLV (entry 2) skipped: expected 5 bytes, got 1',
      '802.3 Maximum Frame Size TLV (entry 3) skipped: value needs 2 bytes, got 1',
    ]);
  });
});

describe('LLDP-MED TLVs', () => {
  it('reads capabilities, device type, policies, locations, power and inventory', () => {
    const { parsed, warnings } = parseFrame(
      org(MED, 1, '002302'),
      org(MED, 1, '003f04'),
      org(MED, 2, '01c00000'),
      org(MED, 2, '08000000'),
      org(MED, 3, '01' + 'aa'.repeat(16)),
      org(MED, 3, '02' + '1a2b'),
      org(MED, 4, '6301f4'),
      org(MED, 4, '120096'),
      org(MED, 5, text('rev A')),
      org(MED, 5, text('rev B')),
      org(MED, 8, ''),
      org(MED, 10, text('Phone 9000')),
    );
    assert.deepEqual(warnings, []);
    assert.deepEqual(parsed, {
      switch_med: {
        capabilities: ['LLDP-MED capabilities', 'Network policy', 'Inventory'],
        device_type: 'Endpoint class II',
        network_policies: [
          {
            application: 'Voice',
            application_type: 1,
            unknown: true,
            tagged: true,
            vlan_id: 0,
            priority: 0,
            dscp: 0,
          },
          {
            application: 'Video signaling',
            application_type: 8,
            unknown: false,
            tagged: false,
            vlan_id: 0,
            priority: 0,
            dscp: 0,
          },
        ],
        locations: [
          { format: 'Coordinate-based LCI', data: 'aa'.repeat(16) },
          { format: 'Civic address LCI', data: '1a2b' },
        ],
        extended_power: {
          power_type: 'PD device',
          power_source: 'Local',
          priority: 'Low',
          power_watts: 50,
        },
        inventory: { hardware_revision: 'rev A', serial_number: '', model: 'Phone 9000' },
      },
    });
  });

  it('names reserved values instead of failing', () => {
    const { parsed } = parseFrame(
      org(MED, 1, '000009'),
      org(MED, 2, '00000000'),
      org(MED, 2, '09000000'),
      org(MED, 3, '00'),
      org(MED, 3, '07'),
      org(MED, 4, 'bf0000'),
    );
    assert.deepEqual(parsed.switch_med, {
      capabilities: [],
      device_type: 'reserved device type 9',
      network_policies: [
        {
          application: 'reserved application type 0',
          application_type: 0,
          unknown: false,
          tagged: false,
          vlan_id: 0,
          priority: 0,
          dscp: 0,
        },
        {
          application: 'reserved application type 9',
          application_type: 9,
          unknown: false,
          tagged: false,
          vlan_id: 0,
          priority: 0,
          dscp: 0,
        },
      ],
      locations: [
        { format: 'reserved format 0', data: '' },
        { format: 'reserved format 7', data: '' },
      ],
      extended_power: {
        power_type: 'reserved power type 2',
        power_source: 'Reserved',
        priority: 'reserved priority 15',
        power_watts: 0,
      },
    });
  });

  it('skips wrongly sized LLDP-MED TLVs and leaves switch_med out when nothing was usable', () => {
    const { parsed, warnings } = parseFrame(
      org(MED, 1, '003f'),
      org(MED, 2, '0140c9'),
      org(MED, 3),
      org(MED, 4, '1200'),
      org(MED, 6, 'ff'),
      org(MED, 99, 'ff'),
    );
    assert.deepEqual(parsed, {});
    assert.deepEqual(warnings, [
      'LLDP-MED Capabilities TLV (entry 0) skipped: expected 3 bytes, got 2',
      'LLDP-MED Network Policy TLV (entry 1) skipped: expected 4 bytes, got 3',
      'LLDP-MED Location Identification TLV (entry 2) skipped: location data format needs 1 byte, got 0',
      'LLDP-MED Extended Power-via-MDI TLV (entry 3) skipped: expected 3 bytes, got 2',
      'LLDP-MED Firmware Revision TLV (entry 4) skipped: inventory string is not valid UTF-8',
    ]);
  });
});

describe('TLVs and entries parseLldp does not use', () => {
  it('warns about unknown OUIs and short organizational TLVs; ignores unmapped subtypes, TTL, End', () => {
    const { parsed, warnings } = parseFrame(
      buildTlv(3, '0078'),
      org('009069', 1, text('BP0214250926')),
      org('23ac00', 116, ''),
      buildTlv(127, '0080c2'),
      buildTlv(127),
      org(DOT3, 2, '0f0204'),
      org(DOT3, 5, '0000000000'),
      org(DOT1, 5, '00'),
      buildTlv(9, 'abcd'),
      buildTlv(126),
    );
    assert.deepEqual(parsed, {});
    assert.deepEqual(warnings, [
      'TLV entry 1: organizationally specific TLV with OUI 00-90-69 (subtype 1) is not recognised; ignored',
      'TLV entry 2: organizationally specific TLV with OUI 23-ac-00 (subtype 116) is not recognised; ignored',
      'TLV entry 3: organizationally specific TLV needs 4 bytes of OUI and subtype, got 3',
      'TLV entry 4: organizationally specific TLV needs 4 bytes of OUI and subtype, got 0',
      'TLV entry 8: type 9 is reserved; ignored',
      'TLV entry 9: type 126 is reserved; ignored',
    ]);
  });

  it('keeps going after End, as inspector does with whatever list it is given', () => {
    const tlvs: RawTlv[] = [
      [0, ''],
      [5, text('late')],
    ];
    assert.deepEqual(parseLldp(tlvs), { parsed: { switch_system_name: 'late' }, warnings: [] });
  });

  it('reports malformed list entries instead of throwing', () => {
    const entries = [
      'not a pair',
      [5],
      [128, ''],
      [-1, ''],
      [1.5, ''],
      ['5', '00'],
      [5, 'abc'],
      [5, 'zz'],
      [5, 42],
      null,
      [BigInt(5), ''],
      [Symbol('x'), ''],
      [5, text('fine')],
    ];
    const { parsed, warnings } = parseLldp(entries as unknown as RawTlv[]);
    assert.deepEqual(parsed, { switch_system_name: 'fine' });
    assert.deepEqual(warnings, [
      'TLV entry 0 is not a [type, hex] pair; skipped',
      'TLV entry 1 is not a [type, hex] pair; skipped',
      'TLV entry 2 has an invalid TLV type 128; skipped',
      'TLV entry 3 has an invalid TLV type -1; skipped',
      'TLV entry 4 has an invalid TLV type 1.5; skipped',
      'TLV entry 5 has a TLV type of type string; skipped',
      'TLV entry 6 (type 5) has a value that is not hex; skipped',
      'TLV entry 7 (type 5) has a value that is not hex; skipped',
      'TLV entry 8 (type 5) has a value that is not hex; skipped',
      'TLV entry 9 is not a [type, hex] pair; skipped',
      'TLV entry 10 has a TLV type of type bigint; skipped',
      'TLV entry 11 has a TLV type of type symbol; skipped',
    ]);
    assert.deepEqual(parseLldp('nope' as unknown as RawTlv[]), {
      parsed: {},
      warnings: ['TLV list is not an array'],
    });
  });

  it('returns an empty result for an empty list', () => {
    assert.deepEqual(parseLldp([]), { parsed: {}, warnings: [] });
  });

  it('survives 10k seeded random TLV lists aimed at every handler', () => {
    const random = seededRandom(0x0123bb);
    const ouis = [DOT1, DOT3, MED, '009069'];
    const randomHex = (maxBytes: number): string =>
      Buffer.from(
        Array.from({ length: Math.floor(random() * maxBytes) }, () => Math.floor(random() * 256)),
      ).toString('hex');
    for (let run = 0; run < 10_000; run += 1) {
      const tlvs: RawTlv[] = Array.from({ length: 1 + Math.floor(random() * 6) }, () => {
        if (random() < 0.5) {
          const oui = ouis[Math.floor(random() * ouis.length)] ?? DOT1;
          const subtype = Math.floor(random() * 13)
            .toString(16)
            .padStart(2, '0');
          return [127, oui + subtype + randomHex(12)];
        }
        return [Math.floor(random() * 10), randomHex(24)];
      });
      const { parsed, warnings } = parseLldp(tlvs);
      assert.ok(typeof parsed === 'object' && Array.isArray(warnings), `run ${run}`);
      assert.ok(
        warnings.every((warning) => !warning.includes('unexpected error')),
        `run ${run}: ${JSON.stringify(tlvs)} -> ${warnings.join(' | ')}`,
      );
      assert.doesNotThrow(() => JSON.stringify(parsed));
    }
  });

  it('survives 10k seeded random frames through decodeTlvs and parseLldp', () => {
    const random = seededRandom(0xfeed);
    for (let run = 0; run < 10_000; run += 1) {
      const input = Buffer.from(
        Array.from({ length: Math.floor(random() * 300) }, () => Math.floor(random() * 256)),
      );
      const { warnings } = parseLldp(decodeTlvs(input).tlvs);
      assert.ok(
        warnings.every((warning) => !warning.includes('unexpected error')),
        `run ${run}`,
      );
    }
  });
});
