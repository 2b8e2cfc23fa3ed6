/**
 * Firmware identity (`flint -d DEV q` / `mstflint -d DEV q`) and MFT's device names (`mst status
 * -v`), so a card found by PCI address can be addressed by its /dev/mst name and back.
 */
import type { MlxToolSet, ToolRunner } from '../contracts.js';
import { MST_PROGRAM, runTool, toolFailed, type ToolRunOptions } from './tools.js';

export interface FirmwareInfo {
  /** `FW Version`: the image on flash. */
  fw_version: string | null;
  /** `FW Version(Running)`: printed only when the running image differs (a reset is pending). */
  fw_version_running: string | null;
  psid: string | null;
  product_version: string | null;
  /** `Part Number` and the product `Description` appear in newer tools and with `q full`. */
  part_number: string | null;
  description: string | null;
  image_type: string | null;
  release_date: string | null;
  security_attributes: string | null;
  base_mac: string | null;
  base_guid: string | null;
}

const FLINT_KEYS: Record<string, keyof FirmwareInfo> = {
  'FW Version': 'fw_version',
  'FW Version(Running)': 'fw_version_running',
  PSID: 'psid',
  'Product Version': 'product_version',
  'Part Number': 'part_number',
  Description: 'description',
  'Image type': 'image_type',
  'FW Release Date': 'release_date',
  'Security Attributes': 'security_attributes',
  'Base MAC': 'base_mac',
  'Base GUID': 'base_guid',
};

const orNull = (value: string): string | null => (value === '' || value === 'N/A' ? null : value);

export const parseFlintQuery = (text: string): FirmwareInfo => {
  const info: FirmwareInfo = {
    fw_version: null,
    fw_version_running: null,
    psid: null,
    product_version: null,
    part_number: null,
    description: null,
    image_type: null,
    release_date: null,
    security_attributes: null,
    base_mac: null,
    base_guid: null,
  };
  for (const line of text.split('\n')) {
    const match = /^([A-Za-z][A-Za-z ()]*?):\s+(.*?)\s*$/.exec(line);
    const key = match?.[1];
    const value = match?.[2];
    if (key === undefined || value === undefined) continue;
    const field = FLINT_KEYS[key];
    if (field === undefined || info[field] !== null) continue;
    if (field === 'description' && /^UID\s+GuidsNumber/.test(value)) continue;
    // Base MAC/GUID lines carry the count of addresses after the address.
    info[field] = orNull(
      field === 'base_mac' || field === 'base_guid' ? (value.split(/\s+/)[0] ?? '') : value,
    );
  }
  return info;
};

export const readFirmware = async (
  runner: ToolRunner,
  tools: MlxToolSet,
  device: string,
  options: ToolRunOptions = {},
): Promise<FirmwareInfo> => {
  const result = await runTool(runner, tools.flint, ['-d', device, 'q'], options);
  const info = parseFlintQuery(result.stdout);
  if (result.exitCode !== 0 || (info.fw_version === null && info.psid === null)) {
    throw toolFailed(result, `${tools.flint} could not query the firmware of ${device}`, {
      device,
      where: runner.where,
    });
  }
  return info;
};

/** `e2:00.1` -> `0000:e2:00.1`; anything that is not a PCI address is returned as it was. */
export const normalizeBdf = (address: string): string => {
  const value = address.trim().toLowerCase();
  if (/^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/.test(value)) return value;
  if (/^[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/.test(value)) return `0000:${value}`;
  return address.trim();
};

export interface MstDevice {
  /** `BlueField2(rev:1)`, or null in the short listing. */
  deviceType: string | null;
  /** `/dev/mst/mt41686_pciconf0`. */
  mst: string;
  /** `0000:e2:00.0`. */
  pci: string;
  rdma: string | null;
  net: string | null;
  numa: string | null;
}

/**
 * `mst status -v` (a DEVICE_TYPE/MST/PCI/RDMA/NET/NUMA table whose RDMA and NET cells may be
 * empty) and plain `mst status` (`/dev/mst/... - PCI configuration cycles access.` followed by
 * `domain:bus:dev.fn=0000:03:00.0 ...`).
 */
export const parseMstStatus = (text: string): MstDevice[] => {
  const devices: MstDevice[] = [];
  const lines = text.split('\n');
  lines.forEach((line, index) => {
    const tokens = line.trim().split(/\s+/);
    const mstAt = tokens.findIndex((token) => token.startsWith('/dev/mst/'));
    const mst = tokens[mstAt];
    if (mstAt < 0 || mst === undefined) return;
    const pciToken = tokens[mstAt + 1];
    if (
      mstAt >= 1 &&
      pciToken !== undefined &&
      /^([0-9a-f]{4}:)?[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/i.test(pciToken)
    ) {
      const rest = tokens.slice(mstAt + 2);
      devices.push({
        deviceType: tokens[0] ?? null,
        mst,
        pci: normalizeBdf(pciToken),
        rdma: rest.find((t) => /^mlx\d+_\d+$/.test(t)) ?? null,
        net: rest.find((t) => t.startsWith('net-'))?.slice('net-'.length) ?? null,
        numa: rest.find((t) => /^-?\d+$/.test(t)) ?? null,
      });
      return;
    }
    const address = lines
      .slice(index, index + 3)
      .map((l) => /domain:bus:dev\.fn=(\S+)/.exec(l)?.[1])
      .find((a) => a !== undefined);
    if (address !== undefined) {
      devices.push({ deviceType: null, mst, pci: normalizeBdf(address), rdma: null, net: null, numa: null });
    }
  });
  return devices;
};

export const mstNameForBdf = (devices: MstDevice[], bdf: string): string | null =>
  devices.find((d) => d.pci === normalizeBdf(bdf))?.mst ?? null;

export const bdfForMstName = (devices: MstDevice[], mst: string): string | null =>
  devices.find((d) => d.mst === mst)?.pci ?? null;

/** MFT only: mstflint has no `mst` and its tools take PCI addresses. */
export const readMstDevices = async (
  runner: ToolRunner,
  tools: MlxToolSet,
  options: ToolRunOptions = {},
): Promise<MstDevice[]> => {
  if (tools.flavour !== 'mft') return [];
  const result = await runTool(runner, MST_PROGRAM, ['status', '-v'], options);
  if (result.exitCode !== 0)
    throw toolFailed(result, `${MST_PROGRAM} status -v failed`, { where: runner.where });
  return parseMstStatus(result.stdout);
};
