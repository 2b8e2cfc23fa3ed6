/** The inspection payload as IPA's `default` and `pci-devices` collectors shape it (ipa.md §4.3). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { DiskInventory, Inventory } from '../../agent/hardware/generic/inventory/types.js';
import { buildInspectionPayload, formatInspectionErrors } from '../../agent/ipa/inspection.js';

const GiB = 2 ** 30;

const disk = (name: string, size: number): DiskInventory => ({
  name,
  model: 'QEMU HARDDISK',
  size,
  rotational: true,
  wwn: null,
  serial: `serial-${name}`,
  vendor: 'QEMU',
  wwn_with_extension: null,
  wwn_vendor_extension: null,
  hctl: null,
  by_path: null,
  logical_sectors: 512,
  physical_sectors: 512,
  tran: null,
});

const inventory = (disks: DiskInventory[], pci: Inventory['pci_devices'] = []): Inventory => ({
  cpu: {
    model_name: 'cpu',
    frequency: '2400.0000',
    count: 2,
    architecture: 'x86_64',
    flags: ['fpu'],
    socket_count: 1,
  },
  memory: { total: 4 * GiB, physical_mb: 4096 },
  disks,
  interfaces: [
    {
      name: 'eth0',
      mac_address: '52:54:00:12:34:56',
      ipv4_address: '192.0.2.10',
      ipv6_address: null,
      has_carrier: true,
      lldp: null,
      vendor: '0x1af4',
      product: '0x1000',
      client_id: null,
      biosdevname: null,
      speed_mbps: null,
      pci_address: '0000:00:03.0',
      driver: 'virtio_net',
    },
  ],
  system_vendor: {
    product_name: 'Standard PC',
    serial_number: null,
    manufacturer: 'QEMU',
    firmware: { vendor: null, version: null, build_date: null },
  },
  boot: { current_boot_mode: 'uefi', pxe_interface: '52:54:00:12:34:56' },
  hostname: 'node-1',
  bmc_address: '0.0.0.0',
  bmc_v6address: '::/0',
  pci_devices: pci,
  bluefield: [],
});

describe('inspection payload', () => {
  it('carries the inventory, the default root disk, BOOTIF, the configuration and no error', () => {
    const inv = inventory([disk('/dev/vdb', 20 * GiB), disk('/dev/vda', 8 * GiB), disk('/dev/vdc', 2 * GiB)]);
    const payload = buildInspectionPayload({
      inventory: inv,
      bootInterface: '52:54:00:12:34:56',
      collectors: ['default', 'logs'],
    });
    assert.equal(payload.inventory, inv);
    // Smallest disk of at least 4 GiB, as IPA's guess_root_disk.
    assert.equal(payload.root_disk?.name, '/dev/vda');
    assert.equal(payload.boot_interface, '52:54:00:12:34:56');
    assert.deepEqual(payload.configuration, {
      collectors: ['default', 'logs'],
      managers: [{ name: 'generic_hardware_manager', version: '1.1' }],
    });
    assert.equal(payload.error, null);
    assert.equal('pci_devices' in payload, false);
    assert.equal('logs' in payload, false);
    // It must survive the wire as it is.
    assert.deepEqual(JSON.parse(JSON.stringify(payload)), payload);
  });

  it('breaks a size tie by name', () => {
    const payload = buildInspectionPayload({
      inventory: inventory([disk('/dev/sdb', 8 * GiB), disk('/dev/sda', 8 * GiB)]),
      bootInterface: null,
      collectors: ['default'],
    });
    assert.equal(payload.root_disk?.name, '/dev/sda');
  });

  it('leaves root_disk out when no disk reaches 4 GiB', () => {
    const payload = buildInspectionPayload({
      inventory: inventory([disk('/dev/vda', 4 * GiB - 1)]),
      bootInterface: null,
      collectors: ['default'],
    });
    assert.equal('root_disk' in payload, false);
    assert.equal(payload.boot_interface, null);
  });

  it("reports PCI functions in the pci-devices collector's shape, skipping ones without IDs", () => {
    const payload = buildInspectionPayload({
      inventory: inventory(
        [],
        [
          {
            vendor: '15b3',
            device: 'a2d6',
            class: '020000',
            address: '0000:03:00.0',
            driver: 'mlx5_core',
            revision: '01',
          },
          {
            vendor: null,
            device: null,
            class: '060000',
            address: '0000:00:00.0',
            driver: null,
            revision: null,
          },
        ],
      ),
      bootInterface: null,
      collectors: ['default', 'pci-devices'],
    });
    assert.deepEqual(payload.pci_devices, [
      { vendor_id: '15b3', product_id: 'a2d6', class: '020000', revision: '01', bus: '0000:03:00.0' },
    ]);
  });

  it('words collector failures as IPA does and carries the logs', () => {
    assert.equal(formatInspectionErrors([]), null);
    const payload = buildInspectionPayload({
      inventory: inventory([]),
      bootInterface: null,
      collectors: ['default', 'logs'],
      errors: ['collector logs failed: journalctl not found', 'lldp: timeout'],
      logs: 'H4sIAAAAAAAAA2NgGAWjYBSMglEwCgYAAK8R1m4ACAAA',
      managers: [{ name: 'bluefield_hardware_manager', version: '1.0' }],
    });
    assert.equal(
      payload.error,
      'The following errors were encountered:\n* collector logs failed: journalctl not found\n* lldp: timeout',
    );
    assert.equal(payload.logs, 'H4sIAAAAAAAAA2NgGAWjYBSMglEwCgYAAK8R1m4ACAAA');
    assert.deepEqual(payload.configuration.managers, [
      { name: 'bluefield_hardware_manager', version: '1.0' },
    ]);
  });
});
