import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { buildRegistry } from '../../agent/commands/catalog.js';
import { buildConfig } from '../../agent/config/load.js';
import { OPTIONS } from '../../agent/config/options.js';
import { RpcErrorCode } from '../../agent/protocol/schema.js';
import { ERROR_CODES } from '../../agent/util/errors.js';
import { silentLogger } from '../../agent/util/logger.js';
import { AGENT_VERSION } from '../../agent/version.js';

const repoFile = (name: string): Promise<string> =>
  readFile(new URL(`../../../${name}`, import.meta.url), 'utf8');

/** The README tables are the operator's reference: every setting, command and code must be in them. */
describe('README tables', () => {
  it('list every kernel argument, environment variable and flag', async () => {
    const readme = await repoFile('README.md');
    for (const spec of OPTIONS) {
      for (const name of spec.kernel)
        assert.ok(readme.includes(`| \`${name}\` |`), `kernel argument ${name}`);
      if (spec.env) assert.ok(readme.includes(`\`${spec.env}\``), `environment variable ${spec.env}`);
      if (spec.flag) assert.ok(readme.includes(`\`--${spec.flag}\``), `flag --${spec.flag}`);
    }
  });

  it('list every command error code and channel error code', async () => {
    const readme = await repoFile('README.md');
    for (const code of Object.keys(ERROR_CODES))
      assert.ok(readme.includes(`| \`${code}\` |`), `error code ${code}`);
    for (const code of Object.values(RpcErrorCode))
      assert.ok(readme.includes(`| ${code} |`), `channel error ${code}`);
  });

  it('list every command', async () => {
    const readme = await repoFile('README.md');
    const registry = buildRegistry(buildConfig({}).config, silentLogger());
    for (const name of registry.names()) assert.ok(readme.includes(`| \`${name}\` |`), `command ${name}`);
  });

  it('agree with package.json on the version', async () => {
    const pkg = JSON.parse(await repoFile('package.json')) as { version: string };
    assert.equal(AGENT_VERSION, pkg.version);
  });
});
