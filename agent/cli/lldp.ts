import { buildRegistry } from '../commands/catalog.js';
import type { InterfaceLldp } from '../lldp/types.js';
import { EXIT_OK, prepare } from './context.js';
import { renderTable } from './format.js';
import { runLocally } from './local-run.js';

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

const asStrings = (value: unknown): string[] | undefined => {
  if (value === undefined) return undefined;
  return (Array.isArray(value) ? value : [value]).map(String);
};

export const runLldp = async (flags: Record<string, unknown>): Promise<number> => {
  const { loaded, logger } = await prepare(flags, { stream: 'stderr' });
  const json = flags.json === true;
  const params: Record<string, unknown> = {};
  const interfaces = asStrings(flags.interface);
  if (interfaces !== undefined) params.interfaces = interfaces;
  // Left to the engine's schema check when malformed, so the message names the field.
  if (flags.timeout !== undefined) params.timeout_s = flags.timeout;
  const { exitCode, record } = await runLocally(
    buildRegistry(loaded.config, logger),
    logger,
    'lldp.collect',
    params,
    { json },
  );
  if (exitCode !== EXIT_OK || !record) return exitCode;
  const result = (record.result ?? {}) as { interfaces?: InterfaceLldp[] };
  process.stdout.write(json ? `${JSON.stringify(result, null, 2)}\n` : renderLldp(result.interfaces ?? []));
  return EXIT_OK;
};
