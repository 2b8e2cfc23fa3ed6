import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { clean, duration, plainPrefix, renderPlain, renderScreen } from '../../agent/console/render.js';
import type { StatusSnapshot } from '../../agent/console/status-model.js';

const T0 = Date.parse('2025-03-01T12:00:00Z');
const MIB = 1024 * 1024;

const base = (): StatusSnapshot => ({
  agentVersion: '0.1.0',
  startedAt: T0,
  identity: {
    hostname: 'node-17',
    vendor: 'Dell Inc.',
    product: 'PowerEdge R760',
    serial: 'J8K2LM3',
    bootif: '52:54:00:12:34:56',
    addresses: ['eth0 10.20.0.17/24', 'eth0 2001:db8::17/64', 'eth1 192.168.100.1/30'],
  },
  link: {
    state: 'retrying',
    url: 'wss://conductor.example:9443/v1/agent',
    everConnected: false,
    attempts: 3,
    lastError: 'connect ECONNREFUSED 10.20.0.1:9443',
    since: null,
    retryAt: T0 + 4200,
    nodeUuid: null,
  },
  running: [],
  last: null,
  cards: null,
  warnings: [
    {
      seq: 1,
      time: T0 - 5000,
      level: 'warn',
      text: 'conductor connection error: connect ECONNREFUSED 10.20.0.1:9443',
      count: 1,
    },
  ],
});

/** Two minutes in: connected, a BFB going onto two cards, one warning and one error. */
const busy = (): StatusSnapshot => ({
  ...base(),
  link: {
    state: 'connected',
    url: 'wss://conductor.example:9443/v1/agent',
    everConnected: true,
    attempts: 0,
    lastError: null,
    since: T0 + 28_000,
    retryAt: null,
    nodeUuid: '8c2a6f1e-1b7d-4a35-9a57-3d0f2f1c9e11',
  },
  running: [
    {
      id: 'bfb-1',
      name: 'bluefield.install_bfb',
      startedAt: T0 + 30_000,
      progress: {
        phase: '0000:03:00 push',
        done: 700 * MIB,
        total: 1700 * MIB,
        unit: 'bytes',
        rate: 95 * MIB,
        message: null,
      },
    },
  ],
  last: {
    id: 'list-1',
    name: 'bluefield.list',
    status: 'SUCCEEDED',
    errorCode: null,
    errorMessage: null,
    finishedAt: T0 + 29_000,
  },
  cards: [
    {
      slot: '0000:03:00',
      generation: 'BF2',
      mode: { current: 'nic', next: 'nic' },
      install: {
        state: 'pushing',
        detail: null,
        done: 700 * MIB,
        total: 1700 * MIB,
        version: null,
        commandId: 'bfb-1',
      },
    },
    {
      slot: '0000:23:00',
      generation: 'BF3',
      mode: { current: 'nic', next: 'dpu' },
      install: {
        state: 'installing',
        detail: 'INFO[MISC]: Ubuntu installation started',
        done: null,
        total: null,
        version: null,
        commandId: 'bfb-1',
      },
    },
  ],
  warnings: [
    ...base().warnings,
    {
      seq: 2,
      time: T0 + 112_000,
      level: 'error',
      text: 'command failed with an unexpected error: boom',
      count: 1,
    },
  ],
});

const NOW = T0 + 113_000;

describe('status screen, redrawn in place', () => {
  it('shows a node that never reached its conductor', () => {
    assert.deepEqual(renderScreen(base(), { width: 79, height: 24 }, T0), [
      'bm-agent 0.1.0  node-17                          2025-03-01 12:00:00 UTC  up 0s',
      'System     Dell Inc. PowerEdge R760, serial J8K2LM3',
      'BOOTIF     52:54:00:12:34:56',
      'IP         eth0 10.20.0.17/24  eth0 2001:db8::17/64  eth1 192.168.100.1/30',
      'Conductor  never connected: 3 failed attempts, next in 5s',
      '           at wss://conductor.example:9443/v1/agent',
      '           last error: connect ECONNREFUSED 10.20.0.1:9443',
      'Command    idle',
      'Warnings   11:59:55 WARN  conductor connection error: connect ECONNREFUSED 10.2',
    ]);
  });

  it('shows the link, the running command with its bar, each BlueField and the last warnings', () => {
    assert.deepEqual(renderScreen(busy(), { width: 99, height: 30 }, NOW), [
      'bm-agent 0.1.0  node-17                                           2025-03-01 12:01:53 UTC  up 1m53s',
      'System     Dell Inc. PowerEdge R760, serial J8K2LM3',
      'BOOTIF     52:54:00:12:34:56',
      'IP         eth0 10.20.0.17/24  eth0 2001:db8::17/64  eth1 192.168.100.1/30',
      'Conductor  connected since 12:00:28, node 8c2a6f1e-1b7d-4a35-9a57-3d0f2f1c9e11',
      '           at wss://conductor.example:9443/v1/agent',
      'Command    bluefield.install_bfb (bfb-1) running 1m23s',
      '             0000:03:00 push [##############....................]  41% 700 MiB / 1.7 GiB 95.0 MiB/s',
      'Last       bluefield.list (list-1) SUCCEEDED at 12:00:29',
      'BlueField  0000:03:00 BF2 mode nic             pushing BFB 41% of 1.7 GiB',
      '           0000:23:00 BF3 mode nic (next: dpu) installing: INFO[MISC]: Ubuntu installation started',
      'Warnings   11:59:55 WARN  conductor connection error: connect ECONNREFUSED 10.20.0.1:9443',
      '           12:01:52 ERROR command failed with an unexpected error: boom',
    ]);
  });

  it('fits a small screen: lines cut at the width, BlueFields and warnings give way first', () => {
    const snapshot = busy();
    snapshot.cards = [
      ...(snapshot.cards ?? []),
      { slot: '0000:43:00', generation: 'BF3', mode: null, install: null },
      { slot: '0000:63:00', generation: null, mode: null, install: null },
    ];
    const lines = renderScreen(snapshot, { width: 39, height: 14 }, NOW);
    assert.deepEqual(lines, [
      'bm-agent 0.1.0  node-17',
      'System     Dell Inc. PowerEdge R760, se',
      'BOOTIF     52:54:00:12:34:56',
      'IP         eth0 10.20.0.17/24',
      '           (2 more)',
      'Conductor  connected since 12:00:28, no',
      '           at wss://conductor.example:9',
      'Command    bluefield.install_bfb (bfb-1',
      '             0000:03:00 push [####.....',
      'Last       bluefield.list (list-1) SUCC',
      'BlueField  0000:03:00 BF2 mode nic     ',
      '           0000:23:00 BF3 mode nic (nex',
      '           (2 more)',
      'Warnings   (2 more)',
    ]);
    for (const line of lines) assert.ok(line.length <= 39, line);
  });

  it('says when no BlueField was found, when nothing warned, and how a command ended', () => {
    const snapshot = base();
    snapshot.link = { ...snapshot.link, state: 'retrying', everConnected: true, attempts: 1 };
    snapshot.cards = [];
    snapshot.warnings = [];
    snapshot.last = {
      id: 'img-1',
      name: 'image.write',
      status: 'FAILED',
      errorCode: 'CHECKSUM_MISMATCH',
      errorMessage: 'sha256 of the image differs',
      finishedAt: T0 - 1000,
    };
    assert.deepEqual(
      renderScreen(snapshot, { width: 79, height: 24 }, T0).slice(4),
      [
        'Conductor  disconnected: 1 failed attempt, next in 5s',
        '           at wss://conductor.example:9443/v1/agent',
        '           last error: connect ECONNREFUSED 10.20.0.1:9443',
        'Command    idle',
        'Last       image.write (img-1) FAILED at 11:59:59: CHECKSUM_MISMATCH sha256 of the image differs',
        'BlueField  none found',
        'Warnings   none',
      ].map((line) => line.slice(0, 79)),
    );
  });

  it('never lets text from outside move the cursor', () => {
    const snapshot = base();
    snapshot.identity.hostname = 'evil\x1b[2J\x1b[Hhost';
    snapshot.warnings = [
      { seq: 1, time: T0, level: 'warn', text: 'line\r\nbreak \x1b]0;title\x07 \u00e9\u4e2d', count: 1 },
    ];
    const text = renderScreen(snapshot, { width: 79, height: 24 }, T0).join('\n');
    assert.doesNotMatch(text, /[^\n\x20-\x7e]/);
    assert.match(text, /evil \[2J \[Hhost/);
    assert.equal(clean('a\tb\x1b[31mc'), 'a b [31mc');
  });

  it('counts time the way an operator reads it', () => {
    assert.equal(duration(0), '0s');
    assert.equal(duration(59_999), '59s');
    assert.equal(duration(83_000), '1m23s');
    assert.equal(duration(3_725_000), '1h02m');
  });
});

describe('status screen as plain lines', () => {
  it('says the same facts without a clock, a countdown or a bar', () => {
    assert.deepEqual(renderPlain(busy(), 132), [
      {
        key: 'agent',
        text: 'bm-agent 0.1.0 on node-17: Dell Inc. PowerEdge R760, serial J8K2LM3',
      },
      {
        key: 'network',
        text: 'BOOTIF 52:54:00:12:34:56, IP eth0 10.20.0.17/24, eth0 2001:db8::17/64, eth1 192.168.100.1/30',
      },
      {
        key: 'conductor',
        text: 'conductor wss://conductor.example:9443/v1/agent: connected since 12:00:28, node 8c2a6f1e-1b7d-4a35-9a57-3d0f2f1c9e11',
      },
      { key: 'run:bfb-1', text: 'command bluefield.install_bfb (bfb-1): 0000:03:00 push 40% of 1.7 GiB' },
      { key: 'last', text: 'finished bluefield.list (list-1) SUCCEEDED at 12:00:29' },
      { key: 'bluefield:0000:03:00', text: 'BlueField 0000:03:00 BF2 mode nic pushing BFB 40% of 1.7 GiB' },
      {
        key: 'bluefield:0000:23:00',
        text: 'BlueField 0000:23:00 BF3 mode nic (next: dpu) installing: INFO[MISC]: Ubuntu installation started',
      },
      { key: 'warning:1', text: 'WARN conductor connection error: connect ECONNREFUSED 10.20.0.1:9443' },
      { key: 'warning:2', text: 'ERROR command failed with an unexpected error: boom' },
    ]);
    assert.equal(plainPrefix(NOW), '[bm-agent 12:01:53] ');
  });

  it('changes a line only when something worth a line changed', () => {
    const at = (done: number, now: number): StatusSnapshot => {
      const snapshot = busy();
      const [command] = snapshot.running;
      if (command?.progress) command.progress = { ...command.progress, done, rate: done / 7 };
      snapshot.link = { ...base().link, retryAt: now + 3000 };
      return snapshot;
    };
    const text = (snapshot: StatusSnapshot): string[] => renderPlain(snapshot, 132).map((line) => line.text);
    // 41% and 49% are both "40%"; the rate and the retry countdown are not shown at all.
    assert.deepEqual(text(at(700 * MIB, T0)), text(at(840 * MIB, T0 + 9000)));
    assert.notDeepEqual(text(at(700 * MIB, T0)), text(at(860 * MIB, T0)));
    // Between two failures the link says the same, so a retry costs one line, not two.
    const waiting = base();
    const connecting = base();
    connecting.link = { ...connecting.link, state: 'connecting', retryAt: null };
    assert.deepEqual(text(waiting)[2], text(connecting)[2]);
    assert.equal(
      text(waiting)[2],
      'conductor wss://conductor.example:9443/v1/agent: never connected: 3 failed attempts; last error: connect ECONNREFUSED 10.20.0.1:9443',
    );
  });

  it('cuts lines at the given width', () => {
    for (const line of renderPlain(busy(), 40)) assert.ok(line.text.length <= 40, line.text);
  });
});
