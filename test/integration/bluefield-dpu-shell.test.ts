import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { access, chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino, type Logger } from 'pino';
import {
  createDpuShell,
  quoteShellWord,
  removeKnownHost,
  type DpuShell,
  type DpuShellOptions,
} from '../../agent/hardware/bluefield/dpu-shell.js';
import { ensureAgentKey, type AgentKey } from '../../agent/hardware/bluefield/ssh-key.js';
import { AgentError, CancelledError } from '../../agent/util/errors.js';
import {
  dpuHostsSkipReason,
  execQuiet,
  startDpuHosts,
  type DpuHostsLab,
  type SimDpu,
} from '../support/bluefield-sim/dpu-host.js';

/*
 * The DPU shell against a real sshd in a DPU namespace, dialled from the lab's host namespace
 * through the `ssh` wrapper on the agent's PATH.
 */

const skip = (await dpuHostsSkipReason()) ?? false;
if (skip) process.stderr.write(`# skipping DPU shell tests: ${skip}\n`);

const expectCode =
  (code: string, check?: (error: AgentError) => void) =>
  (error: unknown): boolean => {
    assert.ok(AgentError.is(error), String(error));
    assert.equal(error.code, code, `${error.message} ${JSON.stringify(error.details)}`);
    check?.(error);
    return true;
  };

interface Captured {
  logger: Logger;
  records: Array<{ level: number; msg: string; [key: string]: unknown }>;
}

const captureLog = (): Captured => {
  const records: Captured['records'] = [];
  const logger = pino(
    { level: 'debug' },
    { write: (line: string) => void records.push(JSON.parse(line) as Captured['records'][number]) },
  );
  return { logger, records };
};

describe('shell words and known_hosts', () => {
  it('quotes words so a POSIX shell reads them back unchanged', () => {
    assert.equal(quoteShellWord('mlxconfig'), 'mlxconfig');
    assert.equal(quoteShellWord('/dev/mst/mt41686_pciconf0'), '/dev/mst/mt41686_pciconf0');
    assert.equal(quoteShellWord(''), "''");
    assert.equal(quoteShellWord("a'b"), `'a'\\''b'`);
    assert.equal(quoteShellWord('A=b'), `'A=b'`);
    assert.equal(quoteShellWord('$(id)'), `'$(id)'`);
    assert.throws(
      () => quoteShellWord('a\0b'),
      (error: unknown) => AgentError.is(error) && error.code === 'INVALID_PARAMS',
    );
  });

  it('forgets a host, plain or hashed, and keeps everything else', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'bma-known-hosts-'));
    try {
      const file = path.join(dir, 'known_hosts');
      const salt = Buffer.from('0123456789abcdefghij');
      const hashed = `|1|${salt.toString('base64')}|${createHmac('sha1', salt).update('192.168.100.2').digest('base64')}`;
      const lines = [
        '# comment',
        '192.168.100.2 ssh-ed25519 AAAAold',
        `${hashed} ssh-ed25519 AAAAhashed`,
        '192.168.100.6 ssh-ed25519 AAAAother',
        '[192.168.100.2]:2222 ssh-ed25519 AAAAport',
        'host.example,192.168.100.2 ssh-rsa AAAAboth',
        '@cert-authority 192.168.100.2 ssh-ed25519 AAAAca',
        '',
      ];
      await writeFile(file, lines.join('\n'));
      assert.equal(await removeKnownHost(file, '192.168.100.2'), 3);
      assert.deepEqual((await readFile(file, 'utf8')).split('\n'), [
        '# comment',
        '192.168.100.6 ssh-ed25519 AAAAother',
        '[192.168.100.2]:2222 ssh-ed25519 AAAAport',
        '@cert-authority 192.168.100.2 ssh-ed25519 AAAAca',
        '',
      ]);
      assert.equal(await removeKnownHost(file, '192.168.100.2', 2222), 1);
      assert.equal(await removeKnownHost(path.join(dir, 'absent'), '192.168.100.2'), 0);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('DPU shell over SSH', { skip }, () => {
  let dir: string;
  let lab: DpuHostsLab;
  let dpu: SimDpu;
  let key: AgentKey;

  const shellFor = (overrides: Partial<DpuShellOptions> = {}): DpuShell =>
    createDpuShell({
      host: dpu.address,
      keyPath: key.privateKeyPath,
      knownHostsPath: key.knownHostsPath,
      toolPath: lab.toolBinDir,
      // Generous: on a loaded machine sshd's start and the key exchange can take seconds.
      connectTimeoutS: 15,
      ...overrides,
    });

  /** Command lines of the live processes in the DPU namespace (zombies have none). */
  const liveCommands = async (): Promise<string[]> => {
    const pids = (await execQuiet('ip', ['netns', 'pids', dpu.ns])).stdout.split('\n').filter(Boolean);
    const commands: string[] = [];
    for (const pid of pids) {
      const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
      if (cmdline !== '') commands.push(cmdline.replaceAll('\0', ' ').trim());
    }
    return commands;
  };

  const waitGone = async (pattern: RegExp, withinMs: number): Promise<void> => {
    const deadline = Date.now() + withinMs;
    while (Date.now() < deadline) {
      if (!(await liveCommands()).some((command) => pattern.test(command))) return;
      await sleep(100);
    }
    assert.fail(
      `still running on the DPU: ${(await liveCommands()).filter((c) => pattern.test(c)).join('; ')}`,
    );
  };

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'bma-bf-shell-'));
    lab = await startDpuHosts({ dir, count: 1, label: 'sh', configureHostSide: true });
    const [first] = lab.dpus;
    assert.ok(first);
    dpu = first;
    key = await ensureAgentKey({ stateDir: path.join(dir, 'state'), toolPath: lab.toolBinDir });
    await dpu.authorizeKey(key.publicKey);
  });

  after(async () => {
    await lab?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('makes the agent key once and reuses it', async () => {
    assert.equal(key.created, true);
    assert.match(key.publicKey, /^ssh-ed25519 AAAA\S+ bm-agent@/);
    assert.equal((await stat(key.privateKeyPath)).mode & 0o777, 0o600);
    const again = await ensureAgentKey({ stateDir: path.join(dir, 'state'), toolPath: lab.toolBinDir });
    assert.deepEqual(again, { ...key, created: false });
    // A lost public half is derived again from the private key.
    await rm(key.publicKeyPath);
    const derived = await ensureAgentKey({ stateDir: path.join(dir, 'state'), toolPath: lab.toolBinDir });
    assert.equal(derived.publicKey, key.publicKey);
    assert.equal(derived.created, false);
    await assert.rejects(
      ensureAgentKey({ stateDir: path.join(dir, 'state2'), toolPath: path.join(dir, 'empty') }),
      expectCode('TOOL_NOT_FOUND'),
    );
  });

  it('streams the lines of a script as they come, in the DPU session environment', async () => {
    await writeFile(dpu.releaseFile, 'bf-bundle-2.9.2-31_25.02_ubuntu-22.04_prod\n');
    const lines: Array<{ at: number; stream: string; line: string }> = [];
    const started = Date.now();
    const result = await shellFor().runScript(
      [
        'echo first',
        'echo "to stderr" >&2',
        'sleep 0.8',
        'echo "PATH=$PATH"',
        'echo "SIDE=$BMA_SIM_SIDE"',
        'cat /etc/mlnx-release',
        "printf 'no newline at the end'",
      ].join('\n'),
      { onLine: (stream, line) => lines.push({ at: Date.now() - started, stream, line }) },
    );
    const finished = Date.now() - started;
    assert.deepEqual(
      lines.map(({ stream, line }) => [stream, line]),
      [
        ['stdout', 'first'],
        ['stderr', 'to stderr'],
        ['stdout', `PATH=${dpu.binDir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`],
        ['stdout', 'SIDE=arm'],
        ['stdout', 'bf-bundle-2.9.2-31_25.02_ubuntu-22.04_prod'],
        ['stdout', 'no newline at the end'],
      ],
    );
    const first = lines[0];
    assert.ok(first && finished - first.at >= 600, `first line at ${first?.at} ms, end at ${finished} ms`);
    assert.equal(result.exit_code, 0);
    assert.match(result.stdout_tail, /^first\n[\s\S]*no newline at the end$/);
    assert.equal(result.stderr_tail, 'to stderr');
    assert.ok(result.seconds >= 0.8 && result.seconds < 10, String(result.seconds));
  });

  it('runs programs from the DPU tool directory and passes hostile arguments through unchanged', async () => {
    const canary = path.join(dir, 'canary');
    const hostile = [
      "a'b",
      '"double"',
      `$(touch ${canary})`,
      `\`touch ${canary}\``,
      `; touch ${canary}`,
      `&& touch ${canary} ||`,
      '| > < & ;',
      '*',
      '~',
      '$HOME ${PATH}',
      '\\',
      'line one\nline two',
      '',
      '  spaces  ',
      '--help',
      '-n',
      'ünïcødé ✓',
      'tab\there',
      "'",
    ];
    await writeFile(
      path.join(dpu.binDir, 'echo-args'),
      '#!/bin/sh\nfor a in "$@"; do printf "[%s]\\n" "$a"; done\n',
    );
    await chmod(path.join(dpu.binDir, 'echo-args'), 0o755);
    const shell = shellFor();
    assert.equal(shell.where, 'dpu');
    const result = await shell.run('echo-args', hostile);
    assert.equal(result.stdout, hostile.map((arg) => `[${arg}]\n`).join(''));
    assert.deepEqual(result.argv, ['echo-args', ...hostile]);
    assert.equal(result.exitCode, 0);
    await assert.rejects(access(canary));

    // run() keeps the whole output, not a tail.
    const long = await shell.run('seq', ['1', '50000']);
    assert.equal(long.stdout.split('\n').length, 50001);

    await assert.rejects(
      shell.run('sh', ['-c', 'echo partial; echo broken >&2; exit 3']),
      expectCode('TOOL_FAILED', (error) => {
        assert.equal(error.details.exitCode, 3);
        assert.equal(error.details.where, 'dpu');
        assert.equal(error.details.stdoutTail, 'partial');
        assert.equal(error.details.stderrTail, 'broken');
      }),
    );
    await assert.rejects(shell.run('no such;tool', []), expectCode('TOOL_NOT_FOUND'));
    await assert.rejects(shell.run('echo', ['a\0b']), expectCode('INVALID_PARAMS'));
  });

  it('fails with DPU_SCRIPT_FAILED on a non-zero exit, 255 included', async () => {
    const shell = shellFor();
    await assert.rejects(
      shell.runScript('echo some output\necho "it broke" >&2\nexit 7'),
      expectCode('DPU_SCRIPT_FAILED', (error) => {
        assert.equal(error.details.exit_code, 7);
        assert.equal(error.details.stdout_tail, 'some output');
        assert.equal(error.details.stderr_tail, 'it broke');
        assert.match(error.message, /exited with code 7: it broke/);
      }),
    );
    // ssh's own failures are also 255; the script's are told apart.
    await assert.rejects(
      shell.runScript('exit 255'),
      expectCode('DPU_SCRIPT_FAILED', (error) => assert.equal(error.details.exit_code, 255)),
    );
    // Killed by a signal on the DPU.
    await assert.rejects(
      shell.runScript('kill -KILL $$'),
      expectCode('DPU_SCRIPT_FAILED', (error) => assert.equal(error.details.exit_code, 137)),
    );
  });

  it('stops a script at its timeout, and the DPU side goes with the connection', async () => {
    const started = Date.now();
    const lines: string[] = [];
    await assert.rejects(
      shellFor().runScript('echo started\nsleep 31\necho never', {
        timeoutMs: 1500,
        onLine: (_stream, line) => lines.push(line),
      }),
      expectCode('DPU_SCRIPT_TIMEOUT', (error) => {
        assert.equal(error.details.timeout_s, 1.5);
        assert.equal(error.details.stdout_tail, 'started');
      }),
    );
    assert.ok(Date.now() - started < 6000, `took ${Date.now() - started} ms`);
    assert.deepEqual(lines, ['started']);
    await waitGone(/^sleep 31$/, 5000);
  });

  it('stops a script when cancelled', async () => {
    const controller = new AbortController();
    const running = shellFor().runScript('sleep 32', { signal: controller.signal });
    await sleep(700);
    controller.abort(new CancelledError());
    await assert.rejects(running, expectCode('CANCELLED'));
    await waitGone(/^sleep 32$/, 5000);
  });

  it('reports DPU_UNREACHABLE for a stopped sshd, a key the DPU does not know, and silence', async () => {
    await dpu.stopSshd();
    try {
      await assert.rejects(
        shellFor().runScript('true'),
        expectCode('DPU_UNREACHABLE', (error) => {
          assert.match(String(error.details.ssh_stderr_tail), /Connection refused/);
          assert.equal(error.details.exit_code, 255);
        }),
      );
      await assert.rejects(shellFor().run('true', []), expectCode('DPU_UNREACHABLE'));
    } finally {
      await dpu.startSshd();
    }

    const stranger = await ensureAgentKey({ stateDir: path.join(dir, 'stranger'), toolPath: lab.toolBinDir });
    await assert.rejects(
      shellFor({ keyPath: stranger.privateKeyPath }).runScript('true'),
      expectCode('DPU_UNREACHABLE', (error) => assert.match(error.message, /Permission denied/)),
    );

    // Nothing answers there: the host routes it to the outside, which drops it.
    const started = Date.now();
    await assert.rejects(
      shellFor({ host: '192.168.100.250', connectTimeoutS: 1 }).runScript('true'),
      expectCode('DPU_UNREACHABLE', (error) => assert.match(error.message, /timed out/i)),
    );
    assert.ok(Date.now() - started < 8000);

    await assert.rejects(
      shellFor({ toolPath: path.join(dir, 'empty') }).runScript('true'),
      expectCode('TOOL_NOT_FOUND'),
    );
  });

  it('accepts the new host key of a reinstalled DPU, once, and says so', async () => {
    const shell = shellFor();
    await shell.runScript('true');
    const before = await readFile(key.knownHostsPath, 'utf8');
    assert.match(before, new RegExp(`^${dpu.address.replaceAll('.', '\\.')} ssh-ed25519 `, 'm'));

    await dpu.regenerateHostKey();
    const log = captureLog();
    const result = await shellFor({ logger: log.logger }).runScript('echo after reinstall');
    assert.equal(result.stdout_tail, 'after reinstall');
    const warning = log.records.find((record) => /host key changed/.test(record.msg));
    assert.ok(warning, JSON.stringify(log.records));
    assert.equal(warning.level, 40);
    assert.equal(warning.removed, 1);
    assert.match(String(warning.fingerprint), /^SHA256:/);

    const afterText = await readFile(key.knownHostsPath, 'utf8');
    const entries = afterText.split('\n').filter((line) => line.startsWith(`${dpu.address} `));
    assert.equal(entries.length, 1);
    assert.notEqual(afterText, before);
    // The next run connects without any fuss.
    const quiet = captureLog();
    await shellFor({ logger: quiet.logger }).runScript('true');
    assert.deepEqual(quiet.records, []);
  });
});
