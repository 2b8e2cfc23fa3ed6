import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InstallBfbParams, SetHostPrivilegeParams, SetModeParams } from '../../agent/commands/bluefield.js';
import type { IpaStep } from '../../agent/ipa/contracts.js';
import { advertisedSteps, checkVersions, findStep, hardwareManagerVersions } from '../../agent/ipa/steps.js';
import { AgentError } from '../../agent/util/errors.js';

const byName = (steps: IpaStep[] | undefined): Record<string, IpaStep> =>
  Object.fromEntries((steps ?? []).map((step) => [step.step, step]));

const rejectsWith = (code: string, pattern: RegExp) => (error: unknown) => {
  assert.ok(AgentError.is(error), `expected an AgentError, got ${String(error)}`);
  assert.equal(error.code, code);
  assert.match(error.message, pattern);
  return true;
};

describe('IPA clean steps', () => {
  it('offer the generic erase steps with IPA priorities, and nothing of a BlueField without one', () => {
    const steps = advertisedSteps('clean', false);
    assert.deepEqual(Object.keys(steps), ['GenericHardwareManager']);
    assert.deepEqual(steps.GenericHardwareManager, [
      { step: 'erase_devices', priority: 10, interface: 'deploy', reboot_requested: false, abortable: true },
      {
        step: 'erase_devices_metadata',
        priority: 99,
        interface: 'deploy',
        reboot_requested: false,
        abortable: true,
      },
    ]);
    assert.deepEqual(hardwareManagerVersions(false), { generic_hardware_manager: '1.1' });
  });

  it('offer the BlueField steps under their own manager, at priority 0, not abortable', () => {
    const steps = advertisedSteps('clean', true);
    assert.deepEqual(Object.keys(steps), ['GenericHardwareManager', 'BlueFieldHardwareManager']);
    const bluefield = byName(steps.BlueFieldHardwareManager);
    assert.deepEqual(Object.keys(bluefield), [
      'bluefield_install_bfb',
      'bluefield_set_mode',
      'bluefield_set_host_privilege',
    ]);
    for (const step of Object.values(bluefield)) {
      assert.equal(step.priority, 0);
      assert.equal(step.interface, 'deploy');
      assert.equal(step.abortable, false);
      assert.equal(step.reboot_requested, false);
    }
    assert.deepEqual(hardwareManagerVersions(true), {
      generic_hardware_manager: '1.1',
      bluefield_hardware_manager: '1.0',
    });
  });

  it('list every param of the registry command in argsinfo, required as its schema says', () => {
    const bluefield = byName(advertisedSteps('clean', true).BlueFieldHardwareManager);
    const cases = [
      ['bluefield_install_bfb', InstallBfbParams, ['url']],
      ['bluefield_set_mode', SetModeParams, ['mode']],
      ['bluefield_set_host_privilege', SetHostPrivilegeParams, ['level']],
    ] as const;
    for (const [name, schema, required] of cases) {
      const argsinfo = bluefield[name]?.argsinfo ?? {};
      assert.deepEqual(Object.keys(argsinfo).sort(), Object.keys(schema.properties).sort(), name);
      assert.deepEqual(
        Object.entries(argsinfo)
          .filter(([, info]) => info.required)
          .map(([key]) => key),
        [...required],
        name,
      );
      for (const [key, info] of Object.entries(argsinfo))
        assert.ok(info.description.length > 10, `${name}.${key} has a description`);
    }
  });
});

describe('IPA deploy steps', () => {
  it('offer write_image and erase_devices_metadata at priority 0, without abortable', () => {
    const steps = advertisedSteps('deploy', false);
    assert.deepEqual(steps.GenericHardwareManager, [
      { step: 'write_image', priority: 0, interface: 'deploy', reboot_requested: false },
      { step: 'erase_devices_metadata', priority: 0, interface: 'deploy', reboot_requested: false },
    ]);
    const bluefield = advertisedSteps('deploy', true).BlueFieldHardwareManager ?? [];
    assert.equal(bluefield.length, 3);
    assert.ok(
      bluefield.every((step) => step.priority === 0 && step.argsinfo && step.abortable === undefined),
    );
  });
});

describe('IPA step lookup', () => {
  it('finds an offered step by interface and name', () => {
    assert.equal(
      findStep('clean', { interface: 'deploy', step: 'erase_devices' }, false).name,
      'erase_devices',
    );
    assert.equal(findStep('deploy', { interface: 'deploy', step: 'write_image' }, false).name, 'write_image');
  });

  it('refuses a step that is not offered, naming what is', () => {
    assert.throws(
      () => findStep('clean', { interface: 'deploy', step: 'write_image' }, false),
      rejectsWith(
        'UNKNOWN_STEP',
        /clean step deploy\.write_image is not offered.*deploy\.erase_devices_metadata/,
      ),
    );
    assert.throws(
      () => findStep('clean', { interface: 'raid', step: 'erase_devices' }, false),
      rejectsWith('UNKNOWN_STEP', /raid\.erase_devices is not offered/),
    );
  });

  it('says a BlueField step needs a BlueField when there is none', () => {
    assert.throws(
      () => findStep('deploy', { interface: 'deploy', step: 'bluefield_set_mode' }, false),
      rejectsWith('UNKNOWN_STEP', /needs a BlueField/),
    );
    assert.equal(
      findStep('deploy', { interface: 'deploy', step: 'bluefield_set_mode' }, true).name,
      'bluefield_set_mode',
    );
  });
});

describe('IPA hardware manager version check', () => {
  const ours = hardwareManagerVersions(true);

  it('passes when nothing is sent, or exactly our versions', () => {
    checkVersions(undefined, ours);
    checkVersions(null, ours);
    checkVersions({}, ours);
    checkVersions({ bluefield_hardware_manager: '1.0', generic_hardware_manager: '1.1' }, ours);
  });

  it('fails on a different version, a missing manager or an extra one', () => {
    const mismatch = rejectsWith('VERSION_MISMATCH', /refreshes its cached steps/);
    assert.throws(
      () => checkVersions({ generic_hardware_manager: '1.0', bluefield_hardware_manager: '1.0' }, ours),
      mismatch,
    );
    assert.throws(() => checkVersions({ generic_hardware_manager: '1.1' }, ours), mismatch);
    assert.throws(
      () =>
        checkVersions({ generic_hardware_manager: '1.1', bluefield_hardware_manager: '1.0', x: '1' }, ours),
      mismatch,
    );
    assert.throws(
      () => checkVersions({ generic_hardware_manager: 1.1 }, hardwareManagerVersions(false)),
      mismatch,
    );
  });
});
