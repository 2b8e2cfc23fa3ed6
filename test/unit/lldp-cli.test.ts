import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { renderLldp } from '../../agent/cli/lldp.js';
import type { InterfaceLldp } from '../../agent/lldp/types.js';

const base = (name: string, status: InterfaceLldp['status']): InterfaceLldp => ({
  interface: name,
  status,
  tlvs: [],
  parsed: {},
  warnings: [],
  received_after_ms: null,
});

describe('bm-agent lldp table', () => {
  it('shows switch, port, VLANs, MTU and timing, falling back to chassis and port IDs', () => {
    const text = renderLldp([
      {
        ...base('eth0', 'received'),
        parsed: {
          switch_system_name: 'leaf-1',
          switch_chassis_id: '00:11:22:33:44:55',
          switch_port_id: 'Ethernet1/7',
          switch_port_vlans: [{ id: 100, name: 'prov' }],
          switch_port_untagged_vlan_id: 100,
          switch_port_mtu: 9216,
        },
        received_after_ms: 412,
      },
      {
        ...base('eth1', 'received'),
        parsed: { switch_chassis_id: '00:11:22:33:44:66', switch_port_description: 'uplink' },
        warnings: ['TLV after End'],
        received_after_ms: 90,
      },
      base('eth2', 'no_carrier'),
      { ...base('eth3', 'error'), error: 'tcpdump is not on PATH' },
    ]);
    const lines = text.split('\n');
    assert.match(lines[0] ?? '', /^INTERFACE\s+STATUS\s+SWITCH\s+PORT\s+VLANS\s+MTU\s+AFTER$/);
    assert.match(
      text,
      /eth0\s+received\s+leaf-1\s+Ethernet1\/7\s+untagged 100, 100 \(prov\)\s+9216\s+412 ms/,
    );
    assert.match(text, /eth1\s+received \(1 warnings\)\s+00:11:22:33:44:66\s+uplink\s+-\s+-\s+90 ms/);
    assert.match(text, /eth2\s+no_carrier(\s+-){5}/);
    assert.match(text, /eth3\s+error: tcpdump is not on PATH/);
    assert.match(text, /warnings:\n {2}eth1: TLV after End/);
  });

  it('says so when there is nothing to listen on', () => {
    assert.match(renderLldp([]), /no interfaces to listen on/);
  });
});
