import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { AgentError, CancelledError } from '../../agent/util/errors.js';
import { findOnPath, runProcess, tailOf } from '../../agent/util/run-process.js';

// Tiny fake programs: real processes with known behaviour, no mocking of child_process.
const SCRIPTS: Record<string, string> = {
  'fake-echo': 'printf "%s\\n" "$@"\nprintf "to stderr\\n" >&2\n',
  'fake-cat': 'while IFS= read -r line; do printf "got %s\\n" "$line"; done\n',
  'fake-env': 'printf "%s\\n" "$BMA_TEST_VALUE"\n',
  'fake-fail': [
    'i=1',
    'while [ $i -le 30 ]; do printf "progress line %s\\n" $i >&2; i=$((i+1)); done',
    'printf "disk is on fire\\n" >&2',
    'exit 3',
  ].join('\n'),
  // Announces SIGTERM and keeps going, so only SIGKILL can end it.
  'fake-stubborn': "trap 'echo got TERM >&2' TERM\necho started\nwhile :; do sleep 0.05; done\n",
  'fake-slow': 'echo started\nexec sleep 30\n',
};

let bin: string;
let savedPath: string | undefined;

before(async () => {
  bin = await mkdtemp(path.join(os.tmpdir(), 'bma-run-process-'));
  for (const [name, body] of Object.entries(SCRIPTS)) {
    const file = path.join(bin, name);
    await writeFile(file, `#!/bin/sh\n${body}`);
    await chmod(file, 0o755);
  }
  await writeFile(path.join(bin, 'not-executable'), '#!/bin/sh\nexit 0\n');
  savedPath = process.env.PATH;
  process.env.PATH = `${bin}${path.delimiter}${savedPath ?? ''}`;
});

after(async () => {
  process.env.PATH = savedPath;
  await rm(bin, { recursive: true, force: true });
});

const rejectsWith = async (promise: Promise<unknown>): Promise<AgentError> => {
  try {
    await promise;
  } catch (error) {
    assert.ok(AgentError.is(error), `expected an AgentError, got ${String(error)}`);
    return error;
  }
  assert.fail('expected the call to reject');
};

describe('findOnPath', () => {
  it('finds an executable in the first matching PATH directory', async () => {
    assert.equal(await findOnPath('fake-echo'), path.join(bin, 'fake-echo'));
    assert.equal(
      await findOnPath('fake-echo', `/nonexistent${path.delimiter}${bin}`),
      path.join(bin, 'fake-echo'),
    );
  });

  it('returns null for missing or non-executable programs', async () => {
    assert.equal(await findOnPath('bma-no-such-tool'), null);
    assert.equal(await findOnPath('not-executable', bin), null);
    assert.equal(await findOnPath('fake-echo', ''), null);
  });

  it('checks a path with a slash directly', async () => {
    assert.equal(await findOnPath(path.join(bin, 'fake-echo'), ''), path.join(bin, 'fake-echo'));
    assert.equal(await findOnPath(path.join(bin, 'missing'), ''), null);
  });
});

describe('tailOf', () => {
  it('keeps the last lines and at most the byte limit', () => {
    const text = Array.from({ length: 50 }, (_, index) => `line ${index + 1}`).join('\n');
    const tail = tailOf(text);
    assert.equal(tail.split('\n').length, 20);
    assert.ok(tail.endsWith('line 50'));
    assert.equal(tailOf('x'.repeat(10_000)).length, 4096);
  });
});

describe('runProcess', () => {
  it('returns the run of a successful program', async () => {
    const result = await runProcess('fake-echo', ['a b', 'c']);
    assert.deepEqual(result.argv, ['fake-echo', 'a b', 'c']);
    assert.equal(result.exitCode, 0);
    assert.equal(result.signal, null);
    assert.equal(result.timedOut, false);
    assert.equal(result.cancelled, false);
    assert.equal(result.stdout, 'a b\nc');
    assert.equal(result.stderr, 'to stderr');
    assert.ok(result.durationMs >= 0);
  });

  it('passes input and environment', async () => {
    assert.equal((await runProcess('fake-cat', [], { input: 'one\ntwo\n' })).stdout, 'got one\ngot two');
    assert.equal((await runProcess('fake-env', [], { env: { BMA_TEST_VALUE: 'v1' } })).stdout, 'v1');
  });

  it('gives a program without input an empty stdin instead of hanging', async () => {
    assert.equal((await runProcess('fake-cat', [], { timeoutMs: 5000 })).stdout, '');
  });

  it('throws TOOL_FAILED with the exit code and the stderr tail on a non-zero exit', async () => {
    const error = await rejectsWith(runProcess('fake-fail', ['--now']));
    assert.equal(error.code, 'TOOL_FAILED');
    assert.match(error.message, /fake-fail --now exited with code 3: disk is on fire/);
    assert.deepEqual(error.details.argv, ['fake-fail', '--now']);
    assert.equal(error.details.exitCode, 3);
    assert.equal(error.details.signal, null);
    assert.equal(error.details.timedOut, false);
    const stderrTail = error.details.stderrTail;
    assert.equal(typeof stderrTail, 'string');
    assert.equal(String(stderrTail).split('\n').length, 20);
    assert.ok(String(stderrTail).endsWith('disk is on fire'));
    assert.ok(!String(stderrTail).includes('progress line 1\n'));
  });

  it('throws TOOL_NOT_FOUND naming the program', async () => {
    const error = await rejectsWith(runProcess('bma-no-such-tool', ['--help']));
    assert.equal(error.code, 'TOOL_NOT_FOUND');
    assert.match(error.message, /bma-no-such-tool/);
    assert.match(error.message, /ramdisk/);
    assert.equal(error.details.program, 'bma-no-such-tool');
  });

  it('looks programs up in the PATH given in env', async () => {
    const error = await rejectsWith(runProcess('fake-echo', [], { env: { PATH: '/nonexistent' } }));
    assert.equal(error.code, 'TOOL_NOT_FOUND');
  });

  it('SIGKILLs a program that ignores SIGTERM after the grace period on timeout', async () => {
    const started = Date.now();
    const error = await rejectsWith(runProcess('fake-stubborn', [], { timeoutMs: 300, killGraceMs: 300 }));
    const elapsed = Date.now() - started;
    assert.equal(error.code, 'TOOL_FAILED');
    assert.equal(error.details.timedOut, true);
    assert.equal(error.details.signal, 'SIGKILL');
    assert.equal(error.details.exitCode, null);
    // SIGTERM came first: the trap ran before SIGKILL ended the script.
    assert.match(String(error.details.stderrTail), /got TERM/);
    assert.match(String(error.details.stdoutTail), /started/);
    assert.match(error.message, /timed out after 300 ms/);
    assert.ok(elapsed >= 550, `killed after ${elapsed} ms, before the grace period ran out`);
    assert.ok(elapsed < 5000, `took ${elapsed} ms`);
  });

  it('rethrows a CancelledError reason when the signal aborts', async () => {
    const controller = new AbortController();
    const running = runProcess('fake-slow', [], { signal: controller.signal, killGraceMs: 1000 });
    setTimeout(() => controller.abort(new CancelledError('stop now')), 100);
    const started = Date.now();
    const error = await rejectsWith(running);
    assert.ok(error instanceof CancelledError);
    assert.equal(error.code, 'CANCELLED');
    assert.equal(error.message, 'stop now');
    assert.ok(Date.now() - started < 1000, 'SIGTERM should have ended it well before the grace period');
  });

  it('throws TOOL_FAILED with cancelled: true for any other abort reason', async () => {
    const controller = new AbortController();
    const running = runProcess('fake-slow', [], { signal: controller.signal });
    setTimeout(() => controller.abort(), 100);
    const error = await rejectsWith(running);
    assert.equal(error.code, 'TOOL_FAILED');
    assert.equal(error.details.cancelled, true);
    assert.equal(error.details.signal, 'SIGTERM');
    assert.match(error.message, /was cancelled/);
  });

  it('does not start a program when the signal is already aborted', async () => {
    const error = await rejectsWith(
      runProcess('fake-echo', [], { signal: AbortSignal.abort(new CancelledError('too late')) }),
    );
    assert.equal(error.code, 'CANCELLED');
  });

  it('rejects invalid options with a TypeError', async () => {
    await assert.rejects(runProcess('fake-echo', [], { timeoutMs: -1 }), TypeError);
    await assert.rejects(runProcess('fake-echo', [], { killGraceMs: Number.NaN }), TypeError);
  });
});
