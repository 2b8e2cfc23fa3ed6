/** Assertions on the agent's typed errors, shared by the test suites. */
import assert from 'node:assert/strict';
import { AgentError } from '../../agent/util/errors.js';

export const assertCode = (error: unknown, code: string, message?: RegExp): AgentError => {
  assert.ok(AgentError.is(error), `expected an AgentError ${code}, got ${String(error)}`);
  assert.equal(error.code, code, error.message);
  if (message) assert.match(error.message, message);
  return error;
};

/** Awaits `promise` and asserts it rejected with an AgentError of `code`. */
export const rejectsWithCode = async (
  promise: Promise<unknown>,
  code: string,
  message?: RegExp,
): Promise<AgentError> => {
  try {
    await promise;
  } catch (error) {
    return assertCode(error, code, message);
  }
  assert.fail(`expected ${code}, but it succeeded`);
};
