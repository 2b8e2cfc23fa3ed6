/**
 * What a PCI function of vendor 0x15b3 is to a BlueField, from its device ID and class. The tables
 * are pci.ids (vendor 15b3) cross-checked with rshim-user-space's PCIe and livefish backends.
 * Function numbers mean nothing here: the rshim has been seen at .1, .2 and .3.
 */
import type { BlueFieldGeneration } from './contracts.js';

export const MELLANOX_VENDOR = '15b3';

/** Integrated ConnectX physical functions: the host's NIC ports of the card. */
export const NIC_PF_DEVICES: Readonly<Record<string, BlueFieldGeneration>> = {
  a2d2: 'BF1',
  a2d6: 'BF2',
  a2dc: 'BF3',
};

/** "SoC Management Interface", the function the host's rshim daemon drives. */
export const RSHIM_DEVICES: Readonly<Record<string, BlueFieldGeneration>> = {
  c2d2: 'BF1',
  c2d3: 'BF2',
  // Early BF3 firmware exposed c2d4; current firmware c2d5 (pci.ids now also names c2d4 BF3-Lx).
  c2d4: 'BF3',
  c2d5: 'BF3',
};

/** Flash-recovery ("livefish") functions: the NIC firmware is not running, only rshim's pcie_lf works. */
export const LIVEFISH_DEVICES: Readonly<Record<string, BlueFieldGeneration>> = {
  '0211': 'BF1',
  '0214': 'BF2',
  '0215': 'BF2',
  '021c': 'BF3',
  '021d': 'BF3',
};

/** PCI class 08 01 xx: "DMA controller", as the rshim function is classed. */
const RSHIM_CLASS = 0x0801;

export type FunctionRole = 'nic' | 'rshim' | 'livefish';

export interface FunctionKind {
  role: FunctionRole;
  /** Null for a DMA-class function whose device ID is not in the tables: the card's NIC says which. */
  generation: BlueFieldGeneration | null;
}

/** "0x15B3" / "15b3" -> "15b3"; anything else -> null. */
export const normalizeHexId = (value: string | null | undefined): string | null => {
  const match = value == null ? null : /^(?:0x)?([0-9a-f]+)$/i.exec(value.trim());
  return match?.[1]?.toLowerCase() ?? null;
};

/**
 * The role of one function, or null when it is not a BlueField function (other Mellanox NICs such
 * as ConnectX 101d, VFs 101e, the c2d1 auxiliary channel, emulated NVMe, other vendors).
 */
export const classifyFunction = (
  vendor: string | null,
  device: string | null,
  pciClass: string | null,
): FunctionKind | null => {
  if (normalizeHexId(vendor) !== MELLANOX_VENDOR) return null;
  const id = normalizeHexId(device);
  if (id === null) return null;
  const nic = NIC_PF_DEVICES[id];
  if (nic) return { role: 'nic', generation: nic };
  const rshim = RSHIM_DEVICES[id];
  if (rshim) return { role: 'rshim', generation: rshim };
  const livefish = LIVEFISH_DEVICES[id];
  if (livefish) return { role: 'livefish', generation: livefish };
  const classHex = normalizeHexId(pciClass);
  if (classHex !== null && Number.parseInt(classHex, 16) >> 8 === RSHIM_CLASS) {
    return { role: 'rshim', generation: null };
  }
  return null;
};

/**
 * MFT's mst names a device after its PCI device ID in decimal (`mt41686_pciconf0` for a2d6), so
 * these are the names a card's NIC functions can have under /dev/mst.
 */
export const mstDevicePrefix = (generation: BlueFieldGeneration): string => {
  const entry = Object.entries(NIC_PF_DEVICES).find(([, value]) => value === generation);
  // The table covers every generation; the fallback only satisfies the type checker.
  return `mt${Number.parseInt(entry?.[0] ?? '0', 16)}_pciconf`;
};
