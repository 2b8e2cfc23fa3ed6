import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, before, beforeEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { collectLldp, type CollectLldpOptions } from '../../agent/lldp/capture.js';
import type { HardwarePaths } from '../../agent/hardware/paths.js';
import { AgentError, CancelledError } from '../../agent/util/errors.js';
import { silentLogger } from '../../agent/util/logger.js';
import type { ProcessResult, RunProcess } from '../../agent/util/run-process.js';

/*
 * The capture logic against a prepared sysfs tree, a fake `tcpdump` on a private PATH (a real
 * process that prints a real pcap capture, fails, or hangs, as told per interface) and a fake
 * `ip` that flips the tree's flags and carrier. The real thing is in integration/lldp.test.ts.
 */

const FIXTURE = fileURLToPath(new URL('../../../test/fixtures/lldp/lldpd-veth-1frame.pcap', import.meta.url));

let root: string;
let paths: HardwarePaths;
let bin: string;
let behaviour: string;

const FAKE_TCPDUMP = (dir: string): string => `#!/bin/sh
# argv: -i IF ...; behaviour comes from files named after the interface.
IF="$2"
D='${dir}'
echo $$ > "$D/$IF.pid"
if [ -f "$D/$IF.fail" ]; then cat "$D/$IF.fail" >&2; exit 1; fi
if [ -f "$D/$IF.delay" ]; then sleep "$(cat "$D/$IF.delay")"; fi
if [ -f "$D/$IF.out" ]; then cat "$D/$IF.out"; exit 0; fi
if [ -f "$D/$IF.stubborn" ]; then trap '' TERM; fi
exec sleep 30
`;

const addNic = async (
  name: string,
  state: { up: boolean; carrier: boolean; device?: boolean },
): Promise<void> => {
  const dir = path.join(paths.sys, 'class/net', name);
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, 'flags'), state.up ? '0x1003\n' : '0x1002\n');
  await writeFile(path.join(dir, 'carrier'), state.carrier ? '1\n' : '0\n');
  await writeFile(path.join(dir, 'operstate'), state.carrier ? 'up\n' : 'down\n');
  if (state.device ?? true) await mkdir(path.join(dir, 'device'), { recursive: true });
};

const tell = (
  iface: string,
  kind: 'fail' | 'delay' | 'out' | 'stubborn',
  content: string | Buffer = '',
): Promise<void> => writeFile(path.join(behaviour, `${iface}.${kind}`), content);

const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

const pidOf = async (iface: string): Promise<number> =>
  Number.parseInt(await readFile(path.join(behaviour, `${iface}.pid`), 'utf8'), 10);

interface IpCall {
  args: string[];
}

/** `ip link set dev IF up|down` against the prepared tree; carrier follows after `carrierDelayMs`. */
const fakeIp = (calls: IpCall[], carrierAfterUp: Record<string, boolean> = {}): RunProcess => {
  return async (file, args) => {
    calls.push({ args });
    assert.equal(file, 'ip');
    const [, , , name, state] = args;
    assert.ok(name !== undefined && (state === 'up' || state === 'down'));
    const dir = path.join(paths.sys, 'class/net', name);
    await writeFile(path.join(dir, 'flags'), state === 'up' ? '0x1003\n' : '0x1002\n');
    await writeFile(
      path.join(dir, 'carrier'),
      state === 'up' && carrierAfterUp[name] !== false ? '1\n' : '0\n',
    );
    const result: ProcessResult = {
      argv: [file, ...args],
      exitCode: 0,
      signal: null,
      timedOut: false,
      cancelled: false,
      durationMs: 1,
      stdout: '',
      stderr: '',
    };
    return result;
  };
};

const collect = (options: Partial<CollectLldpOptions> = {}) =>
  collectLldp({
    paths,
    timeoutMs: 2000,
    carrierWaitMs: 300,
    logger: silentLogger(),
    envPATH: bin,
    runProcess: fakeIp([]),
    killGraceMs: 200,
    ...options,
  });

before(async () => {
  bin = await mkdtemp(path.join(os.tmpdir(), 'bma-lldp-bin-'));
});

after(async () => {
  await rm(bin, { recursive: true, force: true });
  if (root) await rm(root, { recursive: true, force: true });
});

beforeEach(async () => {
  if (root) await rm(root, { recursive: true, force: true });
  root = await mkdtemp(path.join(os.tmpdir(), 'bma-lldp-'));
  paths = { sys: path.join(root, 'sys'), dev: path.join(root, 'dev'), proc: path.join(root, 'proc') };
  behaviour = path.join(root, 'behaviour');
  await mkdir(behaviour);
  await mkdir(path.join(paths.sys, 'class/net'), { recursive: true });
  await writeFile(path.join(bin, 'tcpdump'), FAKE_TCPDUMP(behaviour));
  await chmod(path.join(bin, 'tcpdump'), 0o755);
});

describe('collectLldp', () => {
  it('listens on the physical NICs only and decodes the first frame', async () => {
    await addNic('eth0', { up: true, carrier: true });
    await addNic('eth1', { up: true, carrier: true });
    await addNic('lo', { up: true, carrier: true, device: false });
    await addNic('br0', { up: true, carrier: true, device: false });
    const frame = await readFile(FIXTURE);
    await tell('eth0', 'out', frame);
    await tell('eth1', 'delay', '0.2');
    await tell('eth1', 'out', frame);
    const frames: string[] = [];
    const started = performance.now();
    const results = await collect({ onFrame: (result) => frames.push(result.interface) });
    const elapsed = performance.now() - started;
    assert.deepEqual(
      results.map((result) => [result.interface, result.status]),
      [
        ['eth0', 'received'],
        ['eth1', 'received'],
      ],
    );
    assert.deepEqual(frames, ['eth0', 'eth1']);
    const [eth0, eth1] = results;
    assert.ok(eth0 && eth1);
    assert.equal(eth0.parsed.switch_system_name, 'sw-test-1');
    assert.equal(eth0.parsed.switch_port_id, 'Eth1/7');
    assert.deepEqual(eth0.tlvs[0]?.[0], 1);
    assert.deepEqual(eth0.tlvs.at(-1), [0, '']);
    assert.ok((eth1.received_after_ms ?? 0) >= 150, `eth1 after ${eth1.received_after_ms} ms`);
    // Done at the last first frame, not at the 2 s timeout.
    assert.ok(elapsed < 1500, `took ${elapsed} ms`);
  });

  it('reports an up port without carrier at once and does not wait for it', async () => {
    await addNic('eth0', { up: true, carrier: true });
    await addNic('eth1', { up: true, carrier: false });
    await tell('eth0', 'delay', '0.5');
    await tell('eth0', 'out', await readFile(FIXTURE));
    const done: Array<[string, number]> = [];
    const started = performance.now();
    const results = await collect({
      timeoutMs: 5000,
      carrierWaitMs: 200,
      onDone: (result) => done.push([result.interface, performance.now() - started]),
    });
    assert.deepEqual(
      results.map((result) => result.status),
      ['received', 'no_carrier'],
    );
    assert.equal(done[0]?.[0], 'eth1');
    // Already up, so no link-up wait: reported at once, without even starting a capture.
    assert.ok((done[0]?.[1] ?? 0) < 150, `no_carrier after ${done[0]?.[1]} ms`);
    await assert.rejects(pidOf('eth1'));
    assert.ok(performance.now() - started < 1500);
  });

  it('times out an interface without a neighbour, never later than the timeout', async () => {
    await addNic('eth0', { up: true, carrier: true });
    await addNic('eth1', { up: true, carrier: true });
    await tell('eth0', 'out', await readFile(FIXTURE));
    const started = performance.now();
    const results = await collect({ timeoutMs: 700 });
    const elapsed = performance.now() - started;
    assert.deepEqual(
      results.map((result) => [result.status, result.tlvs]),
      [
        ['received', results[0]?.tlvs],
        ['timeout', []],
      ],
    );
    assert.ok(elapsed >= 690 && elapsed < 1100, `took ${elapsed} ms`);
    assert.equal(isAlive(await pidOf('eth1')), false, 'the waiting tcpdump was killed');
  });

  it('brings a down link up for the capture and restores it', async () => {
    await addNic('eth0', { up: false, carrier: false });
    await addNic('eth1', { up: true, carrier: true });
    await tell('eth0', 'out', await readFile(FIXTURE));
    await tell('eth1', 'out', await readFile(FIXTURE));
    const calls: IpCall[] = [];
    const results = await collect({ runProcess: fakeIp(calls) });
    assert.deepEqual(
      results.map((result) => result.status),
      ['received', 'received'],
    );
    assert.deepEqual(
      calls.map((call) => call.args.join(' ')),
      ['link set dev eth0 up', 'link set dev eth0 down'],
    );
    assert.equal((await readFile(path.join(paths.sys, 'class/net/eth0/flags'), 'utf8')).trim(), '0x1002');
  });

  it('reports a link that stays without carrier after link-up as no_carrier, and restores it', async () => {
    await addNic('eth0', { up: false, carrier: false });
    const calls: IpCall[] = [];
    const results = await collect({ runProcess: fakeIp(calls, { eth0: false }), carrierWaitMs: 150 });
    assert.equal(results[0]?.status, 'no_carrier');
    assert.deepEqual(
      calls.map((call) => call.args.at(-1)),
      ['up', 'down'],
    );
  });

  it('reports a tcpdump that cannot start on one interface and goes on with the others', async () => {
    await addNic('eth0', { up: true, carrier: true });
    await addNic('eth1', { up: true, carrier: true });
    await tell('eth0', 'fail', "tcpdump: eth0: You don't have permission to capture on that device\n");
    await tell('eth1', 'out', await readFile(FIXTURE));
    const [eth0, eth1] = await collect();
    assert.equal(eth0?.status, 'error');
    assert.match(eth0?.error ?? '', /permission to capture/);
    assert.equal(eth1?.status, 'received');
  });

  it('names tcpdump when it is not installed', async () => {
    await addNic('eth0', { up: true, carrier: true });
    const empty = await mkdtemp(path.join(os.tmpdir(), 'bma-empty-path-'));
    try {
      const [eth0] = await collect({ envPATH: empty });
      assert.equal(eth0?.status, 'error');
      assert.match(eth0?.error ?? '', /TOOL_NOT_FOUND: tcpdump is not on PATH/);
    } finally {
      await rm(empty, { recursive: true, force: true });
    }
  });

  it('turns output that is not pcap into an error, not a crash', async () => {
    await addNic('eth0', { up: true, carrier: true });
    await tell('eth0', 'out', 'this is not a capture at all, just text\n');
    const [eth0] = await collect();
    assert.equal(eth0?.status, 'error');
    assert.match(eth0?.error ?? '', /unreadable: not a pcap stream/);
  });

  it('reports a frame that is not LLDP with a warning', async () => {
    await addNic('eth0', { up: true, carrier: true });
    const frame = await readFile(FIXTURE);
    // Ethertype IPv4 instead of LLDP: header is 24 bytes, record header 16, then the frame.
    frame.writeUInt16BE(0x0800, 24 + 16 + 12);
    await tell('eth0', 'out', frame);
    const [eth0] = await collect();
    assert.equal(eth0?.status, 'received');
    assert.deepEqual(eth0?.tlvs, []);
    assert.ok((eth0?.warnings.length ?? 0) > 0);
  });

  it('kills a tcpdump that ignores SIGTERM', async () => {
    await addNic('eth0', { up: true, carrier: true });
    await tell('eth0', 'stubborn');
    const started = performance.now();
    const [eth0] = await collect({ timeoutMs: 300, killGraceMs: 200 });
    assert.equal(eth0?.status, 'timeout');
    assert.ok(performance.now() - started < 1000);
    assert.equal(isAlive(await pidOf('eth0')), false);
  });

  it('stops everything and restores links when cancelled', async () => {
    await addNic('eth0', { up: false, carrier: false });
    await addNic('eth1', { up: true, carrier: true });
    const calls: IpCall[] = [];
    const controller = new AbortController();
    setTimeout(() => controller.abort(new CancelledError()), 300);
    const started = performance.now();
    await assert.rejects(
      collect({ runProcess: fakeIp(calls), signal: controller.signal, timeoutMs: 10_000 }),
      (error: unknown) => AgentError.is(error) && error.code === 'CANCELLED',
    );
    assert.ok(performance.now() - started < 1500);
    assert.deepEqual(
      calls.map((call) => call.args.at(-1)),
      ['up', 'down'],
    );
    await sleep(50);
    assert.equal(isAlive(await pidOf('eth0')), false);
    assert.equal(isAlive(await pidOf('eth1')), false);
  });

  it('rejects malformed and unknown interface names', async () => {
    await addNic('eth0', { up: true, carrier: true });
    for (const names of [['../eth0'], ['a'.repeat(16)], [''], ['-i']]) {
      await assert.rejects(
        collect({ interfaces: names }),
        (error: unknown) => AgentError.is(error) && error.code === 'INVALID_PARAMS',
        JSON.stringify(names),
      );
    }
    await assert.rejects(
      collect({ interfaces: ['eth0', 'eth9'] }),
      (error: unknown) =>
        AgentError.is(error) && error.code === 'INVALID_PARAMS' && /eth9/.test(error.message),
    );
  });

  it('takes an explicit list as given, virtual links included, without duplicates', async () => {
    await addNic('br0', { up: true, carrier: true, device: false });
    await tell('br0', 'out', await readFile(FIXTURE));
    const results = await collect({ interfaces: ['br0', 'br0'] });
    assert.deepEqual(
      results.map((result) => [result.interface, result.status]),
      [['br0', 'received']],
    );
  });
});
