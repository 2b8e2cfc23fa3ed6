import { formatBytes, renderTable } from './format.js';
import { runVerb } from './local-run.js';

interface InventoryView {
  cpu?: { model_name?: unknown; count?: unknown; architecture?: unknown; frequency?: unknown };
  memory?: { total?: unknown; physical_mb?: unknown };
  disks?: Array<Record<string, unknown>>;
  interfaces?: Array<Record<string, unknown>>;
  system_vendor?: { manufacturer?: unknown; product_name?: unknown; serial_number?: unknown };
  boot?: { current_boot_mode?: unknown; pxe_interface?: unknown };
  hostname?: unknown;
  bmc_address?: unknown;
}

const text = (value: unknown): string | null =>
  value === null || value === undefined || value === '' ? null : String(value);
const num = (value: unknown): number | null => (typeof value === 'number' ? value : null);

/** The switch and port columns appear once LLDP was collected: that is what the cabling check needs. */
const renderNics = (nics: Array<Record<string, unknown>>): string => {
  const withLldp = nics.some((nic) => Array.isArray(nic.lldp));
  const headers = ['NIC', 'MAC', 'IPV4', 'CARRIER', 'SPEED', ...(withLldp ? ['SWITCH', 'PORT'] : [])];
  const rows = nics.map((nic) => {
    const parsed = (nic.lldp_processed ?? {}) as Record<string, unknown>;
    const row = [
      text(nic.name),
      text(nic.mac_address),
      text(nic.ipv4_address),
      text(nic.has_carrier),
      num(nic.speed_mbps) === null ? null : `${String(nic.speed_mbps)} Mb/s`,
    ];
    if (!withLldp) return row;
    const heard = Array.isArray(nic.lldp) && nic.lldp.length > 0;
    return [
      ...row,
      heard ? (text(parsed.switch_system_name) ?? text(parsed.switch_chassis_id)) : 'no LLDP',
      heard ? text(parsed.switch_port_id) : null,
    ];
  });
  return renderTable(headers, rows);
};

export const renderInventory = (inventory: InventoryView): string => {
  const system = inventory.system_vendor ?? {};
  const lines = [
    `host      ${text(inventory.hostname) ?? '-'}`,
    `system    ${[system.manufacturer, system.product_name].map(text).filter(Boolean).join(' ') || '-'} (serial ${text(system.serial_number) ?? '-'})`,
    `cpu       ${text(inventory.cpu?.count) ?? '?'} x ${text(inventory.cpu?.model_name) ?? '?'} (${text(inventory.cpu?.architecture) ?? '?'})`,
    `memory    ${formatBytes(num(inventory.memory?.total))} (physical ${text(inventory.memory?.physical_mb) ?? '?'} MB)`,
    `boot      ${text(inventory.boot?.current_boot_mode) ?? '-'}, PXE interface ${text(inventory.boot?.pxe_interface) ?? '-'}`,
    `bmc       ${text(inventory.bmc_address) ?? '-'}`,
    '',
    renderTable(
      ['DISK', 'SIZE', 'MODEL', 'SERIAL', 'ROTATIONAL'],
      (inventory.disks ?? []).map((disk) => [
        text(disk.name),
        formatBytes(num(disk.size)),
        text(disk.model),
        text(disk.serial),
        text(disk.rotational),
      ]),
    ),
    '',
    renderNics(inventory.interfaces ?? []),
  ];
  return `${lines.join('\n')}\n`;
};

export const runInventory = (flags: Record<string, unknown>): Promise<number> =>
  runVerb(
    flags,
    'inventory.collect',
    (config) => (flags.lldp === true || config.collectLldp ? { lldp: true } : {}),
    (result) => renderInventory((result.inventory ?? {}) as InventoryView),
  );
