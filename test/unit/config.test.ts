import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { parseCmdline, splitCmdline } from '../../agent/config/cmdline.js';
import { buildConfig, effectiveLogLevel, loadConfig } from '../../agent/config/load.js';
import { AgentError } from '../../agent/util/errors.js';

describe('kernel command line', () => {
  it('splits on whitespace and keeps quoted spaces', () => {
    assert.deepEqual(splitCmdline('  ro quiet  bma-x="a b  c" last=1\n'), [
      'ro',
      'quiet',
      'bma-x=a b  c',
      'last=1',
    ]);
  });

  it('keeps key=value pairs, the last one winning, the value being everything after the first =', () => {
    const params = parseCmdline(
      'BOOT_IMAGE=/vmlinuz ipa-debug=0 ipa-debug=1 bma-conductor-url=wss://c:9443/v1/agent?a=b quiet',
    );
    assert.equal(params.get('ipa-debug'), '1');
    assert.equal(params.get('bma-conductor-url'), 'wss://c:9443/v1/agent?a=b');
    assert.equal(params.has('quiet'), false);
  });
});

describe('configuration layers', () => {
  it('reads IPA names with IPA meaning', () => {
    const { config, sources } = buildConfig({
      cmdline:
        'ipa-insecure=1 ipa-debug=yes BOOTIF=01-AA-bb-cc-dd-ee-ff ipa-collect-lldp=true ipa-lldp-timeout=12.5 ipa-api-url=http://10.0.0.1:6385',
    });
    assert.equal(config.insecure, true);
    assert.equal(config.debug, true);
    assert.equal(config.bootif, 'aa:bb:cc:dd:ee:ff');
    assert.equal(config.collectLldp, true);
    assert.equal(config.lldpTimeoutS, 12.5);
    assert.equal(config.ironicApiUrl, 'http://10.0.0.1:6385/');
    assert.equal(sources.insecure, 'kernel');
    assert.equal(sources.powerBackend, 'default');
    assert.equal(effectiveLogLevel(config), 'debug');
  });

  it('lets the environment override the kernel and flags override both', () => {
    const { config, sources } = buildConfig({
      cmdline: 'bma-conductor-url=wss://kernel:1/v1/agent bma-power-backend=sysrq ipa-lldp-timeout=5',
      env: { BMA_CONDUCTOR_URL: 'wss://env:2/v1/agent', BMA_LLDP_TIMEOUT: '7' },
      flags: { 'conductor-url': 'ws://flag:3/v1/agent', insecure: true },
    });
    assert.equal(config.conductorUrl, 'ws://flag:3/v1/agent');
    assert.equal(sources.conductorUrl, 'flag');
    assert.equal(config.lldpTimeoutS, 7);
    assert.equal(sources.lldpTimeoutS, 'env');
    assert.equal(config.powerBackend, 'sysrq');
    assert.equal(config.insecure, true);
  });

  it('logs malformed and unknown kernel arguments once and ignores them', () => {
    const { config, notices } = buildConfig({
      cmdline:
        'ipa-lldp-timeout=soon bma-conductor-url=ftp://x bma-conductor-pin=md5/abc BOOTIF=zz bma-frobnicate=1 ipa-inspection-dhcp-wait-timeout=60 ipa-made-up=2 console=ttyS0',
    });
    assert.equal(config.lldpTimeoutS, 30);
    assert.equal(config.conductorUrl, null);
    assert.equal(config.conductorPin, null);
    assert.equal(config.bootif, null);
    const byArg = new Map(notices.map((notice) => [notice.arg, notice]));
    assert.match(byArg.get('ipa-lldp-timeout')?.msg ?? '', /malformed.*number/);
    assert.match(byArg.get('bma-conductor-url')?.msg ?? '', /malformed.*ws or wss/);
    assert.equal(byArg.get('bma-frobnicate')?.level, 'warn');
    assert.equal(byArg.get('ipa-made-up')?.level, 'warn');
    assert.equal(byArg.get('ipa-inspection-dhcp-wait-timeout')?.level, 'debug');
    assert.equal(byArg.has('console'), false, 'arguments for the kernel are none of our business');
    assert.equal(notices.length, 7);
  });

  it("reads IPA's front-door arguments and refuses malformed ones", () => {
    const { config, notices } = buildConfig({
      cmdline:
        'ipa-api-url=http://192.0.2.1:6385 ipa-listen-port=9998 ipa-advertise-host=[fd00::5] ipa-advertise-protocol=https ipa-lookup-timeout=60 ipa-ironic-api-version=1.68 ipa-global-request-id=req-0d4e5e8c-7f2b-4c1a-9f0e-2f6a1b3c4d5e bma-include-loop-disks=1',
    });
    assert.equal(config.ironicApiUrl, 'http://192.0.2.1:6385/');
    assert.equal(config.ipaListenPort, 9998);
    assert.equal(config.ipaAdvertiseHost, 'fd00::5');
    assert.equal(config.ipaAdvertiseProtocol, 'https');
    assert.equal(config.ipaLookupTimeoutS, 60);
    assert.equal(config.ipaApiVersion, '1.68');
    assert.equal(config.ipaGlobalRequestId, 'req-0d4e5e8c-7f2b-4c1a-9f0e-2f6a1b3c4d5e');
    assert.equal(config.includeLoopDisks, true);
    assert.deepEqual(notices, []);
    const bad = buildConfig({
      cmdline:
        'ipa-listen-port=99999 ipa-advertise-protocol=gopher ipa-ironic-api-version=latest ipa-global-request-id=req-1 ipa-advertise-host=a/b',
    });
    assert.deepEqual(bad.notices.map((notice) => [notice.arg, notice.level]).sort(), [
      ['ipa-advertise-host', 'warn'],
      ['ipa-advertise-protocol', 'warn'],
      ['ipa-global-request-id', 'warn'],
      ['ipa-ironic-api-version', 'warn'],
      ['ipa-listen-port', 'warn'],
    ]);
    assert.equal(bad.config.ipaListenPort, 9999);
    assert.equal(bad.config.ipaAdvertiseProtocol, 'http');
  });

  it('rejects a malformed flag with an error that names it', () => {
    assert.throws(
      () => buildConfig({ flags: { 'lldp-timeout': 'soon' } }),
      (error: unknown) =>
        AgentError.is(error) &&
        error.code === 'INVALID_CONFIG' &&
        /--lldp-timeout=soon.*number from 0 to 600/.test(error.message),
    );
    assert.throws(
      () => buildConfig({ flags: { 'conductor-pin': 'sha256/short' } }),
      /--conductor-pin=sha256\/short is malformed/,
    );
    assert.throws(() => buildConfig({ flags: { 'power-backend': 'magic' } }), /one of command, sysrq, none/);
    assert.throws(
      () => buildConfig({ flags: { 'conductor-url': ['a', 'b'] } }),
      /--conductor-url.*single value/,
    );
  });

  it('rejects a malformed environment variable, naming it', () => {
    assert.throws(
      () => buildConfig({ env: { BMA_INSECURE: 'perhaps' } }),
      /environment variable BMA_INSECURE=perhaps is malformed: expected a boolean/,
    );
  });

  it('accepts a well-formed SPKI pin', () => {
    const pin = `sha256/${Buffer.alloc(32, 7).toString('base64')}`;
    assert.equal(buildConfig({ cmdline: `bma-conductor-pin=${pin}` }).config.conductorPin, pin);
  });

  it('takes the hardware roots from BMA_SYS, BMA_DEV and BMA_PROC', () => {
    const { config } = buildConfig({
      env: { BMA_SYS: '/tmp/sys', BMA_DEV: '/tmp/dev', BMA_PROC: '/tmp/proc' },
    });
    assert.deepEqual(
      [config.sysRoot, config.devRoot, config.procRoot],
      ['/tmp/sys', '/tmp/dev', '/tmp/proc'],
    );
  });

  it('reads the command line from BMA_CMDLINE, and a missing --cmdline file is an error', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'bma-config-'));
    const file = path.join(dir, 'cmdline');
    await writeFile(file, 'bma-conductor-url=wss://conductor.example:9443/v1/agent ipa-debug=1\n');
    const loaded = await loadConfig({ env: { BMA_CMDLINE: file }, flags: {} });
    assert.equal(loaded.config.conductorUrl, 'wss://conductor.example:9443/v1/agent');
    assert.equal(loaded.cmdlinePath, file);
    await assert.rejects(
      loadConfig({ env: {}, flags: { cmdline: path.join(dir, 'missing') } }),
      /--cmdline=.*readable file/,
    );
    const missing = await loadConfig({ env: { BMA_CMDLINE: path.join(dir, 'missing') }, flags: {} });
    assert.equal(missing.notices[0]?.level, 'warn');
    await rm(dir, { recursive: true, force: true });
  });
});
