import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { InterfaceLldp } from '../../agent/lldp/types.js';
import { lldpLabSkipReason, NetnsLab, type AgentRun, type SwitchSpec } from '../support/netns.js';

/*
 * LLDP against real peers: network namespaces joined by veth pairs, Debian's lldpd on the far end
 * of each link configured to a known identity, and the real agent CLI (`bm-agent lldp --json`)
 * run inside the agent's namespace, where `ip netns exec` mounts a sysfs showing its links.
 */

const skip = (await lldpLabSkipReason()) ?? false;
if (skip) process.stderr.write(`# skipping LLDP integration tests: ${skip}\n`);
// Hand-built frames go out through python3's AF_PACKET socket; only that test needs it.
const skipRaw = skip || ((await lldpLabSkipReason(['python3'])) ?? false);

const labs: NetnsLab[] = [];
const newLab = (label: string): NetnsLab => {
  const lab = new NetnsLab(label);
  labs.push(lab);
  return lab;
};
after(async () => {
  for (const lab of labs.splice(0)) await lab.cleanup();
});

const switchSpec = (n: number, mtu: number): SwitchSpec => ({
  systemName: `leaf-${n}.rack7.example`,
  systemDescription: `Test switch ${n}, lldpd in a namespace`,
  portId: `Ethernet1/${n + 10}`,
  portDescription: `server-42 nic ${n}`,
  vlans: [
    { id: 100 + n, name: `prov-${100 + n}` },
    { id: 2000 + n, name: `tenant-${2000 + n}` },
  ],
  mtu,
});

const lldpResult = (run: AgentRun): InterfaceLldp[] => {
  assert.equal(run.code, 0, `agent exited ${run.code}: ${run.stderr}`);
  const parsed = JSON.parse(run.stdout) as { interfaces: InterfaceLldp[] };
  return parsed.interfaces;
};

const byName = (results: InterfaceLldp[], name: string): InterfaceLldp => {
  const found = results.find((result) => result.interface === name);
  assert.ok(found, `no result for ${name}`);
  return found;
};

const assertAdvertised = (result: InterfaceLldp, spec: SwitchSpec, chassisMac: string): void => {
  assert.equal(result.status, 'received', JSON.stringify(result));
  assert.deepEqual(result.warnings, []);
  const { parsed } = result;
  assert.equal(parsed.switch_chassis_id, chassisMac);
  assert.equal(parsed.switch_system_name, spec.systemName);
  assert.equal(parsed.switch_system_description, spec.systemDescription);
  assert.equal(parsed.switch_port_id, spec.portId);
  assert.equal(parsed.switch_port_description, spec.portDescription);
  assert.deepEqual(parsed.switch_port_vlans, spec.vlans);
  assert.equal(parsed.switch_port_mtu, spec.mtu);
  // IPA's raw form: the type-5 TLV is the system name in hex, and the list ends with End.
  assert.ok(
    result.tlvs.some(([type, hex]) => type === 5 && hex === Buffer.from(spec.systemName).toString('hex')),
  );
  assert.deepEqual(result.tlvs.at(-1), [0, '']);
};

/** Resolves once a tcpdump capturing on `iface` runs in namespace `ns`. */
const waitForCapture = async (ns: string, iface: string, timeoutMs = 30_000): Promise<void> => {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const pids = await new Promise<string>((resolve) => {
      execFile('ip', ['netns', 'pids', ns], (error, stdout) => resolve(error ? '' : stdout));
    });
    for (const pid of pids.split(/\s+/).filter(Boolean)) {
      const argv = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
      const words = argv.split('\0');
      if (path.basename(words[0] ?? '') === 'tcpdump' && words.includes(iface)) return;
    }
    await sleep(50);
  }
  throw new Error(`no tcpdump on ${iface} in ${ns} within ${timeoutMs} ms`);
};

describe('lldp.collect against lldpd neighbours', { skip }, () => {
  it('reports what each neighbour advertises, whenever it starts, and does not wait on an unplugged port', async () => {
    const lab = newLab('a');
    try {
      const agent = await lab.addNamespace('agent');
      const specs = [switchSpec(0, 9000), switchSpec(1, 1500), switchSpec(2, 9216)];
      const peers = await Promise.all(specs.map((_, n) => lab.addNamespace(`sw${n}`)));
      const unplugged = await lab.addNamespace('sw3');
      await lab.addLink(agent, 'a0', peers[0] ?? '', 'p0', { mtu: specs[0]?.mtu });
      await lab.addLink(agent, 'a1', peers[1] ?? '', 'p1', { mtu: specs[1]?.mtu });
      // Down on the agent side: the agent must bring it up, and put it back down afterwards.
      await lab.addLink(agent, 'a2', peers[2] ?? '', 'p2', { mtu: specs[2]?.mtu, agentUp: false });
      // The far end is down: no carrier, as with an unplugged cable.
      await lab.addLink(agent, 'a3', unplugged, 'p3', { peerUp: false });
      // Unplugged and down on the agent side: brought up, given the carrier wait, restored.
      await lab.addLink(agent, 'a4', unplugged, 'p4', { peerUp: false, agentUp: false });
      const macs = await Promise.all(specs.map((_, n) => lab.macAddress(peers[n] ?? '', `p${n}`)));

      await lab.startLldpd(peers[0] ?? '', 'p0', specs[0] as SwitchSpec);
      await lab.startLldpd(peers[2] ?? '', 'p2', specs[2] as SwitchSpec);
      await sleep(1500);

      const running = lab.runAgent(agent, [
        'lldp',
        '--json',
        '--timeout',
        '20',
        '--interface',
        'a0',
        '--interface',
        'a1',
        '--interface',
        'a2',
        '--interface',
        'a3',
        '--interface',
        'a4',
      ]);
      // This neighbour comes up a second after the agent is listening on a1 (found by its tcpdump,
      // not by a fixed sleep: a loaded machine can take longer than that to start the agent).
      await waitForCapture(agent, 'a1');
      await sleep(1000);
      await lab.startLldpd(peers[1] ?? '', 'p1', specs[1] as SwitchSpec);
      const run = await running;
      const results = lldpResult(run);

      assert.deepEqual(
        results.map((result) => [result.interface, result.status]),
        [
          ['a0', 'received'],
          ['a1', 'received'],
          ['a2', 'received'],
          ['a3', 'no_carrier'],
          ['a4', 'no_carrier'],
        ],
      );
      for (const n of [0, 1, 2])
        assertAdvertised(byName(results, `a${n}`), specs[n] as SwitchSpec, macs[n] ?? '');
      const late = byName(results, 'a1').received_after_ms ?? 0;
      assert.ok(late >= 900, `a1's neighbour started 1 s after the capture, got its frame after ${late} ms`);
      assert.equal(byName(results, 'a3').received_after_ms, null);
      // Returned at the last first frame, far from the 20 s timeout.
      assert.ok(run.wallMs < late + 3000, `took ${Math.round(run.wallMs)} ms`);
      assert.ok(!(await lab.linkFlags(agent, 'a2')).includes('UP'), 'a2 was restored to down');
      assert.ok(!(await lab.linkFlags(agent, 'a4')).includes('UP'), 'a4 was restored to down');
      assert.ok((await lab.linkFlags(agent, 'a0')).includes('UP'), 'a0 was up and stays up');
    } finally {
      await lab.cleanup();
    }
  });

  it('times out an interface without a neighbour while the others are fast', async () => {
    const lab = newLab('b');
    try {
      const agent = await lab.addNamespace('agent');
      const peer = await lab.addNamespace('sw0');
      const silent = await lab.addNamespace('sw1');
      const spec = switchSpec(0, 1500);
      await lab.addLink(agent, 'a0', peer, 'p0');
      await lab.addLink(agent, 'a1', silent, 'p1');
      const mac = await lab.macAddress(peer, 'p0');
      await lab.startLldpd(peer, 'p0', spec);
      await sleep(1000);

      const timeoutS = 3;
      const run = await lab.runAgent(agent, [
        'lldp',
        '--json',
        '--timeout',
        String(timeoutS),
        '--interface',
        'a0',
        '--interface',
        'a1',
      ]);
      const results = lldpResult(run);
      assertAdvertised(byName(results, 'a0'), spec, mac);
      const fast = byName(results, 'a0').received_after_ms ?? Infinity;
      assert.ok(fast < 1500, `a0 got its frame after ${fast} ms (tx-interval 1 s)`);
      assert.deepEqual(byName(results, 'a1'), {
        interface: 'a1',
        status: 'timeout',
        tlvs: [],
        parsed: {},
        warnings: [],
        received_after_ms: null,
      });
      // The timeout and the CLI's start-up, never the timeout plus another wait.
      assert.ok(run.wallMs >= timeoutS * 1000, `took ${Math.round(run.wallMs)} ms`);
      assert.ok(run.wallMs < timeoutS * 1000 + 2000, `took ${Math.round(run.wallMs)} ms`);
    } finally {
      await lab.cleanup();
    }
  });

  it('survives hostile frames: reports what it could read, with warnings', { skip: skipRaw }, async () => {
    const lab = newLab('c');
    try {
      const agent = await lab.addNamespace('agent');
      const frames = hostileFrames();
      const names = Object.keys(frames);
      for (const [n, name] of names.entries()) {
        const peer = await lab.addNamespace(`h${n}`);
        await lab.addLink(agent, `a${n}`, peer, `p${n}`);
        lab.startRawSender(peer, `p${n}`, frames[name]?.frame ?? Buffer.alloc(0));
      }
      const run = await lab.runAgent(agent, [
        'lldp',
        '--json',
        '--timeout',
        '10',
        ...names.flatMap((_, n) => ['--interface', `a${n}`]),
      ]);
      const results = lldpResult(run);
      for (const [n, name] of names.entries()) {
        const result = byName(results, `a${n}`);
        const expected = frames[name];
        assert.ok(expected);
        assert.equal(result.status, 'received', `${name}: ${JSON.stringify(result)}`);
        assert.deepEqual(result.tlvs, expected.tlvs, name);
        if (expected.clean) assert.deepEqual(result.warnings, [], name);
        else assert.ok(result.warnings.length > 0, `${name} has warnings`);
        if (expected.systemName) assert.equal(result.parsed.switch_system_name, expected.systemName, name);
      }
      assert.ok(run.wallMs < 5000, `took ${Math.round(run.wallMs)} ms`);
    } finally {
      await lab.cleanup();
    }
  });

  it('fills the inventory: raw TLVs in lldp, the parsed switch and port beside them, and the table', async () => {
    const lab = newLab('e');
    // veths have no `device` link, so a prepared sysfs tree presents a0 as a physical NIC; the
    // capture itself still listens on the real a0 in the namespace.
    const tree = await mkdtemp(path.join(os.tmpdir(), 'bma-lldp-sys-'));
    try {
      const agent = await lab.addNamespace('agent');
      const peer = await lab.addNamespace('sw0');
      const spec = switchSpec(5, 1500);
      await lab.addLink(agent, 'a0', peer, 'p0', { mtu: spec.mtu });
      const chassis = await lab.macAddress(peer, 'p0');
      const nic = path.join(tree, 'class', 'net', 'a0');
      await mkdir(path.join(tree, 'devices', 'pci0000:00', '0000:00:05.0'), { recursive: true });
      await mkdir(nic, { recursive: true });
      await symlink(path.join(tree, 'devices', 'pci0000:00', '0000:00:05.0'), path.join(nic, 'device'));
      const files = {
        address: await lab.macAddress(agent, 'a0'),
        carrier: '1',
        flags: '0x1003',
        operstate: 'up',
      };
      for (const [name, value] of Object.entries(files)) await writeFile(path.join(nic, name), `${value}\n`);
      await lab.startLldpd(peer, 'p0', spec);

      const json = await lab.runAgent(agent, ['inventory', '--json', '--lldp', '--lldp-timeout', '15'], {
        BMA_SYS: tree,
      });
      assert.equal(json.code, 0, json.stderr);
      const inventory = (
        JSON.parse(json.stdout) as { inventory: { interfaces: Array<Record<string, unknown>> } }
      ).inventory;
      const a0 = inventory.interfaces.find((entry) => entry.name === 'a0');
      assert.ok(a0, JSON.stringify(inventory.interfaces));
      const tlvs = a0.lldp as Array<[number, string]>;
      assert.ok(
        tlvs.some(([type, value]) => type === 5 && value === Buffer.from(spec.systemName).toString('hex')),
      );
      const parsed = a0.lldp_processed as Record<string, unknown>;
      assert.equal(parsed.switch_system_name, spec.systemName);
      assert.equal(parsed.switch_port_id, spec.portId);
      assert.equal(parsed.switch_chassis_id, chassis);

      const table = await lab.runAgent(agent, ['inventory', '--lldp', '--lldp-timeout', '15'], {
        BMA_SYS: tree,
      });
      assert.equal(table.code, 0, table.stderr);
      assert.match(table.stdout, /^NIC\s+MAC\s+IPV4\s+CARRIER\s+SPEED\s+SWITCH\s+PORT$/m);
      assert.match(
        table.stdout,
        new RegExp(
          `^a0 .*${spec.systemName.replace(/\./g, '\\.')}\\s+${spec.portId.replace('/', '\\/')}$`,
          'm',
        ),
      );
    } finally {
      await lab.cleanup();
      await rm(tree, { recursive: true, force: true });
    }
  });

  it('fails with INVALID_PARAMS for an interface that does not exist', async () => {
    const lab = newLab('d');
    try {
      const agent = await lab.addNamespace('agent');
      const run = await lab.runAgent(agent, ['lldp', '--json', '--timeout', '1', '--interface', 'nope0']);
      assert.equal(run.code, 1);
      assert.match(run.stderr, /INVALID_PARAMS: no such network interface: nope0/);
    } finally {
      await lab.cleanup();
    }
  });
});

// --- hostile frames -------------------------------------------------------------------------

const tlv = (type: number, value: Buffer, declaredLength = value.length): Buffer => {
  const header = Buffer.alloc(2);
  header.writeUInt16BE((type << 9) | (declaredLength & 0x1ff));
  return Buffer.concat([header, value]);
};
const hex = (text: string): Buffer => Buffer.from(text, 'hex');
const ETHERNET = hex('0180c200000e' + '020000aabbcc' + '88cc');
const CHASSIS = tlv(1, hex('04020000aabbcc'));
const PORT = tlv(2, Buffer.concat([hex('05'), Buffer.from('swp7')]));
const TTL = tlv(3, hex('0078'));
const END = tlv(0, Buffer.alloc(0));
const NAME = tlv(5, Buffer.from('evil-switch'));

interface HostileFrame {
  frame: Buffer;
  /** The raw TLVs the agent must report. */
  tlvs: Array<[number, string]>;
  clean?: boolean;
  systemName?: string;
}

const basics: Array<[number, string]> = [
  [1, '04020000aabbcc'],
  [2, Buffer.concat([hex('05'), Buffer.from('swp7')]).toString('hex')],
  [3, '0078'],
];

const hostileFrames = (): Record<string, HostileFrame> => ({
  'a TLV longer than the frame': {
    frame: Buffer.concat([ETHERNET, CHASSIS, PORT, TTL, tlv(5, Buffer.from('short'), 300)]),
    tlvs: basics,
  },
  'a TLV after End': {
    frame: Buffer.concat([ETHERNET, CHASSIS, PORT, TTL, END, NAME, Buffer.alloc(40, 0xee)]),
    tlvs: [...basics, [0, '']],
  },
  'a frame cut inside a TLV header': {
    frame: Buffer.concat([ETHERNET, CHASSIS, PORT, TTL, NAME, hex('0a')]),
    tlvs: [...basics, [5, Buffer.from('evil-switch').toString('hex')]],
    systemName: 'evil-switch',
  },
  'unknown subtypes and wrong sizes': {
    frame: Buffer.concat([
      ETHERNET,
      tlv(1, hex('63deadbeef')),
      PORT,
      TTL,
      tlv(7, hex('001400')),
      tlv(127, hex('aabbcc01ffff')),
      tlv(127, hex('0080c2')),
      NAME,
      END,
    ]),
    tlvs: [
      [1, '63deadbeef'],
      basics[1] as [number, string],
      [3, '0078'],
      [7, '001400'],
      [127, 'aabbcc01ffff'],
      [127, '0080c2'],
      [5, Buffer.from('evil-switch').toString('hex')],
      [0, ''],
    ],
    systemName: 'evil-switch',
  },
  // Not hostile: LLDP on a tagged VLAN, which some switches send; the tag must be skipped.
  'a VLAN-tagged frame': {
    frame: Buffer.concat([
      hex('0180c200000e' + '020000aabbcc' + '8100' + '0064' + '88cc'),
      CHASSIS,
      PORT,
      TTL,
      NAME,
      END,
    ]),
    tlvs: [...basics, [5, Buffer.from('evil-switch').toString('hex')], [0, '']],
    clean: true,
    systemName: 'evil-switch',
  },
});
