import assert from 'node:assert/strict';
import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ProgressLine } from '../../agent/cli/format.js';
import type { BootRequest } from '../support/boot-server.js';
import {
  cannotBootMessage,
  DemoView,
  describeBootRequest,
  describeHello,
  describeNeighbour,
  renderArtefacts,
  renderSummary,
  renderTimeline,
  statArtefacts,
  summarizeInventory,
  timeoutMessage,
} from '../support/pxe-demo-view.js';

/** A terminal or a pipe, as far as the view can tell: what it wrote, in order. */
class Screen {
  readonly chunks: string[] = [];
  constructor(
    readonly isTTY: boolean,
    readonly columns = 100,
  ) {}
  write(text: string): boolean {
    this.chunks.push(text);
    return true;
  }
  get text(): string {
    return this.chunks.join('');
  }
}

const clockAt = (start = 1_000_000): { now: () => number; advance: (ms: number) => void } => {
  let now = start;
  return { now: () => now, advance: (ms) => (now += ms) };
};

const MIB = 1024 * 1024;
const writeProgress = (done: number, total: number | null = 64 * MIB, phase = 'write'): ProgressLine => ({
  phase,
  done,
  total,
  unit: 'bytes',
  rate: 20 * MIB,
  message: 'raw',
});

describe('the demo view on a terminal', () => {
  it('redraws the progress bar in place and ends it with one newline', () => {
    const screen = new Screen(true);
    const clock = clockAt();
    const view = new DemoView(screen, { live: true, clock: clock.now });
    for (let done = 0; done <= 64 * MIB; done += 16 * MIB) {
      clock.advance(500);
      view.progress(writeProgress(done));
    }
    assert.equal(screen.chunks.length, 5, 'one write per update');
    for (const chunk of screen.chunks) {
      assert.ok(chunk.startsWith('\r'), `a redraw starts at the line's beginning: ${JSON.stringify(chunk)}`);
      assert.ok(!chunk.includes('\n'), 'no line is added while the bar runs');
    }
    const last = screen.chunks.at(-1) ?? '';
    assert.match(last, /\[#{10,30}\] 100% 64\.0 MiB \/ 64\.0 MiB 20\.0 MiB\/s raw$/);
    assert.ok(last.length <= 100, `the bar fits the 100 columns: ${last.length}`);
    assert.match(screen.chunks[1] ?? '', / 25% 16\.0 MiB/);
    const bars = screen.chunks.map((chunk) => /\[[#.]+\]/.exec(chunk)?.[0].length);
    assert.equal(new Set(bars).size, 1, `the bar keeps its width while the numbers grow: ${bars.join(' ')}`);
    view.endProgress();
    assert.equal(screen.chunks.at(-1), '\n');
    view.endProgress();
    assert.equal(screen.chunks.filter((chunk) => chunk === '\n').length, 1, 'a second end adds nothing');
  });

  it('prints an event above the bar and draws the bar again below it', () => {
    const screen = new Screen(true);
    const view = new DemoView(screen, { live: true, clock: clockAt().now });
    view.progress(writeProgress(8 * MIB));
    const bar = screen.chunks[0]?.slice(1) ?? '';
    view.line('heartbeat', 'seq 3');
    const [clear, event, redraw] = screen.chunks.slice(1);
    assert.equal(clear, `\r${' '.repeat(bar.length)}\r`, 'the bar is wiped first');
    assert.match(event ?? '', /^\[ +0\.0s\] heartbeat +seq 3\n$/);
    assert.equal(redraw, bar, 'the bar comes back below the event');
  });

  it('cuts the bar to the terminal width, so it never wraps', () => {
    const screen = new Screen(true, 40);
    const view = new DemoView(screen, { live: true, clock: clockAt().now });
    view.progress(writeProgress(MIB));
    assert.ok((screen.chunks[0]?.length ?? 0) <= 40, JSON.stringify(screen.chunks[0]));
  });

  it('is plain when the output is no terminal, unless told otherwise', () => {
    assert.equal(new DemoView(new Screen(false)).live, false);
    assert.equal(new DemoView(new Screen(true), { live: false }).live, false);
  });
});

describe('the demo view on a pipe or a log file', () => {
  it('prints a progress line per phase and per quarter, with no carriage returns', () => {
    const screen = new Screen(false);
    const clock = clockAt();
    const view = new DemoView(screen, { live: false, clock: clock.now });
    for (let done = 0; done <= 64 * MIB; done += 2 * MIB) {
      clock.advance(100);
      view.progress(writeProgress(done));
    }
    view.endProgress();
    const lines = screen.text.trimEnd().split('\n');
    assert.deepEqual(
      lines.map((line) => /(\d+)% /.exec(line)?.[1]),
      ['0', '25', '50', '75', '100'],
      screen.text,
    );
    assert.ok(!screen.text.includes('\r'), 'no carriage return');
    // eslint-disable-next-line no-control-regex
    assert.ok(!/\x1b/.test(screen.text), 'no escape sequence');
  });

  it('starts afresh at a new phase and paces a progress without a total to one line per 5 s', () => {
    const screen = new Screen(false);
    const clock = clockAt();
    const view = new DemoView(screen, { live: false, clock: clock.now });
    view.progress(writeProgress(MIB, 64 * MIB, 'download'));
    view.progress(writeProgress(2 * MIB, 64 * MIB, 'download'));
    view.progress(writeProgress(0, null, 'convert'));
    for (let i = 1; i <= 12; i++) {
      clock.advance(1000);
      view.progress(writeProgress(i * MIB, null, 'convert'));
    }
    const lines = screen.text.trimEnd().split('\n');
    assert.equal(lines.filter((line) => line.includes('download')).length, 1, screen.text);
    const convert = lines.filter((line) => line.includes('convert'));
    assert.deepEqual(
      convert.map((line) => /convert +(\S+ \S+)/.exec(line)?.[1]),
      ['0 B', '5.0 MiB', '10.0 MiB'],
      screen.text,
    );
  });

  it('stamps every event with seconds since the start and indents continuation lines', () => {
    const screen = new Screen(false);
    const clock = clockAt();
    const view = new DemoView(screen, { clock: clock.now });
    clock.advance(12_345);
    view.line('inventory', 'CPU 1\nmemory 1 GiB');
    const [first, second] = screen.text.split('\n');
    assert.equal(first, '[  12.3s] inventory  CPU 1');
    assert.equal(second, `${' '.repeat('[  12.3s] inventory  '.length)}memory 1 GiB`);
  });
});

describe('the demo descriptions', () => {
  const request = (overrides: Partial<BootRequest>): BootRequest => ({
    method: 'GET',
    path: '/vmlinuz',
    status: 200,
    bytes: 8 * MIB,
    startedAt: 10_000,
    finishedAt: 10_500,
    range: null,
    ...overrides,
  });

  it('names what iPXE fetched, with its size and rate', () => {
    assert.equal(
      describeBootRequest(request({})),
      'iPXE fetched the kernel /vmlinuz: 8.0 MiB in 0.5 s, 16.0 MiB/s',
    );
    assert.equal(
      describeBootRequest(request({ path: '/boot.ipxe', bytes: 282, finishedAt: 10_010 })),
      'iPXE fetched the iPXE script /boot.ipxe: 282 B in 0.0 s',
    );
    assert.equal(describeBootRequest(request({ status: 404, bytes: 0 })), 'the kernel (/vmlinuz): HTTP 404');
    assert.match(describeBootRequest(request({ finishedAt: null })) ?? '', /cut off/);
    assert.equal(describeBootRequest(request({ path: '/disk.img' })), null, 'the image is not a boot file');
  });

  it('describes the hello with the boot time since QEMU started', () => {
    const text = describeHello(
      {
        agent_version: '0.1.0',
        hostname: 'bm-agent-525400e2e001',
        macs: ['52:54:00:e2:e0:01', '52:54:00:e2:e0:02'],
        bootif: '52:54:00:e2:e0:01',
        capabilities: ['inventory.collect', 'image.write'],
        token: null,
      },
      'node-1',
      23_456,
    );
    assert.match(text, /bm-agent 0\.1\.0 on bm-agent-525400e2e001, 23\.5 s after QEMU started/);
    assert.match(text, /MACs 52:54:00:e2:e0:01 52:54:00:e2:e0:02; BOOTIF 52:54:00:e2:e0:01/);
    assert.match(text, /2 commands; token issued now/);
  });

  it('says what to run when this machine cannot boot the ramdisk', () => {
    const text = cannotBootMessage('qemu-system-x86_64 is not installed');
    assert.match(text, /^The demo cannot boot the ramdisk here: qemu-system-x86_64 is not installed\./);
    assert.match(text, /^ {2}make demo +as root on Debian 12 installs what is missing \(QEMU, iPXE/m);
    assert.match(text, /^ {2}make demo-local +the host-only demo/m);
  });

  it('points a timeout at the serial console log', () => {
    const message = timeoutMessage("the agent's hello", 240, '/work/build/demo/run/console.log');
    assert.match(message, /timed out after 240 s waiting for the agent's hello/);
    assert.match(message, /\/work\/build\/demo\/run\/console\.log/);
    assert.ok(!timeoutMessage('x', 1, null).includes('console'), 'no VM yet: no log to point at');
  });
});

describe('the inventory summary', () => {
  const result = {
    inventory: {
      cpu: { count: 1, model_name: 'QEMU TCG CPU', architecture: 'x86_64' },
      memory: { total: 1000 * MIB, physical_mb: 1024 },
      system_vendor: { manufacturer: 'QEMU', product_name: 'Standard PC (i440FX + PIIX, 1996)' },
      boot: { current_boot_mode: 'bios', pxe_interface: '52:54:00:e2:e0:01' },
      disks: [
        { name: '/dev/vda', size: 2 * 1024 * MIB, serial: 'bma-demo-disk', rotational: true, model: null },
      ],
      interfaces: [
        {
          name: 'eth0',
          mac_address: '52:54:00:e2:e0:01',
          ipv4_address: '10.0.2.15',
          driver: 'virtio_net',
          has_carrier: true,
          lldp_processed: {},
        },
        {
          name: 'eth1',
          mac_address: '52:54:00:e2:e0:02',
          ipv4_address: null,
          driver: 'virtio_net',
          has_carrier: true,
          lldp_processed: {
            switch_chassis_id: '02:00:00:de:e0:01',
            switch_port_id: 'swp12',
            switch_port_description: 'rack 4 server 7',
            switch_system_name: 'leaf-04.demo',
          },
        },
      ],
    },
  };

  it('lists CPUs, memory, disks and NICs with their MACs, and the LLDP neighbour', () => {
    const view = summarizeInventory(result, '52:54:00:E2:E0:02');
    const text = view.lines.join('\n');
    assert.match(text, /system {2}QEMU Standard PC \(i440FX \+ PIIX, 1996\), bios boot/);
    assert.match(text, /CPU {5}1 x QEMU TCG CPU \(x86_64\)/);
    assert.match(text, /memory {2}1000 MiB usable of 1024 MiB physical/);
    assert.match(text, /\/dev\/vda {2}2\.0 GiB, serial bma-demo-disk, HDD/);
    assert.match(text, /eth0 {2}52:54:00:e2:e0:01, 10\.0\.2\.15, virtio_net, link up, PXE \(BOOTIF\)/);
    assert.match(text, /eth1 {2}52:54:00:e2:e0:02, no IPv4, virtio_net, link up$/m);
    assert.equal(view.lldpInterface, 'eth1');
    assert.deepEqual(view.neighbour, {
      interface: 'eth1',
      chassis: '02:00:00:de:e0:01',
      port: 'swp12',
      portDescription: 'rack 4 server 7',
      systemName: 'leaf-04.demo',
    });
    assert.equal(
      describeNeighbour(view.neighbour),
      'eth1: switch leaf-04.demo (chassis 02:00:00:de:e0:01), port swp12 "rack 4 server 7"',
    );
  });

  it('reports no neighbour when the NIC heard none', () => {
    const view = summarizeInventory(result, '52:54:00:e2:e0:01');
    assert.equal(view.neighbour, null, 'an empty lldp_processed is no neighbour');
    assert.equal(view.lldpInterface, 'eth0');
    assert.equal(summarizeInventory(result, '52:54:00:00:00:99').lldpInterface, null);
  });

  it('shows what is missing or malformed as "-" instead of failing', () => {
    for (const bad of [null, 'inventory', [], { inventory: null }, { inventory: { cpu: 7, disks: 'x' } }]) {
      const view = summarizeInventory(bad, '52:54:00:e2:e0:02');
      assert.match(view.lines.join('\n'), /CPU {5}- x - \(-\)/);
      assert.ok(view.lines.includes('disks   none'));
      assert.ok(view.lines.includes('NICs    none'));
      assert.equal(view.neighbour, null);
    }
    const odd = summarizeInventory(
      { inventory: { interfaces: [{ name: 5, mac_address: '52:54:00:e2:e0:02', lldp_processed: [] }] } },
      '52:54:00:e2:e0:02',
    );
    assert.match(odd.lines.join('\n'), /NICs {4}- {2}52:54:00:e2:e0:02, no IPv4/);
    assert.equal(odd.neighbour, null);
  });
});

describe('the demo summary', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'bma-demo-view-'));
    await writeFile(path.join(dir, 'console.log'), 'x'.repeat(5000));
    await writeFile(path.join(dir, 'disk.raw'), '');
    await truncate(path.join(dir, 'disk.raw'), 2 * 1024 * MIB);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const phases = new Map([
    ['qemu', 0],
    ['script', 6_100],
    ['kernel-fetched', 6_600],
    ['initrd-fetched', 8_800],
    ['hello', 24_000],
    ['inventory.collect', 33_500],
    ['image.write', 38_000],
    ['system.power_off', 38_600],
    ['exit', 39_200],
  ]);

  it('times each phase from QEMU start, in boot order, with the step from the one before', () => {
    const lines = renderTimeline(phases).split('\n');
    assert.match(lines[0] ?? '', /^phase +at \(s\) +step \(s\)$/);
    assert.deepEqual(
      lines.slice(1).map((line) => line.trim().split(/\s{2,}/)),
      [
        ['QEMU started', '0.0', '+0.0'],
        ['boot script fetched', '6.1', '+6.1'],
        ['kernel fetched', '6.6', '+0.5'],
        ['initramfs fetched', '8.8', '+2.2'],
        ['hello accepted', '24.0', '+15.2'],
        ['inventory + LLDP done', '33.5', '+9.5'],
        ['image written', '38.0', '+4.5'],
        ['power-off acknowledged', '38.6', '+0.6'],
        ['VM exited', '39.2', '+0.6'],
      ],
    );
  });

  it('lists the artefacts with sizes, sparse files with what they take on disk, missing ones as such', async () => {
    const entries = await statArtefacts([
      { path: path.join(dir, 'disk.raw'), what: "the VM's disk", sparse: true },
      { path: path.join(dir, 'console.log'), what: 'serial console' },
      { path: path.join(dir, 'conductor.log'), what: 'frames' },
    ]);
    assert.deepEqual(
      entries.map((entry) => [entry.bytes, entry.allocated]),
      [
        [2 * 1024 * MIB, 0],
        [5000, null],
        [null, null],
      ],
    );
    const text = renderArtefacts('This run:', entries, path.dirname(dir));
    const name = path.basename(dir);
    assert.match(text, new RegExp(`^  ${name}/disk\\.raw +2\\.0 GiB \\(0 B on disk\\)  the VM's disk$`, 'm'));
    assert.match(text, new RegExp(`^  ${name}/console\\.log +4\\.9 KiB  serial console$`, 'm'));
    assert.match(text, new RegExp(`^  ${name}/conductor\\.log +missing  frames$`, 'm'));
    assert.match(renderArtefacts('x', entries, '/elsewhere/entirely'), new RegExp(`  ${dir}/disk\\.raw`));
  });

  it('says whether the run went through, what went wrong, and ends with the files', async () => {
    const entries = await statArtefacts([{ path: path.join(dir, 'console.log'), what: 'serial console' }]);
    const input = {
      totalMs: 61_000,
      prepareMs: 1_200,
      phases,
      artefacts: [{ title: 'This run:', entries }],
      cwd: dir,
      problems: [],
    };
    const ok = renderSummary({ ...input, ok: true });
    assert.match(ok, /^The demo went through in 61\.0 s\./);
    assert.ok(!ok.includes('What went wrong'));
    assert.match(ok, /Preparation \(image to write, servers\): 1\.2 s/);
    assert.match(ok, /hello accepted +24\.0/);
    assert.match(ok, /This run:\n {2}console\.log +4\.9 KiB {2}serial console$/);
    const failed = renderSummary({
      ...input,
      ok: false,
      prepareMs: null,
      phases: new Map(),
      problems: ['no LLDP neighbour on eth1 within 8 s'],
    });
    assert.match(
      failed,
      /^The demo FAILED after 61\.0 s\.\n\nWhat went wrong:\n {2}- no LLDP neighbour on eth1/,
    );
    assert.ok(!failed.includes('Preparation'), 'no QEMU start, no preparation time');
    assert.ok(!failed.includes('since QEMU started'), 'no phases, no timeline');
  });
});
