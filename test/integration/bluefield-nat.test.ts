import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { configureNat, tmfifoSubnet, type NatResult } from '../../agent/hardware/bluefield/nat.js';
import { AgentError } from '../../agent/util/errors.js';
import { findOnPath } from '../../agent/util/run-process.js';
import {
  dpuHostsSkipReason,
  execQuiet,
  startDpuHosts,
  type DpuHostsLab,
  type SimDpu,
} from '../support/bluefield-sim/dpu-host.js';

/*
 * configureNat against real namespaces: the agent runs in the root namespace with a PATH holding
 * only the lab's wrappers, so ip, sysctl, nft and iptables act in the lab's host namespace. A DPU
 * namespace behind tmfifo_net<N> must then reach an HTTP server in the outside namespace, which
 * has no route back to the DPU subnets: only masquerading makes that work.
 */

const skip = (await dpuHostsSkipReason(['nft', 'curl'])) ?? false;
if (skip) process.stderr.write(`# skipping BlueField NAT tests: ${skip}\n`);
const SYSTEM_PATH = `${process.env.PATH ?? ''}:/usr/sbin:/usr/bin:/sbin:/bin`;
const rootRulesetNow = async (): Promise<string> =>
  (await execQuiet((await findOnPath('nft', SYSTEM_PATH)) ?? 'nft', ['list', 'ruleset'])).stdout;
const skipIptables = skip || ((await findOnPath('iptables', SYSTEM_PATH)) ? false : 'needs iptables');

const expectCode =
  (code: string, pattern?: RegExp) =>
  (error: unknown): boolean => {
    assert.ok(AgentError.is(error), String(error));
    assert.equal(error.code, code, error.message);
    if (pattern) assert.match(error.message, pattern);
    return true;
  };

describe('the subnet plan', () => {
  it('gives card N the N-th /30 of 192.168.100.0/24', () => {
    assert.deepEqual(tmfifoSubnet(0), {
      index: 0,
      network: '192.168.100.0/30',
      prefixLength: 30,
      hostAddress: '192.168.100.1',
      dpuAddress: '192.168.100.2',
    });
    assert.deepEqual(tmfifoSubnet(1), {
      index: 1,
      network: '192.168.100.4/30',
      prefixLength: 30,
      hostAddress: '192.168.100.5',
      dpuAddress: '192.168.100.6',
    });
    assert.equal(tmfifoSubnet(63).dpuAddress, '192.168.100.254');
    assert.equal(tmfifoSubnet(2, { base: '10.99.0.0', prefixLength: 29 }).network, '10.99.0.16/29');
    assert.throws(() => tmfifoSubnet(-1), TypeError);
    assert.throws(() => tmfifoSubnet(0, { base: '300.1.1.1', prefixLength: 30 }), TypeError);
  });
});

describe('tmfifo NAT in network namespaces', { skip }, () => {
  let root: string;
  const labs: DpuHostsLab[] = [];
  let rootForwarding: string;
  let rootRuleset: string;

  const newLab = async (count: number, label: string): Promise<DpuHostsLab> => {
    const dir = await mkdtemp(path.join(root, `${label}-`));
    const lab = await startDpuHosts({ dir, count, label });
    labs.push(lab);
    return lab;
  };

  const reachOutside = async (lab: DpuHostsLab, dpu: SimDpu): Promise<{ ok: boolean; remote?: string }> => {
    const result = await lab.execIn(dpu.ns, ['curl', '-sS', '--max-time', '3', lab.outsideHttpUrl], 10_000);
    if (result.code !== 0) return { ok: false };
    return { ok: true, remote: (JSON.parse(result.stdout) as { remote: string }).remote };
  };

  const inHost = async (lab: DpuHostsLab, argv: string[]): Promise<string> => {
    const result = await lab.execIn(lab.hostNs, argv);
    assert.equal(result.code, 0, `${argv.join(' ')}: ${result.stderr}`);
    return result.stdout;
  };

  before(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'bma-bf-nat-'));
    rootForwarding = await readFile('/proc/sys/net/ipv4/ip_forward', 'utf8');
    rootRuleset = await rootRulesetNow();
  });

  after(async () => {
    for (const lab of labs.splice(0)) await lab.close();
    await rm(root, { recursive: true, force: true });
  });

  it('nftables: sets up the host end, forwarding and masquerade, and a second run changes nothing', async () => {
    const lab = await newLab(1, 'nft');
    const [dpu] = lab.dpus;
    assert.ok(dpu);
    assert.deepEqual(await reachOutside(lab, dpu), { ok: false }, 'the DPU must not get out before NAT');

    const first = await configureNat({ rshimIndex: 0, toolPath: lab.toolBinDir });
    assert.deepEqual({ ...first, rules: first.rules.length } satisfies Record<keyof NatResult, unknown>, {
      interface: 'tmfifo_net0',
      host_address: '192.168.100.1/30',
      dpu_address: '192.168.100.2',
      subnet: '192.168.100.0/30',
      uplink: lab.uplink,
      backend: 'nftables',
      rules: 3,
      changed: true,
    });
    assert.equal((await inHost(lab, ['sysctl', '-n', 'net.ipv4.ip_forward'])).trim(), '1');
    const address = JSON.parse(
      await inHost(lab, ['ip', '-j', 'addr', 'show', 'dev', 'tmfifo_net0']),
    ) as Array<{
      flags: string[];
      addr_info: Array<{ family: string; local: string; prefixlen: number }>;
    }>;
    assert.ok(address[0]?.flags.includes('UP'));
    assert.deepEqual(
      address[0]?.addr_info
        .filter((entry) => entry.family === 'inet')
        .map((entry) => `${entry.local}/${entry.prefixlen}`),
      ['192.168.100.1/30'],
    );
    // The outside saw the host's uplink address: the DPU was masqueraded.
    assert.deepEqual(await reachOutside(lab, dpu), { ok: true, remote: lab.uplinkAddress });

    const ruleset = await inHost(lab, ['nft', 'list', 'ruleset']);
    assert.match(ruleset, /table ip bm_agent/);
    const second = await configureNat({ rshimIndex: 0, toolPath: lab.toolBinDir });
    assert.equal(second.changed, false);
    assert.deepEqual(second.rules, first.rules);
    assert.equal(await inHost(lab, ['nft', 'list', 'ruleset']), ruleset);
    assert.deepEqual(await reachOutside(lab, dpu), { ok: true, remote: lab.uplinkAddress });
  });

  it('nftables: leaves tables it does not own alone', async () => {
    const lab = await newLab(1, 'own');
    await inHost(lab, ['nft', 'add', 'table', 'inet', 'someone_else']);
    await inHost(lab, [
      'nft',
      'add',
      'chain',
      'inet',
      'someone_else',
      'input',
      '{ type filter hook input priority 0; }',
    ]);
    await inHost(lab, ['nft', 'add', 'rule', 'inet', 'someone_else', 'input', 'tcp', 'dport', '9', 'drop']);
    const theirs = await inHost(lab, ['nft', 'list', 'table', 'inet', 'someone_else']);
    await configureNat({ rshimIndex: 0, toolPath: lab.toolBinDir });
    const ours = await inHost(lab, ['nft', 'list', 'table', 'ip', 'bm_agent']);
    // A rule of ours gone missing: the next run rewrites our table, and only ours.
    await inHost(lab, ['nft', 'flush', 'chain', 'ip', 'bm_agent', 'forward']);
    assert.equal((await configureNat({ rshimIndex: 0, toolPath: lab.toolBinDir })).changed, true);
    assert.equal(await inHost(lab, ['nft', 'list', 'table', 'ip', 'bm_agent']), ours);
    assert.equal(await inHost(lab, ['nft', 'list', 'table', 'inet', 'someone_else']), theirs);
  });

  it('iptables: the same without nft on PATH, checking before adding', { skip: skipIptables }, async () => {
    const lab = await newLab(1, 'ipt');
    const [dpu] = lab.dpus;
    assert.ok(dpu);
    const toolPath = await lab.toolPathWithout(['nft']);
    const first = await configureNat({ rshimIndex: 0, toolPath });
    assert.equal(first.backend, 'iptables');
    assert.equal(first.changed, true);
    assert.equal(first.rules.length, 3);
    assert.deepEqual(await reachOutside(lab, dpu), { ok: true, remote: lab.uplinkAddress });

    const listing = async (): Promise<string> =>
      (await inHost(lab, ['iptables', '-w', '-t', 'nat', '-S'])) +
      (await inHost(lab, ['iptables', '-w', '-S']));
    const before = await listing();
    assert.equal(before.match(/MASQUERADE/g)?.length, 1);
    const second = await configureNat({ rshimIndex: 0, toolPath });
    assert.equal(second.changed, false);
    assert.equal(await listing(), before);

    // Another uplink (a veth: this kernel may lack dummy): the rules naming the old one go, none is left twice.
    await inHost(lab, ['ip', 'link', 'add', 'uplink9', 'type', 'veth', 'peer', 'name', 'uplink9p']);
    const moved = await configureNat({ rshimIndex: 0, toolPath, uplink: 'uplink9' });
    assert.equal(moved.changed, true);
    const after = await listing();
    assert.equal(after.match(/MASQUERADE/g)?.length, 1);
    assert.doesNotMatch(after, new RegExp(`-o ${lab.uplink} `));
    assert.match(after, /-o uplink9 .*MASQUERADE/);
  });

  it('two DPUs get two subnets and both get out', async () => {
    const lab = await newLab(2, 'two');
    const [dpu0, dpu1] = lab.dpus;
    assert.ok(dpu0 && dpu1);
    const first = await configureNat({ rshimIndex: 0, toolPath: lab.toolBinDir });
    const second = await configureNat({
      card: {
        slot: '0000:e2:00',
        rshim: { index: 1, path: '/dev/rshim1', devName: '', devInfo: null, tmfifo: 'tmfifo_net1' },
      },
      toolPath: lab.toolBinDir,
    });
    assert.equal(first.host_address, '192.168.100.1/30');
    assert.equal(second.interface, 'tmfifo_net1');
    assert.equal(second.host_address, '192.168.100.5/30');
    assert.equal(second.dpu_address, dpu1.address);
    assert.deepEqual(await reachOutside(lab, dpu0), { ok: true, remote: lab.uplinkAddress });
    assert.deepEqual(await reachOutside(lab, dpu1), { ok: true, remote: lab.uplinkAddress });
    // Redoing card 0 keeps card 1's rules.
    assert.equal((await configureNat({ rshimIndex: 0, toolPath: lab.toolBinDir })).changed, false);
    assert.equal((await configureNat({ rshimIndex: 1, toolPath: lab.toolBinDir })).changed, false);
    assert.deepEqual(await reachOutside(lab, dpu1), { ok: true, remote: lab.uplinkAddress });

    // A new uplink moves every card's rules to it: there is one default route.
    await inHost(lab, ['ip', 'link', 'add', 'uplink9', 'type', 'veth', 'peer', 'name', 'uplink9p']);
    assert.equal(
      (await configureNat({ rshimIndex: 0, toolPath: lab.toolBinDir, uplink: 'uplink9' })).changed,
      true,
    );
    const table = await inHost(lab, ['nft', 'list', 'table', 'ip', 'bm_agent']);
    assert.doesNotMatch(table, new RegExp(`"${lab.uplink}"`));
    assert.equal(table.match(/masquerade/g)?.length, 4);
  });

  it('fails with NAT_FAILED without a default route, a tmfifo, a card rshim or a firewall tool', async () => {
    const lab = await newLab(1, 'fail');
    await lab.setDefaultRoute(false);
    await assert.rejects(
      configureNat({ rshimIndex: 0, toolPath: lab.toolBinDir }),
      expectCode('NAT_FAILED', /no IPv4 default route/),
    );
    await lab.setDefaultRoute(true);
    await assert.rejects(
      configureNat({ rshimIndex: 5, toolPath: lab.toolBinDir }),
      expectCode('NAT_FAILED', /tmfifo_net5 does not exist.*rshim/),
    );
    await assert.rejects(
      configureNat({ card: { slot: '0000:03:00', rshim: null }, toolPath: lab.toolBinDir }),
      expectCode('NAT_FAILED', /0000:03:00 has no rshim/),
    );
    await assert.rejects(
      configureNat({ rshimIndex: 0, toolPath: await lab.toolPathWithout(['nft', 'iptables']) }),
      expectCode('NAT_FAILED', /neither nft nor iptables/),
    );
    await assert.rejects(
      configureNat({ rshimIndex: 0, toolPath: await lab.toolPathWithout(['sysctl']) }),
      expectCode('TOOL_NOT_FOUND'),
    );
  });

  it('never touched the root namespace', async () => {
    assert.equal(await readFile('/proc/sys/net/ipv4/ip_forward', 'utf8'), rootForwarding);
    assert.equal(await rootRulesetNow(), rootRuleset);
  });
});
