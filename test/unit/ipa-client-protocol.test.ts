/**
 * The pure parts of the Ironic client: microversion arithmetic, Ironic's error bodies, the lookup
 * backoff and which heartbeat refusals mean "look up again".
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isTokenRejection } from '../../agent/ipa/heartbeater.js';
import {
  IronicApiError,
  IronicClient,
  compareApiVersions,
  formatApiVersion,
  minApiVersion,
  parseApiVersion,
  parseIronicFault,
} from '../../agent/ipa/ironic-client.js';
import { lookupBackoffMs } from '../../agent/ipa/lookup.js';
import { AgentError } from '../../agent/util/errors.js';
import { ironicErrorBody } from '../support/fake-ironic.js';

describe('microversions', () => {
  it('parse major.minor and refuse anything else', () => {
    assert.deepEqual(parseApiVersion('1.82'), [1, 82]);
    assert.deepEqual(parseApiVersion(' 1.9 '), [1, 9]);
    for (const bad of ['1', '1.', 'v1.2', '1.2.3', '', null, 1.68, 'latest'])
      assert.equal(parseApiVersion(bad), null, String(bad));
  });

  it('compare numerically, not as text', () => {
    assert.ok(compareApiVersions([1, 9], [1, 10]) < 0);
    assert.ok(compareApiVersions([2, 0], [1, 99]) > 0);
    assert.deepEqual(minApiVersion([1, 82], [1, 62]), [1, 62]);
    assert.deepEqual(minApiVersion([1, 31], [1, 62]), [1, 31]);
    assert.equal(formatApiVersion([1, 62]), '1.62');
  });
});

describe("Ironic's error bodies", () => {
  it('read the faultstring out of the JSON string inside error_message', () => {
    const fault = parseIronicFault(ironicErrorBody('Invalid or missing agent token received.'));
    assert.deepEqual(fault, {
      faultcode: 'Client',
      faultstring: 'Invalid or missing agent token received.',
      text: 'Invalid or missing agent token received.',
    });
  });

  it('accept error_message as an object, a bare fault, or a title', () => {
    assert.equal(
      parseIronicFault(JSON.stringify({ error_message: { faultstring: 'locked' } })).faultstring,
      'locked',
    );
    assert.equal(parseIronicFault(JSON.stringify({ faultstring: 'bare' })).text, 'bare');
    assert.deepEqual(parseIronicFault(JSON.stringify({ title: 'Not Found' })), {
      faultcode: null,
      faultstring: null,
      text: 'Not Found',
    });
  });

  it('fall back to the raw text, cut short, when the body is not a fault', () => {
    assert.equal(parseIronicFault('<html>502 Bad Gateway</html>').text, '<html>502 Bad Gateway</html>');
    assert.equal(
      parseIronicFault(JSON.stringify({ error_message: 'not json' })).text,
      '{"error_message":"not json"}',
    );
    assert.equal(parseIronicFault('x'.repeat(5000)).text.length, 1000);
    assert.equal(parseIronicFault('').text, '');
  });

  it('become an IronicApiError with the status and the faultstring', () => {
    const error = new IronicApiError(
      'GET',
      '/v1/lookup',
      404,
      parseIronicFault(ironicErrorBody('Resource could not be found.')),
    );
    assert.ok(AgentError.is(error));
    assert.equal(error.code, 'IRONIC_API_ERROR');
    assert.equal(error.status, 404);
    assert.equal(error.faultstring, 'Resource could not be found.');
    assert.match(error.message, /404 to GET \/v1\/lookup: Resource could not be found\./);
    assert.equal(error.details.status, 404);
  });
});

describe('token rejection', () => {
  const rejection = (status: number, faultstring: string) =>
    new IronicApiError('POST', '/v1/heartbeat/x', status, parseIronicFault(ironicErrorBody(faultstring)));

  it('is a 400 about the agent token, missing or wrong', () => {
    assert.equal(isTokenRejection(rejection(400, 'Invalid or missing agent token received.')), true);
    assert.equal(isTokenRejection(rejection(400, 'Agent token is required for heartbeat processing.')), true);
  });

  it('is not any other refusal', () => {
    assert.equal(
      isTokenRejection(rejection(400, 'Detected change in ramdisk provided "callback_url"')),
      false,
    );
    assert.equal(isTokenRejection(rejection(409, 'Invalid or missing agent token received.')), false);
    assert.equal(isTokenRejection(new AgentError('IRONIC_UNREACHABLE', 'agent token')), false);
  });
});

describe('lookup backoff', () => {
  it('grows as 2^(n-1) s from the minimum and stays under the maximum', () => {
    assert.equal(
      lookupBackoffMs(1, 1000, 60_000, () => 0.999),
      1000,
    );
    assert.equal(
      lookupBackoffMs(2, 1000, 60_000, () => 1),
      2000,
    );
    assert.equal(
      lookupBackoffMs(4, 1000, 60_000, () => 1),
      8000,
    );
    assert.equal(
      lookupBackoffMs(4, 1000, 60_000, () => 0),
      1000,
    );
    assert.equal(
      lookupBackoffMs(20, 1000, 60_000, () => 1),
      60_000,
    );
    assert.equal(
      lookupBackoffMs(2000, 1000, 60_000, () => 1),
      60_000,
    );
  });

  it('never goes below the minimum, even when it is above 2^(n-1) s', () => {
    for (const r of [0, 0.5, 1])
      assert.equal(
        lookupBackoffMs(1, 5000, 60_000, () => r),
        5000,
      );
    assert.equal(
      lookupBackoffMs(3, 20, 50, () => 1),
      50,
    );
  });
});

describe('client settings', () => {
  it('refuse an API URL that is not http(s)', () => {
    for (const bad of ['mdns', 'ftp://ironic', 'http://ironic:6385/?x=1', 'not a url'])
      assert.throws(
        () => new IronicClient({ apiUrl: bad }),
        (error: unknown) => AgentError.is(error) && error.code === 'INVALID_CONFIG',
        bad,
      );
  });

  it('report an unreadable CA bundle as INVALID_CONFIG', async () => {
    await assert.rejects(
      IronicClient.create({ apiUrl: 'https://127.0.0.1:6385', caPath: '/nonexistent/ca.pem' }),
      (error: unknown) =>
        AgentError.is(error) && error.code === 'INVALID_CONFIG' && /ca\.pem/.test(error.message),
    );
  });

  it('use a fixed version without asking Ironic, and ignore a malformed one', async () => {
    const fixed = new IronicClient({ apiUrl: 'http://127.0.0.1:9', apiVersion: '1.70' });
    assert.deepEqual(await fixed.maxApiVersion(), [1, 70]);
    assert.deepEqual(await fixed.lookupApiVersion(), [1, 62]);
    assert.deepEqual(await fixed.heartbeatApiVersion(), [1, 68]);
    const low = new IronicClient({ apiUrl: 'http://127.0.0.1:9', apiVersion: '1.40' });
    assert.deepEqual(await low.lookupApiVersion(), [1, 40]);
    // Port 9 (discard) refuses: the malformed setting falls back to discovery, which falls back to 1.31.
    const malformed = new IronicClient({
      apiUrl: 'http://127.0.0.1:9',
      apiVersion: 'latest',
      timeoutMs: 2000,
    });
    assert.deepEqual(await malformed.maxApiVersion(), [1, 31]);
    assert.equal(malformed.knownApiVersion(), null);
  });
});
