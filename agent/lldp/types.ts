/** The shapes every LLDP module shares: raw TLVs as IPA reports them, and ironic-inspector's parsed fields. */

/** One TLV as `[type, hex of the value without its 2-byte header]`, IPA's inventory format. */
export type RawTlv = [number, string];

export interface LldpVlan {
  id: number;
  name: string;
}

/**
 * The fields ironic-inspector's `lldp_basic` hook derives from the TLVs (scalars keep the first
 * value seen, lists append), plus LLDP-MED where present. Absent fields are left out.
 */
export interface LldpParsed {
  switch_chassis_id?: string;
  switch_port_id?: string;
  switch_port_description?: string;
  switch_system_name?: string;
  switch_system_description?: string;
  switch_capabilities_support?: string[];
  switch_capabilities_enabled?: string[];
  switch_mgmt_addresses?: string[];
  switch_port_untagged_vlan_id?: number;
  switch_port_protocol_vlan_enabled?: boolean;
  switch_port_protocol_vlan_support?: boolean;
  switch_port_protocol_vlan_ids?: number[];
  switch_port_vlans?: LldpVlan[];
  switch_protocol_identities?: string[];
  switch_port_management_vlan_id?: number;
  switch_port_link_aggregation_enabled?: boolean;
  switch_port_link_aggregation_support?: boolean;
  switch_port_link_aggregation_id?: number;
  switch_port_autonegotiation_enabled?: boolean;
  switch_port_autonegotiation_support?: boolean;
  switch_port_physical_capabilities?: string[];
  switch_port_mau_type?: string;
  switch_port_mtu?: number;
  /** LLDP-MED (TIA OUI 00-12-bb) fields, when the neighbour sends them. */
  switch_med?: Record<string, unknown>;
}

export interface TlvDecoding {
  tlvs: RawTlv[];
  /** Set when the frame was malformed; the TLVs read before the problem are still reported. */
  warnings: string[];
}

/** What one interface's LLDP collection ended with. */
export type LldpStatus = 'received' | 'no_carrier' | 'timeout' | 'error';

export interface InterfaceLldp {
  interface: string;
  status: LldpStatus;
  /** Raw TLVs of the first frame, `[]` when none arrived. */
  tlvs: RawTlv[];
  parsed: LldpParsed;
  warnings: string[];
  /** Milliseconds from the start of the collection to the first frame, null without one. */
  received_after_ms: number | null;
  error?: string;
}
