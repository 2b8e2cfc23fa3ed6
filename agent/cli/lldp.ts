import type { InterfaceLldp } from '../lldp/types.js';
import { renderTable } from './format.js';
import { flagList, runVerb } from './local-run.js';

const first = (...values: Array<string | undefined>): string | null =>
  values.find((value) => value !== undefined && value !== '') ?? null;

const describeVlans = (result: InterfaceLldp): string | null => {
  const { switch_port_vlans: vlans, switch_port_untagged_vlan_id: untagged } = result.parsed;
  const parts = (vlans ?? []).map((vlan) => (vlan.name ? `${vlan.id} (${vlan.name})` : String(vlan.id)));
  if (untagged !== undefined) parts.unshift(`untagged ${untagged}`);
  return parts.length > 0 ? parts.join(', ') : null;
};

const describeStatus = (result: InterfaceLldp): string => {
  if (result.status === 'error') return `error: ${result.error ?? 'unknown'}`;
  if (result.warnings.length > 0) return `${result.status} (${result.warnings.length} warnings)`;
  return result.status;
};

export const renderLldp = (interfaces: InterfaceLldp[]): string => {
  if (interfaces.length === 0)
    return 'no interfaces to listen on (no physical NICs; name some with --interface)\n';
  const table = renderTable(
    ['INTERFACE', 'STATUS', 'SWITCH', 'PORT', 'VLANS', 'MTU', 'AFTER'],
    interfaces.map((result) => [
      result.interface,
      describeStatus(result),
      first(result.parsed.switch_system_name, result.parsed.switch_chassis_id),
      first(result.parsed.switch_port_id, result.parsed.switch_port_description),
      describeVlans(result),
      result.parsed.switch_port_mtu,
      result.received_after_ms === null ? null : `${result.received_after_ms} ms`,
    ]),
  );
  const warnings = interfaces.flatMap((result) =>
    result.warnings.map((warning) => `${result.interface}: ${warning}`),
  );
  return `${table}\n${warnings.length > 0 ? `\nwarnings:\n  ${warnings.join('\n  ')}\n` : ''}`;
};

export const runLldp = (flags: Record<string, unknown>): Promise<number> => {
  const params: Record<string, unknown> = {};
  const interfaces = flagList(flags.interface);
  if (interfaces.length > 0) params.interfaces = interfaces;
  // Left to the engine's schema check when malformed, so the message names the field.
  if (flags.timeout !== undefined) params.timeout_s = flags.timeout;
  return runVerb(flags, 'lldp.collect', params, (result) =>
    renderLldp((result as { interfaces?: InterfaceLldp[] }).interfaces ?? []),
  );
};
