/**
 * The status screen's writer on devices that are not terminals: a regular file and FIFOs (the
 * plain mode), devices that cannot be opened, and a consumer that stops reading. The terminal
 * cases (a pseudo-terminal) are in test/integration/status-screen.test.ts.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, constants, openSync, readSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import type { ChannelStatus } from '../../agent/channel/agent-channel.js';
import { StatusScreen, type StatusScreenOptions } from '../../agent/console/status-screen.js';
import { StatusModel } from '../../agent/console/status-model.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'bma-status-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const waitUntil = async (
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs = 5000,
): Promise<void> => {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
};

const capturingLogger = () => {
  const records: Array<Record<string, unknown>> = [];
  const logger = pino(
    { level: 'debug', base: undefined },
    { write: (line: string) => void records.push(JSON.parse(line) as Record<string, unknown>) },
  );
  return { logger, records };
};

const status = (overrides: Partial<ChannelStatus>): ChannelStatus => ({
  state: 'connecting',
  nodeUuid: null,
  connectedSince: null,
  lastError: null,
  lastDisconnect: null,
  reconnects: 0,
  attempts: 0,
  retryAt: null,
  ...overrides,
});

const newModel = (): StatusModel => {
  const model = new StatusModel({
    agentVersion: 'test',
    conductorUrl: 'ws://127.0.0.1:9/v1/agent',
    bootif: null,
  });
  model.setIdentity({ hostname: 'node-1', addresses: ['eth0 10.0.0.5/24'] });
  return model;
};

const open = (options: Partial<StatusScreenOptions> & Pick<StatusScreenOptions, 'devices' | 'model'>) =>
  StatusScreen.open({
    forcePlain: false,
    term: 'xterm',
    logger: pino({ level: 'silent' }),
    minIntervalMs: 20,
    probeSize: async () => null,
    ...options,
  });

const file = async (name: string): Promise<string> => {
  const target = path.join(dir, name);
  await writeFile(target, 'kept\n');
  return target;
};

const fifo = (name: string): string => {
  const target = path.join(dir, name);
  execFileSync('mkfifo', [target]);
  return target;
};

const drain = (fd: number): string => {
  const buffer = Buffer.alloc(65536);
  let text = '';
  for (;;) {
    try {
      const read = readSync(fd, buffer);
      if (read <= 0) return text;
      text += buffer.subarray(0, read).toString();
    } catch (error) {
      if ((error as { code?: unknown }).code === 'EAGAIN') return text;
      throw error;
    }
  }
};

describe('status screen on a file or a pipe', () => {
  it('appends one plain line per change, never an escape sequence, and keeps what the file had', async () => {
    const target = await file('plain.log');
    const model = newModel();
    const screen = await open({ devices: [target], model });
    const content = (): Promise<string> => readFile(target, 'utf8');
    await waitUntil('the first lines', async () => (await content()).includes('conductor'));
    model.linkChanged(
      status({ state: 'waiting', attempts: 1, lastError: 'connect ECONNREFUSED 127.0.0.1:9' }),
    );
    await waitUntil('the failure', async () => (await content()).includes('1 failed attempt'));
    // The same state again, and a connect attempt that says nothing new: no line.
    model.linkChanged(
      status({ state: 'waiting', attempts: 1, lastError: 'connect ECONNREFUSED 127.0.0.1:9' }),
    );
    model.linkChanged(
      status({ state: 'connecting', attempts: 1, lastError: 'connect ECONNREFUSED 127.0.0.1:9' }),
    );
    model.logRecord({ level: 'warn', time: new Date().toISOString(), msg: 'something odd' });
    await waitUntil('the warning', async () => (await content()).includes('something odd'));
    model.linkChanged(status({ state: 'ready', connectedSince: new Date().toISOString(), nodeUuid: 'n-1' }));
    await waitUntil('connected', async () => (await content()).includes('connected since'));
    await screen.stop();
    const lines = (await content()).split('\n').filter(Boolean);
    assert.equal(lines[0], 'kept');
    const body = lines.slice(1).map((line) => line.replace(/^\[bm-agent \d\d:\d\d:\d\d\] /, ''));
    assert.deepEqual(body.slice(0, 5), [
      'bm-agent test on node-1: unknown (no DMI data)',
      'BOOTIF not given, IP eth0 10.0.0.5/24',
      'conductor ws://127.0.0.1:9/v1/agent: connecting',
      'conductor ws://127.0.0.1:9/v1/agent: never connected: 1 failed attempt; last error: connect ECONNREFUSED 127.0.0.1:9',
      'WARN something odd',
    ]);
    assert.match(
      body[5] ?? '',
      /^conductor ws:\/\/127\.0\.0\.1:9\/v1\/agent: connected since \d\d:\d\d:\d\d, node n-1$/,
    );
    assert.equal(body.length, 6);
    assert.ok(!(await content()).includes('\x1b'));
    assert.deepEqual(
      screen.stats().map((stats) => [stats.mode, stats.failed]),
      [['plain', null]],
    );
  });

  it('logs a device that cannot be opened once and draws on the others', async () => {
    const { logger, records } = capturingLogger();
    const target = await file('others.log');
    const missing = path.join(dir, 'no-such-tty');
    const unread = fifo('nobody-reads');
    const screen = await open({ devices: [missing, unread, target], model: newModel(), logger });
    await waitUntil('lines on the file', async () => (await readFile(target, 'utf8')).includes('conductor'));
    await screen.stop();
    const skipped = records.filter((record) => record.msg === 'status console cannot be opened; skipped');
    assert.deepEqual(skipped.map((record) => [record.device, String(record.error).split(':')[0]]).sort(), [
      [missing, 'ENOENT'],
      [unread, 'ENXIO'],
    ]);
    assert.deepEqual(
      screen.stats().map((stats) => stats.path),
      [target],
    );
    await assert.rejects(readFile(missing), /ENOENT/, 'a missing device is never created');
  });

  it('drops frames for a reader that stopped reading, and catches up when it reads again', async () => {
    const pipe = fifo('wedged');
    // Held open for reading but not read: the pipe fills and then refuses more.
    const reader = openSync(pipe, constants.O_RDWR | constants.O_NONBLOCK);
    try {
      const model = newModel();
      const screen = await open({ devices: [pipe], model, minIntervalMs: 5, plainWidth: 1000 });
      const filler = 'x'.repeat(800);
      for (let index = 0; index < 3000 && (screen.stats()[0]?.dropped ?? 0) <= 20; index += 1) {
        model.logRecord({ level: 'warn', time: new Date().toISOString(), msg: `warning ${index} ${filler}` });
        if (index % 10 === 0) await sleep(5);
      }
      await waitUntil('dropped frames', () => (screen.stats()[0]?.dropped ?? 0) > 20);
      const [stats] = screen.stats();
      // Whatever was written fits in the pipe: nothing queued up behind it.
      assert.ok((stats?.bytes ?? 0) <= 65536, `${stats?.bytes} bytes written into a 64 KiB pipe`);
      assert.equal(stats?.failed, null, 'a full pipe is not a failure');

      const early = drain(reader);
      assert.match(early, /warning 0 /);
      model.logRecord({ level: 'error', time: new Date().toISOString(), msg: 'the last word' });
      let late = '';
      await waitUntil('the latest state', () => {
        late += drain(reader);
        return late.includes('the last word');
      });
      // What comes after the gap is the latest state, not a backlog.
      assert.doesNotMatch(late, /warning 100 /);
      await screen.stop();
    } finally {
      closeSync(reader);
    }
  });

  it('stops drawing on a pipe whose reader went away, and says so once', async () => {
    const { logger, records } = capturingLogger();
    const pipe = fifo('gone');
    const reader = openSync(pipe, constants.O_RDONLY | constants.O_NONBLOCK);
    const model = newModel();
    const screen = await open({ devices: [pipe], model, logger });
    await waitUntil('the first frame', () => (screen.stats()[0]?.frames ?? 0) > 0);
    closeSync(reader);
    for (let index = 0; index < 5; index += 1) {
      model.logRecord({ level: 'warn', time: new Date().toISOString(), msg: `after ${index}` });
      await sleep(40);
    }
    await waitUntil('the failure', () => screen.stats()[0]?.failed !== null);
    assert.match(screen.stats()[0]?.failed ?? '', /EPIPE/);
    assert.equal(screen.active, false);
    assert.equal(
      records.filter((record) => record.msg === 'status console failed; no longer drawn on').length,
      1,
    );
    await screen.stop();
  });
});
