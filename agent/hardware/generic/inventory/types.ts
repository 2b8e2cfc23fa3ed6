import type { LldpParsed, RawTlv } from '../../../lldp/types.js';

// The inventory keeps IPA's field names (snake_case) because ironic and inspector read it as is.
// Values that cannot be read are null, never a guess.

export interface CpuInventory {
  model_name: string | null;
  /** MHz as a string, like IPA: "3900.0000" from cpufreq's maximum, else cpuinfo's "cpu MHz". */
  frequency: string | null;
  /** Logical CPUs (hyper-threads included). */
  count: number;
  architecture: string;
  flags: string[];
  socket_count: number;
}

export interface MemoryInventory {
  /** Bytes the kernel manages (MemTotal), as psutil reports it to IPA. */
  total: number | null;
  /** Installed memory in MiB: the DIMM sizes of the SMBIOS table, else the memory blocks. */
  physical_mb: number | null;
}

export interface DiskInventory {
  name: string;
  model: string | null;
  size: number;
  rotational: boolean;
  wwn: string | null;
  serial: string | null;
  vendor: string | null;
  wwn_with_extension: string | null;
  wwn_vendor_extension: string | null;
  hctl: string | null;
  by_path: string | null;
  logical_sectors: number | null;
  physical_sectors: number | null;
  tran: string | null;
}

export interface InterfaceInventory {
  name: string;
  mac_address: string;
  ipv4_address: string | null;
  ipv6_address: string | null;
  has_carrier: boolean;
  /** Raw TLVs when LLDP was collected; the inventory part itself always leaves it null. */
  lldp: RawTlv[] | null;
  /** ironic-inspector's lldp_basic fields from the same frame; present when LLDP was collected. */
  lldp_processed?: LldpParsed | null;
  vendor: string | null;
  product: string | null;
  /** DHCP client identifier, InfiniBand only. */
  client_id: string | null;
  biosdevname: string | null;
  speed_mbps: number | null;
  pci_address: string | null;
  driver: string | null;
}

export interface FirmwareInventory {
  vendor: string | null;
  version: string | null;
  build_date: string | null;
}

export interface SystemVendorInventory {
  product_name: string | null;
  serial_number: string | null;
  manufacturer: string | null;
  firmware: FirmwareInventory;
}

export interface BootInventory {
  current_boot_mode: 'uefi' | 'bios';
  pxe_interface: string | null;
}

/**
 * One PCI function. Hex values without "0x", as IPA's `pci-devices` inspection collector sends
 * them (vendor_id "15b3", class "020000").
 */
export interface PciDeviceInventory {
  vendor: string | null;
  device: string | null;
  class: string | null;
  address: string;
  driver: string | null;
  revision: string | null;
}

export interface BmcInventory {
  bmc_address: string;
  bmc_v6address: string;
  /** Absent when no LAN channel has a MAC (IPA omits the key); null when ipmitool failed. */
  bmc_mac?: string | null;
}

export interface Inventory extends BmcInventory {
  cpu: CpuInventory;
  memory: MemoryInventory;
  disks: DiskInventory[];
  interfaces: InterfaceInventory[];
  system_vendor: SystemVendorInventory;
  boot: BootInventory;
  hostname: string;
  pci_devices: PciDeviceInventory[];
  /** Filled by the BlueField work; an empty list until then. */
  bluefield: unknown[];
}
