/**
 * The callback URL: its format, which route sources count, and the retries. The `ip` runs are
 * faked here because the routes they describe (link-local only, none at all, a resolver that
 * fails) cannot be set up without touching the machine's network; the real `ip` is exercised in
 * the integration suite.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  formatCallbackUrl,
  isLinkLocal,
  parseRouteSource,
  resolveCallbackUrl,
} from '../../agent/ipa/advertise.js';
import { AgentError } from '../../agent/util/errors.js';
import type { ProcessResult, RunProcess } from '../../agent/util/run-process.js';

const route = (prefsrc: string | null, extra: Record<string, unknown> = {}): string =>
  JSON.stringify([{ dst: '192.0.2.1', dev: 'eth0', ...(prefsrc ? { prefsrc } : {}), flags: [], ...extra }]);

const ok = (argv: string[], stdout: string): ProcessResult => ({
  argv,
  exitCode: 0,
  signal: null,
  timedOut: false,
  cancelled: false,
  durationMs: 1,
  stdout,
  stderr: '',
});

/** Answers each `ip route get` from a script, recording the destinations asked for. */
const scriptedIp = (answers: Array<string | Error>): { run: RunProcess; asked: string[] } => {
  const asked: string[] = [];
  const run: RunProcess = async (file, args) => {
    assert.equal(file, 'ip');
    assert.deepEqual(args.slice(0, 3), ['-j', 'route', 'get']);
    asked.push(args[3] ?? '');
    const next = answers.shift();
    if (next === undefined) throw new Error('more ip runs than scripted');
    if (next instanceof Error) throw next;
    return ok([file, ...args], next);
  };
  return { run, asked };
};

describe('callback URL format', () => {
  it('puts IPv6 in brackets, once', () => {
    assert.equal(formatCallbackUrl('http', '192.0.2.5', 9999), 'http://192.0.2.5:9999');
    assert.equal(formatCallbackUrl('https', 'fd00::5', 443), 'https://[fd00::5]:443');
    assert.equal(formatCallbackUrl('http', '[fd00::5]', 9999), 'http://[fd00::5]:9999');
    assert.equal(formatCallbackUrl('http', 'agent.example', 9999), 'http://agent.example:9999');
  });

  it('knows link-local addresses of both families', () => {
    for (const address of ['169.254.10.1', 'fe80::1', 'FE80::abcd', 'febf::1'])
      assert.equal(isLinkLocal(address), true, address);
    for (const address of ['192.0.2.1', 'fd00::1', '::1', 'fec0::1', 'example'])
      assert.equal(isLinkLocal(address), false, address);
  });
});

describe('route source', () => {
  it('is the prefsrc of the first route', () => {
    assert.equal(parseRouteSource(route('192.0.2.2')), '192.0.2.2');
    assert.equal(parseRouteSource(route('fd00::2')), 'fd00::2');
  });

  it('is null when link-local, missing, not an IP or not understood', () => {
    for (const stdout of [
      route('169.254.3.3'),
      route('fe80::2'),
      route(null),
      route('eth0'),
      '[]',
      '{}',
      'RTNETLINK',
      '',
    ])
      assert.equal(parseRouteSource(stdout), null, stdout);
  });
});

describe('resolveCallbackUrl', () => {
  it('uses ipa-advertise-host as given, without asking for a route', async () => {
    const { run, asked } = scriptedIp([]);
    const url = await resolveCallbackUrl({
      apiUrl: 'http://192.0.2.1:6385',
      host: 'fd00::7',
      port: 9999,
      runProcess: run,
    });
    assert.equal(url, 'http://[fd00::7]:9999');
    assert.deepEqual(asked, []);
  });

  it('takes the source address of the route to the Ironic host', async () => {
    const { run, asked } = scriptedIp([route('192.0.2.2')]);
    const url = await resolveCallbackUrl({
      apiUrl: 'https://192.0.2.1:6385/baremetal',
      protocol: 'https',
      port: 8443,
      runProcess: run,
    });
    assert.equal(url, 'https://192.0.2.2:8443');
    assert.deepEqual(asked, ['192.0.2.1']);
  });

  it('strips the brackets of an IPv6 Ironic host before asking', async () => {
    const { run, asked } = scriptedIp([route('fd00::2')]);
    assert.equal(
      await resolveCallbackUrl({ apiUrl: 'http://[fd00::1]:6385', runProcess: run }),
      'http://[fd00::2]:9999',
    );
    assert.deepEqual(asked, ['fd00::1']);
  });

  it('resolves a host name and tries its addresses in order, skipping a link-local source', async () => {
    const { run, asked } = scriptedIp([route('fe80::9'), route('192.0.2.9')]);
    const url = await resolveCallbackUrl({
      apiUrl: 'http://ironic.example:6385',
      runProcess: run,
      resolve: async (host) => {
        assert.equal(host, 'ironic.example');
        return ['fd00::1', '192.0.2.1'];
      },
    });
    assert.equal(url, 'http://192.0.2.9:9999');
    assert.deepEqual(asked, ['fd00::1', '192.0.2.1']);
  });

  it('retries when there is no route yet, waiting between rounds', async () => {
    const unreachable = new AgentError(
      'TOOL_FAILED',
      'ip -j route get 192.0.2.1 exited with code 2: RTNETLINK answers: Network is unreachable',
    );
    const { run, asked } = scriptedIp([unreachable, route('169.254.0.5'), route('192.0.2.2')]);
    const started = Date.now();
    const url = await resolveCallbackUrl({
      apiUrl: 'http://192.0.2.1:6385',
      runProcess: run,
      attempts: 3,
      retryDelayMs: 40,
    });
    assert.equal(url, 'http://192.0.2.2:9999');
    assert.equal(asked.length, 3);
    assert.ok(Date.now() - started >= 75, 'two waits between three rounds');
  });

  it('gives up after the attempts with ADVERTISE_ADDRESS_NOT_FOUND naming what went wrong', async () => {
    const { run, asked } = scriptedIp([route('169.254.0.5'), route('169.254.0.5')]);
    await assert.rejects(
      resolveCallbackUrl({ apiUrl: 'http://192.0.2.1:6385', runProcess: run, attempts: 2, retryDelayMs: 1 }),
      (error: unknown) =>
        AgentError.is(error) &&
        error.code === 'ADVERTISE_ADDRESS_NOT_FOUND' &&
        /ipa-advertise-host/.test(error.message) &&
        Array.isArray(error.details.problems) &&
        error.details.problems.length === 2,
    );
    assert.equal(asked.length, 2);
  });

  it('counts a resolver failure as a failed round', async () => {
    const { run, asked } = scriptedIp([]);
    await assert.rejects(
      resolveCallbackUrl({
        apiUrl: 'http://ironic.invalid:6385',
        runProcess: run,
        attempts: 2,
        retryDelayMs: 1,
        resolve: async () => {
          throw new Error('getaddrinfo ENOTFOUND ironic.invalid');
        },
      }),
      (error: unknown) =>
        AgentError.is(error) &&
        error.code === 'ADVERTISE_ADDRESS_NOT_FOUND' &&
        /ENOTFOUND/.test(JSON.stringify(error.details)),
    );
    assert.deepEqual(asked, []);
  });

  it('stops at once when ip is not installed', async () => {
    const { run } = scriptedIp([new AgentError('TOOL_NOT_FOUND', 'ip is not on PATH')]);
    await assert.rejects(
      resolveCallbackUrl({
        apiUrl: 'http://192.0.2.1:6385',
        runProcess: run,
        attempts: 5,
        retryDelayMs: 10_000,
      }),
      (error: unknown) => AgentError.is(error) && error.code === 'TOOL_NOT_FOUND',
    );
  });

  it('refuses a port out of range', async () => {
    await assert.rejects(
      resolveCallbackUrl({ apiUrl: 'http://192.0.2.1:6385', host: '192.0.2.2', port: 70000 }),
      (error: unknown) => AgentError.is(error) && error.code === 'INVALID_CONFIG',
    );
  });

  it('is cancelled by its signal while waiting between rounds', async () => {
    const { run } = scriptedIp([route(null), route(null)]);
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 30);
    await assert.rejects(
      resolveCallbackUrl({
        apiUrl: 'http://192.0.2.1:6385',
        runProcess: run,
        attempts: 2,
        retryDelayMs: 10_000,
        signal: controller.signal,
      }),
      (error: unknown) => AgentError.is(error) && error.code === 'CANCELLED',
    );
  });
});
