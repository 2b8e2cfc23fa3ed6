import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { describeError, failureStatus, ipaResult, reviveError, toIpaError } from '../../agent/ipa/results.js';
import { AgentError, serializeError } from '../../agent/util/errors.js';

describe('IPA command errors', () => {
  it("carry the agent's code and message in details, which Ironic shows", () => {
    const error = serializeError(
      new AgentError('CHECKSUM_MISMATCH', "the image's sha256 is ab, expected cd", {
        details: { algorithm: 'sha256' },
      }),
    );
    assert.deepEqual(toIpaError(error, 'DeploymentError'), {
      type: 'ImageChecksumError',
      code: 500,
      message: 'Error verifying image checksum',
      details: "CHECKSUM_MISMATCH: the image's sha256 is ab, expected cd",
    });
  });

  it('take an IPA class by code where one fits, else the command’s own', () => {
    const typeOf = (code: string, fallback: 'CleaningError' | 'DeploymentError' | 'CommandExecutionError') =>
      toIpaError({ code, message: 'm', details: {} }, fallback).type;
    assert.equal(typeOf('DOWNLOAD_FAILED', 'DeploymentError'), 'ImageDownloadError');
    assert.equal(typeOf('WRITE_FAILED', 'DeploymentError'), 'ImageWriteError');
    assert.equal(typeOf('WIPE_FAILED', 'CleaningError'), 'BlockDeviceEraseError');
    assert.equal(typeOf('INVALID_PARAMS', 'CleaningError'), 'InvalidCommandParamsError');
    assert.equal(typeOf('NO_MATCHING_DISK', 'DeploymentError'), 'DeviceNotFound');
    assert.equal(
      toIpaError({ code: 'NO_MATCHING_DISK', message: 'm', details: {} }, 'DeploymentError').code,
      404,
    );
    assert.equal(typeOf('VERSION_MISMATCH', 'CleaningError'), 'VersionMismatch');
    assert.equal(typeOf('BFB_INSTALL_FAILED', 'CleaningError'), 'CleaningError');
    assert.equal(typeOf('TOOL_FAILED', 'DeploymentError'), 'DeploymentError');
    assert.equal(typeOf('INTERNAL', 'CommandExecutionError'), 'CommandExecutionError');
  });

  it('append the causes and stay bounded', () => {
    const withCauses = serializeError(
      new AgentError('DOWNLOAD_FAILED', 'gave up', {
        cause: Object.assign(new Error('refused'), { code: 'ECONNREFUSED' }),
      }),
    );
    assert.equal(describeError(withCauses), 'DOWNLOAD_FAILED: gave up (caused by: ECONNREFUSED: refused)');
    const long = describeError({ code: 'INTERNAL', message: 'x'.repeat(10_000), details: {} });
    assert.equal(long.length, 4000);
    assert.ok(long.endsWith('…'));
  });

  it('make a version mismatch its own status', () => {
    assert.equal(
      failureStatus({ code: 'VERSION_MISMATCH', message: '', details: {} }),
      'CLEAN_VERSION_MISMATCH',
    );
    assert.equal(failureStatus({ code: 'WIPE_FAILED', message: '', details: {} }), 'FAILED');
  });

  it("revive a registry command's error with its code, or INTERNAL for a code the agent does not know", () => {
    const revived = reviveError({
      code: 'WIPE_FAILED',
      message: 'wipefs failed',
      details: { device: '/dev/sda' },
    });
    assert.ok(AgentError.is(revived));
    assert.equal(revived.code, 'WIPE_FAILED');
    assert.deepEqual(revived.details, { device: '/dev/sda' });
    const unknown = reviveError({ code: 'SOMETHING_NEW', message: 'm', details: {} });
    assert.equal(unknown.code, 'INTERNAL');
    assert.equal(unknown.details.code, 'SOMETHING_NEW');
  });
});

describe('IPA command results', () => {
  it("have IPA's keys, with the short command name", () => {
    assert.deepEqual(
      ipaResult('id-1', 'execute_clean_step', { status: 'RUNNING', result: null, error: null }),
      {
        id: 'id-1',
        command_name: 'execute_clean_step',
        command_status: 'RUNNING',
        command_error: null,
        command_result: null,
      },
    );
  });
});
