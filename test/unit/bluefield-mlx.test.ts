import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { BlueFieldGeneration, ToolRunner } from '../../agent/hardware/bluefield/contracts.js';
import {
  bdfForMstName,
  mstNameForBdf,
  normalizeBdf,
  parseFlintQuery,
  parseMstStatus,
  readFirmware,
  readMstDevices,
} from '../../agent/hardware/bluefield/mlx/firmware.js';
import {
  classifyMode,
  isHostRefusal,
  isHostRefusalText,
  modeParams,
  modeTarget,
  readMode,
  setMode,
} from '../../agent/hardware/bluefield/mlx/mode.js';
import {
  nvValueIs,
  parseConfigJson,
  parseConfigQuery,
  parseConfigSet,
  parseConfigTable,
  splitNvValue,
} from '../../agent/hardware/bluefield/mlx/parse-config.js';
import {
  DPU_SIDE_DEVICE,
  parsePrivilegeQuery,
  parsePrivilegeSet,
  readPrivilege,
  setPrivilege,
} from '../../agent/hardware/bluefield/mlx/privhost.js';
import {
  MFT_TOOLS,
  MSTFLINT_TOOLS,
  createLocalRunner,
  findMlxTools,
  mlxDevice,
  runTool,
} from '../../agent/hardware/bluefield/mlx/tools.js';
import { AgentError } from '../../agent/util/errors.js';
import type { ProcessResult } from '../../agent/util/run-process.js';
import { assertCode, rejectsWithCode } from '../support/agent-errors.js';

// Fixtures stay in the source tree; the compiled test runs from <outDir>/test/unit.
const FIXTURES = fileURLToPath(new URL('../../../test/fixtures/bluefield/mlx/', import.meta.url));
const fixture = (name: string): Promise<string> => readFile(path.join(FIXTURES, name), 'utf8');

let scratch: string;
before(async () => {
  scratch = await mkdtemp(path.join(os.tmpdir(), 'bma-mlx-unit-'));
});
after(async () => {
  await rm(scratch, { recursive: true, force: true });
});

// ---- a scripted runner -------------------------------------------------------------------

interface Reply {
  stdout?: string;
  stderr?: string;
  exitCode?: number;
  /** Thrown instead of answering. */
  throws?: Error;
}

interface Scripted {
  runner: ToolRunner;
  calls: Array<{ program: string; args: string[] }>;
}

/** Answers each call with the next reply; a call past the script fails the test. */
const scripted = (where: 'host' | 'dpu', replies: Reply[]): Scripted => {
  const calls: Array<{ program: string; args: string[] }> = [];
  const queue = [...replies];
  return {
    calls,
    runner: {
      where,
      run: async (program, args) => {
        calls.push({ program, args });
        const reply = queue.shift();
        if (reply === undefined) throw new Error(`unexpected call: ${program} ${args.join(' ')}`);
        if (reply.throws) throw reply.throws;
        const result: ProcessResult = {
          argv: [program, ...args],
          exitCode: reply.exitCode ?? 0,
          signal: null,
          timedOut: false,
          cancelled: false,
          durationMs: 1,
          stdout: reply.stdout ?? '',
          stderr: reply.stderr ?? '',
        };
        return result;
      },
    },
  };
};

/** What runProcess throws for a non-zero exit: the run's fields with output tails. */
const toolFailedLike = (program: string, args: string[], exitCode: number, stdout: string): AgentError =>
  new AgentError('TOOL_FAILED', `${program} exited with code ${exitCode}`, {
    details: {
      argv: [program, ...args],
      exitCode,
      signal: null,
      timedOut: false,
      cancelled: false,
      durationMs: 3,
      stdoutTail: stdout,
      stderrTail: '',
    },
  });

/** An mstflint 4.25 `-e q` table (the layout of the real BF2 capture). */
const eQuery = (rows: Array<[string, string, string, string]>, device = '0000:03:00.0'): string => {
  const col = (v: string): string => v.padEnd(16);
  const lines = [
    '',
    'Device #1:',
    '----------',
    '',
    `Device type:    ${'BlueField2'.padEnd(16)}`,
    'Name:           MBF2M516A-EEEO_Ax',
    'Description:    BlueField-2 E-Series SmartNIC 100GbE/EDR VPI Dual-Port QSFP56',
    `Device:         ${device.padEnd(16)}`,
    '',
    `${'Configurations:'.padEnd(53)}Default         Current         Next Boot`,
    ...rows.map(
      ([name, d, c, n]) =>
        `${n !== d || n !== c ? '*' : ' '}        ${name.padEnd(44)}${col(d)}${col(c)}${col(n)}`,
    ),
    '',
  ];
  return lines.join('\n');
};

const SET_DONE =
  '\nDevice #1:\n----------\n\nConfigurations:                                      Next Boot       New\n\n Apply new Configuration? (y/n) [n] : y\nApplying... Done!\n-I- Please reboot machine to load new configurations.\n';

const BF2_DPU: Array<[string, string, string, string]> = [
  ['INTERNAL_CPU_MODEL', 'EMBEDDED_CPU(1)', 'EMBEDDED_CPU(1)', 'EMBEDDED_CPU(1)'],
  ['INTERNAL_CPU_PAGE_SUPPLIER', 'ECPF(0)', 'ECPF(0)', 'ECPF(0)'],
  ['INTERNAL_CPU_ESWITCH_MANAGER', 'ECPF(0)', 'ECPF(0)', 'ECPF(0)'],
  ['INTERNAL_CPU_IB_VPORT0', 'ECPF(0)', 'ECPF(0)', 'ECPF(0)'],
  ['INTERNAL_CPU_OFFLOAD_ENGINE', 'ENABLED(0)', 'ENABLED(0)', 'ENABLED(0)'],
];
const BF2_NIC_NEXT: Array<[string, string, string, string]> = [
  ['INTERNAL_CPU_MODEL', 'EMBEDDED_CPU(1)', 'EMBEDDED_CPU(1)', 'EMBEDDED_CPU(1)'],
  ['INTERNAL_CPU_PAGE_SUPPLIER', 'ECPF(0)', 'ECPF(0)', 'EXT_HOST_PF(1)'],
  ['INTERNAL_CPU_ESWITCH_MANAGER', 'ECPF(0)', 'ECPF(0)', 'EXT_HOST_PF(1)'],
  ['INTERNAL_CPU_IB_VPORT0', 'ECPF(0)', 'ECPF(0)', 'EXT_HOST_PF(1)'],
  ['INTERNAL_CPU_OFFLOAD_ENGINE', 'ENABLED(0)', 'ENABLED(0)', 'DISABLED(1)'],
];

// ---- parse-config --------------------------------------------------------------------------

describe('parseConfigTable / parseConfigQuery on real captures', () => {
  it('reads the BF3 B3220 plain query: the header, the Next Boot column, every row', async () => {
    const query = parseConfigQuery(await fixture('mstconfig-q-bf3-b3220.txt'));
    assert.deepEqual(query.header, {
      deviceType: 'BlueField3',
      name: '900-9D3B6-00CV-A_Ax',
      description:
        'NVIDIA BlueField-3 B3220 P-Series FHHL DPU; 200GbE (default mode) / NDR200 IB; Dual-port QSFP112; PCIe Gen5.0 x16 with x16 PCIe extension option; 16 Arm cores; 32GB on-board DDR; integrated BMC; Crypto Enabled',
      device: '0002:01:00.0',
    });
    assert.deepEqual(query.columns, ['next']);
    assert.deepEqual(query.malformed, []);
    assert.deepEqual(query.errors, []);
    assert.deepEqual(query.params.INTERNAL_CPU_MODEL, {
      default: null,
      current: null,
      next: 'EMBEDDED_CPU(1)',
    });
    assert.equal(query.params.INTERNAL_CPU_OFFLOAD_ENGINE?.next, 'ENABLED(0)');
    assert.equal(query.params.HIDE_PORT2_PF?.next, 'False(0)');
    // A value filling its 16-wide column, an array summary, a lower-case name, a name starting with RO.
    assert.equal(query.params.LAG_RESOURCE_ALLOCATION?.next, 'DEVICE_DEFAULT(0)');
    assert.equal(query.params.MODULE_SPLIT_M0?.next, 'Array[0..15]');
    assert.equal(query.params.EXP_ROM_UEFI_x86_ENABLE?.next, 'True(1)');
    assert.equal(query.params.ROCE_CONTROL?.next, 'ROCE_ENABLE(2)');
    assert.equal(query.params.SAFE_MODE_ENABLE?.next, 'True(1)');
    assert.ok(Object.keys(query.params).length > 400);
    assert.equal(
      classifyMode('BF3', (p) => query.params[p]?.next ?? null),
      'dpu',
    );
  });

  it('reads the BF2 -e query: three columns, and keeps the cut-off rows apart', async () => {
    const table = parseConfigTable(await fixture('mstconfig-e-q-bf2-issue830-partial.txt'));
    assert.equal(table.header.deviceType, 'BlueField2');
    assert.equal(table.header.name, 'MBF2H512C-AECO_Ax');
    assert.equal(table.header.device, 'ca:00.0');
    assert.deepEqual(table.columns, ['default', 'current', 'next']);
    const model = table.rows.find((r) => r.name === 'INTERNAL_CPU_MODEL');
    assert.deepEqual(model, {
      name: 'INTERNAL_CPU_MODEL',
      modified: false,
      readOnly: false,
      values: { default: 'EMBEDDED_CPU(1)', current: 'EMBEDDED_CPU(1)', next: 'EMBEDDED_CPU(1)' },
    });
    assert.equal(table.rows.find((r) => r.name === 'NUM_OF_VL_P1')?.values.next, '_4_VLs(3)');
    assert.equal(
      table.rows.find((r) => r.name === 'HOST_CHAINING_DESCRIPTORS')?.values.current,
      'Array[0..7]',
    );
    // The published post breaks off after two values of this row and has no value for the last one.
    assert.equal(table.malformed.length, 2);
    assert.match(table.malformed[0] ?? '', /INTERNAL_CPU_PAGE_SUPPLIER/);
    assert.match(table.malformed[1] ?? '', /NUM_OF_TC_P1/);
    assert.equal(
      table.rows.some((r) => r.name === 'INTERNAL_CPU_PAGE_SUPPLIER'),
      false,
    );
  });

  it('splits adjacent values separated by one space and reads the * and RO prefixes', () => {
    const text = [
      'Device type:        BlueField3          ',
      `${'Configurations:'.padEnd(56)}${'Default'.padEnd(33)} ${'Current'.padEnd(33)} ${'Next Boot'.padEnd(33)}`,
      `*       ${'PHY_AUTO_NEG_P1'.padEnd(48)}${'DEVICE_DEFAULT(0)'.padEnd(33)}${'DEVICE_DEFAULT(0)'.padEnd(33)}FORCE_MODE(1)`,
      ` RO     ${'SOME_RO_PARAM'.padEnd(48)}1 1 1`,
      `*RO     ${'OTHER_RO_PARAM'.padEnd(48)}VERY_LONG_ENUM_VALUE_FILLING_IT(3) VERY_LONG_ENUM_VALUE_FILLING_IT(3) X(1)`,
      `        ${'ROCE_CONTROL'.padEnd(48)}ROCE_ENABLE(2) ROCE_ENABLE(2) ROCE_ENABLE(2)`,
      "The '*' shows parameters with next value different from default/current value.",
      '',
      "The 'RO' shows parameters which are for read only and cannot be changed",
    ].join('\n');
    const table = parseConfigTable(text);
    assert.deepEqual(
      table.rows.map((r) => [r.name, r.modified, r.readOnly, r.values.next]),
      [
        ['PHY_AUTO_NEG_P1', true, false, 'FORCE_MODE(1)'],
        ['SOME_RO_PARAM', false, true, '1'],
        ['OTHER_RO_PARAM', true, true, 'X(1)'],
        ['ROCE_CONTROL', false, false, 'ROCE_ENABLE(2)'],
      ],
    );
    assert.equal(table.rows[2]?.values.default, 'VERY_LONG_ENUM_VALUE_FILLING_IT(3)');
    assert.deepEqual(table.malformed, []);
  });

  it('reports the NV-access error of a half-applied configuration', async () => {
    const query = parseConfigQuery(await fixture('nv-access-error-bf2-issue1191.txt'));
    assert.deepEqual(query.errors, ['Error when trying to check if NV access registers are supported']);
    assert.deepEqual(query.params, {});
    assert.deepEqual(query.columns, []);
  });

  it('reads the JSON of -j', () => {
    const json = JSON.stringify({
      'Device #1': {
        description: 'BlueField-2 DPU',
        device: '0000:03:00.0',
        device_type: 'BlueField2',
        name: 'MBF2H516A-EEEO_Ax',
        tlv_configuration: {
          INTERNAL_CPU_MODEL: {
            current_value: 'EMBEDDED_CPU(1)',
            default_value: 'EMBEDDED_CPU(1)',
            modified: false,
            next_value: 'EMBEDDED_CPU(1)',
            read_only: false,
          },
          NUM_OF_VFS: {
            current_value: 16,
            default_value: 16,
            modified: true,
            next_value: 8,
            read_only: false,
          },
          BROKEN: { current_value: 1 },
        },
      },
    });
    const query = parseConfigJson(json);
    assert.equal(query.header.deviceType, 'BlueField2');
    assert.deepEqual(query.columns, ['default', 'current', 'next']);
    assert.deepEqual(query.params.NUM_OF_VFS, { default: '16', current: '16', next: '8' });
    assert.equal(query.params.INTERNAL_CPU_MODEL?.next, 'EMBEDDED_CPU(1)');
    assert.deepEqual(query.malformed, ['BROKEN']);
    assert.throws(() => parseConfigJson('not json'), SyntaxError);
    assert.throws(() => parseConfigJson('[]'), SyntaxError);
    assert.deepEqual(parseConfigJson('{}').params, {});
  });

  it('splits and compares NV values', () => {
    assert.deepEqual(splitNvValue('EMBEDDED_CPU(1)'), { name: 'EMBEDDED_CPU', number: 1 });
    assert.deepEqual(splitNvValue('16'), { name: null, number: 16 });
    assert.deepEqual(splitNvValue('Array[0..7]'), { name: 'Array[0..7]', number: null });
    assert.equal(nvValueIs('EXT_HOST_PF(1)', { name: 'EXT_HOST_PF', number: 1 }), true);
    assert.equal(nvValueIs('1', { name: 'EXT_HOST_PF', number: 1 }), true);
    assert.equal(nvValueIs('ECPF(0)', { name: 'EXT_HOST_PF', number: 1 }), false);
    assert.equal(nvValueIs('ecpf', { name: 'ECPF', number: 0 }), true);
    assert.equal(nvValueIs(null, { name: 'ECPF', number: 0 }), false);
  });
});

describe('parseConfigSet on real transcripts', () => {
  it('reads applied transcripts of every layout', async () => {
    for (const name of [
      'set-cx4-mft-interactive.txt',
      'set-cx5-mstconfig-bdf.txt',
      'set-cx4-mlxconfig-yes.txt',
      'set-cx7-mft430.txt',
    ]) {
      const outcome = parseConfigSet(await fixture(name), 0);
      assert.equal(outcome.status, 'applied', name);
      assert.equal(outcome.rebootRequired, true, name);
      assert.equal(outcome.powerCycleRequired, false, name);
      assert.deepEqual(outcome.errors, [], name);
    }
    const cx4 = parseConfigSet(await fixture('set-cx4-mft-interactive.txt'), 0);
    assert.deepEqual(
      cx4.rows.map((r) => [r.name, r.values.next, r.values.new]),
      [
        ['LINK_TYPE_P1', 'IB(1)', 'ETH(2)'],
        ['LINK_TYPE_P2', 'IB(1)', 'ETH(2)'],
      ],
    );
    const cx7 = parseConfigSet(await fixture('set-cx7-mft430.txt'), 0);
    assert.deepEqual(cx7.rows[0]?.values, { next: '16', new: '127' });
  });

  it('reads a failed transcript, an abort, a power-cycle notice and an error without Applying', async () => {
    const failed = parseConfigSet(await fixture('set-cx4lx-failed.txt'), 3);
    assert.equal(failed.status, 'failed');
    assert.deepEqual(failed.errors, ["Parameter NUM_OF_VFS' value is larger than maximum allowed 127"]);
    assert.deepEqual(failed.rows[0]?.values, { next: '4', new: '65535' });

    const aborted = parseConfigSet(' Apply new Configuration? (y/n) [n] : -E- Aborted by user.\n', 2);
    assert.equal(aborted.status, 'aborted');

    const powerCycle = parseConfigSet(
      'Applying... Done!\n-I- Please power cycle machine to load new configurations.\n',
      0,
    );
    assert.equal(powerCycle.status, 'applied');
    assert.equal(powerCycle.powerCycleRequired, true);
    assert.equal(powerCycle.rebootRequired, false);

    const error = parseConfigSet('-E- Unknown Parameter: FOO\n', 3);
    assert.equal(error.status, 'error');
    assert.deepEqual(error.errors, ['Unknown Parameter: FOO']);
    assert.equal(parseConfigSet('Applying... Done!\n', 3).status, 'error');
  });
});

// ---- tools -------------------------------------------------------------------------------

const executable = async (dir: string, name: string, body = 'exit 0'): Promise<void> => {
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, name), `#!/bin/sh\n${body}\n`);
  await chmod(path.join(dir, name), 0o755);
};

describe('tools', () => {
  it('picks MFT when mlxconfig is on PATH, else mstflint, else names both', async () => {
    const mft = path.join(scratch, 'mft');
    const mstflint = path.join(scratch, 'mstflint');
    const empty = path.join(scratch, 'empty');
    await executable(mft, 'mlxconfig');
    await executable(mstflint, 'mstconfig');
    await mkdir(empty, { recursive: true });
    assert.deepEqual(await findMlxTools(mft), {
      flavour: 'mft',
      config: 'mlxconfig',
      privhost: 'mlxprivhost',
      flint: 'flint',
    });
    assert.deepEqual(await findMlxTools(mstflint), {
      flavour: 'mstflint',
      config: 'mstconfig',
      privhost: 'mstprivhost',
      flint: 'mstflint',
    });
    assert.equal((await findMlxTools(`${mstflint}:${mft}`)).flavour, 'mft');
    const error = await rejectsWithCode(
      findMlxTools(empty),
      'TOOL_NOT_FOUND',
      /mlxconfig.*mstconfig.*`mstflint`/,
    );
    assert.deepEqual(error.details.programs, ['mlxconfig', 'mstconfig']);
  });

  it('addresses a card by its MST name with MFT and by its first NIC function otherwise', () => {
    const card = {
      slot: '0000:03:00',
      nicFunctions: ['0000:03:00.0', '0000:03:00.1'],
      mstDevice: '/dev/mst/mt41686_pciconf0',
    };
    assert.equal(mlxDevice(card, MFT_TOOLS), '/dev/mst/mt41686_pciconf0');
    assert.equal(mlxDevice(card, MSTFLINT_TOOLS), '0000:03:00.0');
    assert.equal(mlxDevice({ ...card, mstDevice: null }, MFT_TOOLS), '0000:03:00.0');
    assertCode(
      (() => {
        try {
          return mlxDevice({ ...card, nicFunctions: [], mstDevice: null }, MSTFLINT_TOOLS);
        } catch (error) {
          return error;
        }
      })(),
      'BLUEFIELD_NOT_FOUND',
    );
  });

  it('turns a thrown non-zero exit back into a result and leaves kills and other errors alone', async () => {
    const nonZero = toolFailedLike('mstconfig', ['q'], 3, '-E- broken\n');
    const result = await runTool({ where: 'host', run: () => Promise.reject(nonZero) }, 'mstconfig', ['q']);
    assert.equal(result.exitCode, 3);
    assert.equal(result.stdout, '-E- broken\n');
    assert.deepEqual(result.argv, ['mstconfig', 'q']);

    const timedOut = new AgentError('TOOL_FAILED', 'timed out', {
      details: { exitCode: null, timedOut: true },
    });
    await rejectsWithCode(
      runTool({ where: 'host', run: () => Promise.reject(timedOut) }, 'mstconfig', []),
      'TOOL_FAILED',
      /timed out/,
    );
    const killed = new AgentError('TOOL_FAILED', 'killed', { details: { exitCode: 1, signal: 'SIGKILL' } });
    await rejectsWithCode(
      runTool({ where: 'host', run: () => Promise.reject(killed) }, 'x', []),
      'TOOL_FAILED',
    );
    const missing = new AgentError('TOOL_NOT_FOUND', 'mstconfig is not on PATH');
    await rejectsWithCode(
      runTool({ where: 'host', run: () => Promise.reject(missing) }, 'x', []),
      'TOOL_NOT_FOUND',
    );
  });

  it('runs local programs on the given PATH with the given environment', async () => {
    const bin = path.join(scratch, 'local-bin');
    await executable(bin, 'say', 'echo "$GREETING $1"; exit 3');
    const runner = createLocalRunner({ toolPath: bin, env: { GREETING: 'hello' } });
    assert.equal(runner.where, 'host');
    const result = await runTool(runner, 'say', ['world']);
    assert.equal(result.exitCode, 3);
    assert.equal(result.stdout.trim(), 'hello world');
    await rejectsWithCode(runTool(runner, 'mlxconfig', []), 'TOOL_NOT_FOUND');
  });
});

// ---- mode --------------------------------------------------------------------------------

describe('mode parameters', () => {
  it('lists and targets the parameters of each generation', () => {
    assert.deepEqual(modeParams('BF1'), ['INTERNAL_CPU_MODEL']);
    assert.deepEqual(modeParams('BF2'), [
      'INTERNAL_CPU_MODEL',
      'INTERNAL_CPU_PAGE_SUPPLIER',
      'INTERNAL_CPU_ESWITCH_MANAGER',
      'INTERNAL_CPU_IB_VPORT0',
      'INTERNAL_CPU_OFFLOAD_ENGINE',
    ]);
    assert.deepEqual(modeParams('BF3', { hidePort2Pf: true }), [
      'INTERNAL_CPU_MODEL',
      'INTERNAL_CPU_OFFLOAD_ENGINE',
      'HIDE_PORT2_PF',
    ]);
    assert.deepEqual(modeTarget('BF1', 'nic'), { INTERNAL_CPU_MODEL: 'SEPARATED_HOST' });
    assert.deepEqual(modeTarget('BF2', 'nic'), {
      INTERNAL_CPU_MODEL: 'EMBEDDED_CPU',
      INTERNAL_CPU_PAGE_SUPPLIER: 'EXT_HOST_PF',
      INTERNAL_CPU_ESWITCH_MANAGER: 'EXT_HOST_PF',
      INTERNAL_CPU_IB_VPORT0: 'EXT_HOST_PF',
      INTERNAL_CPU_OFFLOAD_ENGINE: 'DISABLED',
    });
    assert.deepEqual(modeTarget('BF3', 'dpu', { hidePort2Pf: false }), {
      INTERNAL_CPU_MODEL: 'EMBEDDED_CPU',
      INTERNAL_CPU_OFFLOAD_ENGINE: 'ENABLED',
      HIDE_PORT2_PF: 'False',
    });
  });

  it('classifies parameter values', () => {
    const values =
      (v: Record<string, string>) =>
      (p: string): string | null =>
        v[p] ?? null;
    const cases: Array<[BlueFieldGeneration, Record<string, string>, string]> = [
      ['BF1', { INTERNAL_CPU_MODEL: 'EMBEDDED_CPU(1)' }, 'dpu'],
      ['BF1', { INTERNAL_CPU_MODEL: 'SEPARATED_HOST(0)' }, 'separated_host'],
      ['BF1', {}, 'unknown'],
      ['BF2', Object.fromEntries(BF2_DPU.map(([n, , , v]) => [n, v])), 'dpu'],
      ['BF2', Object.fromEntries(BF2_NIC_NEXT.map(([n, , , v]) => [n, v])), 'nic'],
      [
        'BF2',
        {
          ...Object.fromEntries(BF2_DPU.map(([n, , , v]) => [n, v])),
          INTERNAL_CPU_IB_VPORT0: 'EXT_HOST_PF(1)',
        },
        'unknown',
      ],
      ['BF2', { INTERNAL_CPU_MODEL: 'SEPARATED_HOST(0)' }, 'separated_host'],
      ['BF3', { INTERNAL_CPU_MODEL: 'EMBEDDED_CPU(1)', INTERNAL_CPU_OFFLOAD_ENGINE: 'DISABLED(1)' }, 'nic'],
      ['BF3', { INTERNAL_CPU_OFFLOAD_ENGINE: 'ENABLED(0)' }, 'dpu'],
      ['BF3', { INTERNAL_CPU_MODEL: '7' }, 'unknown'],
      ['BF3', { INTERNAL_CPU_MODEL: 'EMBEDDED_CPU(1)' }, 'unknown'],
    ];
    for (const [generation, v, expected] of cases) {
      assert.equal(classifyMode(generation, values(v)), expected, `${generation} ${JSON.stringify(v)}`);
    }
  });

  it('recognises refusals from the host', async () => {
    assert.equal(isHostRefusalText(await fixture('privhost-not-permitted.txt')), true);
    assert.equal(
      isHostRefusalText(
        'Applying... Failed!\n-E- Failed to set nv_internal_cpu_conf settings Bad parameter (265)',
      ),
      true,
    );
    assert.equal(
      isHostRefusalText('-E- This NVCONFIG parameter can only be configured from the embedded CPU'),
      true,
    );
    assert.equal(isHostRefusalText('-E- Unknown Parameter: FOO'), false);
    assert.equal(isHostRefusalText('Operation is not permitted without -E-'), false);
    assert.equal(isHostRefusal(new AgentError('OPERATION_NOT_PERMITTED', 'x')), true);
    assert.equal(isHostRefusal(new AgentError('TOOL_FAILED', 'x')), false);
    assert.equal(isHostRefusal(new Error('x')), false);
  });
});

describe('readMode', () => {
  it('reads BF1 from the real BF2 -e capture (INTERNAL_CPU_MODEL only) with the exact argv', async () => {
    const s = scripted('host', [{ stdout: await fixture('mstconfig-e-q-bf2-issue830-partial.txt') }]);
    const state = await readMode(s.runner, MSTFLINT_TOOLS, 'ca:00.0', 'BF1');
    assert.deepEqual(s.calls, [
      { program: 'mstconfig', args: ['-d', 'ca:00.0', '-e', 'q', 'INTERNAL_CPU_MODEL'] },
    ]);
    assert.deepEqual(state, {
      current: 'dpu',
      next: 'dpu',
      params: {
        INTERNAL_CPU_MODEL: {
          default: 'EMBEDDED_CPU(1)',
          current: 'EMBEDDED_CPU(1)',
          next: 'EMBEDDED_CPU(1)',
        },
      },
    });
  });

  it('reads a plain query (no Current column) as an unknown current mode', async () => {
    const s = scripted('host', [{ stdout: await fixture('mstconfig-q-bf3-b3220.txt') }]);
    const state = await readMode(s.runner, MFT_TOOLS, '/dev/mst/mt41692_pciconf0', 'BF3');
    assert.equal(state.current, 'unknown');
    assert.equal(state.next, 'dpu');
    assert.deepEqual(Object.keys(state.params), ['INTERNAL_CPU_MODEL', 'INTERNAL_CPU_OFFLOAD_ENGINE']);
  });

  it('fails with the NV-access hint, whether the runner returns or throws the failed run', async () => {
    const text = await fixture('nv-access-error-bf2-issue1191.txt');
    const returned = scripted('host', [{ stdout: text, exitCode: 3 }]);
    const error = await rejectsWithCode(
      readMode(returned.runner, MFT_TOOLS, '/dev/mst/mt41686_pciconf0', 'BF2'),
      'TOOL_FAILED',
      /could not read the mode.*NV access registers/,
    );
    assert.match(String(error.details.hint), /power cycle/);
    assert.deepEqual(error.details.errors, [
      'Error when trying to check if NV access registers are supported',
    ]);
    assert.equal(error.details.exitCode, 3);

    const thrown = scripted('host', [{ throws: toolFailedLike('mlxconfig', [], 3, text) }]);
    await rejectsWithCode(readMode(thrown.runner, MFT_TOOLS, 'dev', 'BF2'), 'TOOL_FAILED', /NV access/);
  });

  it('fails on an unsupported parameter and on output without the parameters', async () => {
    const unsupported = scripted('host', [
      {
        stdout:
          "Configurations: Next Boot\n-E- The Device doesn't support INTERNAL_CPU_OFFLOAD_ENGINE parameter\n",
        exitCode: 3,
      },
    ]);
    await rejectsWithCode(
      readMode(unsupported.runner, MSTFLINT_TOOLS, 'd', 'BF3'),
      'TOOL_FAILED',
      /doesn't support/,
    );
    const empty = scripted('host', [{ stdout: 'nothing useful\n' }]);
    await rejectsWithCode(readMode(empty.runner, MSTFLINT_TOOLS, 'd', 'BF2'), 'TOOL_FAILED', /exit code 0/);
  });
});

describe('setMode', () => {
  it('does nothing when the next-boot values already match', async () => {
    const s = scripted('host', [{ stdout: eQuery(BF2_DPU) }]);
    const result = await setMode(s.runner, MSTFLINT_TOOLS, '0000:03:00.0', 'BF2', 'dpu');
    assert.equal(result.changed, false);
    assert.equal(result.power_cycle_required, false);
    assert.deepEqual(result.set, {});
    assert.equal(s.calls.length, 1);
  });

  it('reports a pending change even when nothing has to be written', async () => {
    const s = scripted('host', [{ stdout: eQuery(BF2_NIC_NEXT) }]);
    const result = await setMode(s.runner, MSTFLINT_TOOLS, 'd', 'BF2', 'nic');
    assert.equal(result.changed, false);
    assert.equal(result.power_cycle_required, true);
    assert.equal(result.before.current, 'dpu');
    assert.equal(result.before.next, 'nic');
  });

  it('writes only the differing parameters, verifies and asks for a power cycle', async () => {
    const s = scripted('host', [
      { stdout: eQuery(BF2_DPU) },
      { stdout: SET_DONE },
      { stdout: eQuery(BF2_NIC_NEXT) },
    ]);
    const result = await setMode(s.runner, MSTFLINT_TOOLS, '0000:03:00.0', 'BF2', 'nic');
    assert.deepEqual(s.calls[1], {
      program: 'mstconfig',
      args: [
        '-d',
        '0000:03:00.0',
        '-y',
        'set',
        'INTERNAL_CPU_PAGE_SUPPLIER=EXT_HOST_PF',
        'INTERNAL_CPU_ESWITCH_MANAGER=EXT_HOST_PF',
        'INTERNAL_CPU_IB_VPORT0=EXT_HOST_PF',
        'INTERNAL_CPU_OFFLOAD_ENGINE=DISABLED',
      ],
    });
    assert.equal(result.changed, true);
    assert.equal(result.before.next, 'dpu');
    assert.equal(result.after.current, 'dpu');
    assert.equal(result.after.next, 'nic');
    assert.equal(result.power_cycle_required, true);
    assert.deepEqual(Object.keys(result.set), [
      'INTERNAL_CPU_PAGE_SUPPLIER',
      'INTERNAL_CPU_ESWITCH_MANAGER',
      'INTERNAL_CPU_IB_VPORT0',
      'INTERNAL_CPU_OFFLOAD_ENGINE',
    ]);
  });

  it('adds HIDE_PORT2_PF when asked', async () => {
    const rows = (hide: string): Array<[string, string, string, string]> => [
      ['INTERNAL_CPU_MODEL', 'EMBEDDED_CPU(1)', 'EMBEDDED_CPU(1)', 'EMBEDDED_CPU(1)'],
      ['INTERNAL_CPU_OFFLOAD_ENGINE', 'ENABLED(0)', 'ENABLED(0)', 'ENABLED(0)'],
      ['HIDE_PORT2_PF', 'False(0)', 'False(0)', hide],
    ];
    const s = scripted('host', [
      { stdout: eQuery(rows('False(0)')) },
      { stdout: SET_DONE },
      { stdout: eQuery(rows('True(1)')) },
    ]);
    const result = await setMode(s.runner, MFT_TOOLS, 'd', 'BF3', 'dpu', { hidePort2Pf: true });
    assert.deepEqual(s.calls[0]?.args.slice(-3), [
      'INTERNAL_CPU_MODEL',
      'INTERNAL_CPU_OFFLOAD_ENGINE',
      'HIDE_PORT2_PF',
    ]);
    assert.deepEqual(s.calls[1]?.args.slice(4), ['HIDE_PORT2_PF=True']);
    assert.equal(result.after.next, 'dpu');
    assert.equal(result.power_cycle_required, true);
  });

  it('throws MODE_VERIFY_FAILED with both readings when the next-boot values did not change', async () => {
    const s = scripted('host', [
      { stdout: eQuery(BF2_DPU) },
      { stdout: SET_DONE },
      { stdout: eQuery(BF2_DPU) },
    ]);
    const error = await rejectsWithCode(
      setMode(s.runner, MSTFLINT_TOOLS, 'd', 'BF2', 'nic'),
      'MODE_VERIFY_FAILED',
      /INTERNAL_CPU_PAGE_SUPPLIER=ECPF\(0\)/,
    );
    assert.deepEqual(error.details.mismatched, [
      'INTERNAL_CPU_PAGE_SUPPLIER',
      'INTERNAL_CPU_ESWITCH_MANAGER',
      'INTERNAL_CPU_IB_VPORT0',
      'INTERNAL_CPU_OFFLOAD_ENGINE',
    ]);
    assert.ok(error.details.before && error.details.after && error.details.expected);
  });

  it('turns a refusal on the host into OPERATION_NOT_PERMITTED, and the same on the DPU into TOOL_FAILED', async () => {
    const bf1Dpu: Array<[string, string, string, string]> = [
      ['INTERNAL_CPU_MODEL', 'EMBEDDED_CPU(1)', 'EMBEDDED_CPU(1)', 'EMBEDDED_CPU(1)'],
    ];
    const refused = {
      stdout:
        '\n Apply new Configuration? (y/n) [n] : y\nApplying... Failed!\n-E- Failed to set nv_internal_cpu_conf settings Bad parameter (265)\n',
      exitCode: 3,
    };
    const host = scripted('host', [{ stdout: eQuery(bf1Dpu) }, refused]);
    const error = await rejectsWithCode(
      setMode(host.runner, MFT_TOOLS, 'd', 'BF1', 'nic'),
      'OPERATION_NOT_PERMITTED',
      /INTERNAL_CPU_MODEL=SEPARATED_HOST.*DPU/,
    );
    assert.equal(isHostRefusal(error), true);
    const dpu = scripted('dpu', [{ stdout: eQuery(bf1Dpu) }, refused]);
    const dpuError = await rejectsWithCode(setMode(dpu.runner, MFT_TOOLS, 'd', 'BF1', 'nic'), 'TOOL_FAILED');
    assert.equal(isHostRefusal(dpuError), false);
    assert.equal(dpuError.details.where, 'dpu');
  });

  it('reports other set failures and aborts as TOOL_FAILED with the tool errors', async () => {
    const failed = scripted('host', [
      { stdout: eQuery(BF2_DPU) },
      { throws: toolFailedLike('mstconfig', [], 3, 'Applying... Failed!\n-E- Device is busy\n') },
    ]);
    const error = await rejectsWithCode(
      setMode(failed.runner, MSTFLINT_TOOLS, 'd', 'BF2', 'nic'),
      'TOOL_FAILED',
      /Device is busy/,
    );
    assert.deepEqual(error.details.errors, ['Device is busy']);
    assert.equal(error.details.status, 'failed');
    const aborted = scripted('host', [
      { stdout: eQuery(BF2_DPU) },
      { stdout: ' Apply new Configuration? (y/n) [n] : -E- Aborted by user.\n', exitCode: 2 },
    ]);
    const abortError = await rejectsWithCode(
      setMode(aborted.runner, MSTFLINT_TOOLS, 'd', 'BF2', 'nic'),
      'TOOL_FAILED',
      /Aborted/,
    );
    assert.equal(abortError.details.status, 'aborted');
  });
});

// ---- privhost ----------------------------------------------------------------------------

const privilegeText = (
  level: string,
  flags: [boolean, boolean, boolean, boolean] = [false, false, false, false],
): string => {
  const t = (b: boolean): string => (b ? 'TRUE' : 'FALSE');
  return [
    'Host configurations',
    '-------------------',
    `${'level'.padEnd(30)}: ${level}`,
    '',
    'Port functions status:',
    '-----------------------',
    `${'disable_rshim'.padEnd(30)}: ${t(flags[0])}`,
    `${'disable_tracer'.padEnd(30)}: ${t(flags[1])}`,
    `${'disable_port_owner'.padEnd(30)}: ${t(flags[2])}`,
    `${'disable_counter_rd'.padEnd(30)}: ${t(flags[3])}`,
    '',
    '',
  ].join('\n');
};

const PRIV_DONE = '-I- preparing configuration file...Done!\n-I- configuring device...Done!\n';

describe('privhost parsing', () => {
  it('reads the old and the new query title', async () => {
    assert.deepEqual(parsePrivilegeQuery(await fixture('mlxprivhost-q-bf2-old-title.txt')), {
      level: 'privileged',
      disable_rshim: false,
      disable_tracer: false,
      disable_port_owner: false,
      disable_counter_rd: false,
    });
    assert.deepEqual(parsePrivilegeQuery(await fixture('mstprivhost-q-new-title-rendered.txt')), {
      level: 'restricted',
      disable_rshim: true,
      disable_tracer: true,
      disable_port_owner: false,
      disable_counter_rd: true,
    });
    const full = `host index                    : 0            1            \nlevel                         : RESTRICTED   PRIVILEGED   \ndisable_rshim                 : TRUE         FALSE        \n`;
    assert.equal(parsePrivilegeQuery(full).level, 'restricted');
    assert.equal(parsePrivilegeQuery(full).disable_rshim, true);
    assert.equal(parsePrivilegeQuery(full).disable_tracer, null);
    assert.equal(parsePrivilegeQuery('level : SOMETHING\n').level, 'unknown');
  });

  it('reads set outcomes', async () => {
    assert.deepEqual(parsePrivilegeSet(PRIV_DONE, 0), {
      ok: true,
      notPermitted: false,
      steps: [
        { step: 'preparing configuration file', ok: true },
        { step: 'configuring device', ok: true },
      ],
      errors: [],
    });
    const refused = parsePrivilegeSet(await fixture('privhost-not-permitted.txt'), 1);
    assert.equal(refused.ok, false);
    assert.equal(refused.notPermitted, true);
    const failed = parsePrivilegeSet(
      '-I- preparing configuration file...Done!\n-I- configuring device...Failed\n',
      0,
    );
    assert.equal(failed.ok, false);
    assert.deepEqual(failed.steps[1], { step: 'configuring device', ok: false });
  });
});

describe('readPrivilege / setPrivilege', () => {
  it('reads the privilege and fails on a tool error', async () => {
    const s = scripted('host', [{ stdout: await fixture('mlxprivhost-q-bf2-old-title.txt') }]);
    assert.equal((await readPrivilege(s.runner, MFT_TOOLS, '/dev/mst/mt41686_pciconf0')).level, 'privileged');
    assert.deepEqual(s.calls[0], { program: 'mlxprivhost', args: ['-d', '/dev/mst/mt41686_pciconf0', 'q'] });
    const bad = scripted('host', [{ stdout: "-E- Unknown device 'x'!\n", exitCode: 1 }]);
    await rejectsWithCode(readPrivilege(bad.runner, MFT_TOOLS, 'x'), 'TOOL_FAILED', /Unknown device/);
  });

  it('does nothing when the privilege already matches', async () => {
    const host = scripted('host', [{ stdout: privilegeText('RESTRICTED', [true, false, false, false]) }]);
    const result = await setPrivilege(host.runner, null, MSTFLINT_TOOLS, 'd', 'restricted', {
      disable_rshim: true,
    });
    assert.equal(result.changed, false);
    assert.equal(result.ran_on, 'host');
    assert.equal(host.calls.length, 1);
  });

  it('needs SSH to the DPU when the host is refused and there is no DPU runner', async () => {
    const host = scripted('host', [
      { stdout: privilegeText('PRIVILEGED') },
      { stdout: await fixture('privhost-not-permitted.txt'), exitCode: 1 },
    ]);
    const error = await rejectsWithCode(
      setPrivilege(host.runner, null, MSTFLINT_TOOLS, '0000:03:00.0', 'restricted', { disable_rshim: true }),
      'OPERATION_NOT_PERMITTED',
      /SSH to the DPU/,
    );
    assert.equal(isHostRefusal(error), true);
    assert.deepEqual(host.calls[1]?.args, ['-d', '0000:03:00.0', '--disable_rshim', 'r']);
  });

  it('retries on the DPU with the Arm-side device, then verifies from the host', async () => {
    const host = scripted('host', [
      { stdout: privilegeText('PRIVILEGED') },
      {
        throws: toolFailedLike(
          'mlxprivhost',
          [],
          1,
          '-E- Operation is not permitted (refer to the DPU user manual)\n',
        ),
      },
      { stdout: privilegeText('RESTRICTED', [true, true, false, false]) },
    ]);
    const dpu = scripted('dpu', [{ stdout: PRIV_DONE }]);
    const result = await setPrivilege(
      host.runner,
      dpu.runner,
      MFT_TOOLS,
      '/dev/mst/mt41686_pciconf0',
      'restricted',
      {
        disable_rshim: true,
        disable_tracer: true,
      },
    );
    assert.deepEqual(dpu.calls, [
      { program: 'mlxprivhost', args: ['-d', DPU_SIDE_DEVICE, '--disable_rshim', '--disable_tracer', 'r'] },
    ]);
    assert.equal(result.changed, true);
    assert.equal(result.ran_on, 'dpu');
    assert.equal(result.after.level, 'restricted');
    assert.equal(result.power_cycle_required, true);
    assert.equal(result.fw_reset_required, true);
  });

  it('uses the DPU device and tools given', async () => {
    const host = scripted('host', [
      { stdout: privilegeText('RESTRICTED') },
      { stdout: '-E- Operation is not permitted (refer to the DPU user manual)\n', exitCode: 1 },
      { stdout: privilegeText('PRIVILEGED') },
    ]);
    const dpu = scripted('dpu', [{ stdout: PRIV_DONE }]);
    const result = await setPrivilege(
      host.runner,
      dpu.runner,
      MSTFLINT_TOOLS,
      '0000:e2:00.0',
      'privileged',
      {},
      {
        dpuDevice: '/dev/mst/mt41686_pciconf0',
        dpuTools: MFT_TOOLS,
      },
    );
    assert.deepEqual(dpu.calls[0], {
      program: 'mlxprivhost',
      args: ['-d', '/dev/mst/mt41686_pciconf0', 'p'],
    });
    assert.equal(result.power_cycle_required, false);
    assert.equal(result.fw_reset_required, false);
  });

  it('accepts a change the host was allowed to make', async () => {
    const host = scripted('host', [
      { stdout: privilegeText('PRIVILEGED') },
      { stdout: PRIV_DONE },
      { stdout: privilegeText('RESTRICTED') },
    ]);
    const result = await setPrivilege(host.runner, null, MSTFLINT_TOOLS, 'd', 'restricted');
    assert.equal(result.ran_on, 'host');
    assert.equal(result.changed, true);
  });

  it('throws PRIVILEGE_VERIFY_FAILED when the read-back differs', async () => {
    const host = scripted('host', [
      { stdout: privilegeText('PRIVILEGED') },
      { stdout: '-E- Operation is not permitted (refer to the DPU user manual)\n', exitCode: 1 },
      { stdout: privilegeText('RESTRICTED') },
    ]);
    const dpu = scripted('dpu', [{ stdout: PRIV_DONE }]);
    const error = await rejectsWithCode(
      setPrivilege(host.runner, dpu.runner, MSTFLINT_TOOLS, 'd', 'restricted', { disable_rshim: true }),
      'PRIVILEGE_VERIFY_FAILED',
      /disable_rshim=false/,
    );
    assert.equal(error.details.ran_on, 'dpu');
  });

  it('reports failures on the DPU, other host failures and bad arguments', async () => {
    const refusedThenDpuFails = scripted('host', [
      { stdout: privilegeText('PRIVILEGED') },
      { stdout: '-E- Operation is not permitted (refer to the DPU user manual)\n', exitCode: 1 },
    ]);
    const dpu = scripted('dpu', [
      { stdout: '-I- preparing configuration file...Done!\n-I- configuring device...Failed\n', exitCode: 1 },
    ]);
    const error = await rejectsWithCode(
      setPrivilege(refusedThenDpuFails.runner, dpu.runner, MSTFLINT_TOOLS, 'd', 'restricted'),
      'TOOL_FAILED',
      /on the DPU/,
    );
    assert.equal(error.details.where, 'dpu');

    const hostFails = scripted('host', [
      { stdout: privilegeText('PRIVILEGED') },
      { stdout: "-E- Unknown device 'd'!\n", exitCode: 1 },
    ]);
    await rejectsWithCode(
      setPrivilege(hostFails.runner, null, MSTFLINT_TOOLS, 'd', 'restricted'),
      'TOOL_FAILED',
      /Unknown device/,
    );

    const none = scripted('host', []);
    await rejectsWithCode(
      setPrivilege(none.runner, null, MSTFLINT_TOOLS, 'd', 'privileged', { disable_rshim: true }),
      'INVALID_PARAMS',
    );
    await assert.rejects(
      setPrivilege(none.runner, none.runner, MSTFLINT_TOOLS, 'd', 'privileged'),
      TypeError,
    );
  });
});

// ---- firmware ----------------------------------------------------------------------------

describe('firmware and MST names', () => {
  it('parses flint queries', async () => {
    assert.deepEqual(parseFlintQuery(await fixture('flint-q-cx6lx-mft430.txt')), {
      fw_version: '26.33.1048',
      fw_version_running: null,
      psid: 'MT_0000000575',
      product_version: '26.33.1048',
      part_number: null,
      description: null,
      image_type: 'FS4',
      release_date: '29.4.2022',
      security_attributes: 'secure-fw',
      base_mac: 'e8ebd370cf12',
      base_guid: 'e8ebd3030070cf12',
    });
    const running = parseFlintQuery(await fixture('mstflint-q-cx6dx-running-differs.txt'));
    assert.equal(running.fw_version, '20.35.1012');
    assert.equal(running.fw_version_running, '20.34.1002');
    assert.equal(running.security_attributes, null);
    const full = parseFlintQuery(await fixture('flint-q-full-cx4lx.txt'));
    assert.equal(full.part_number, 'MCX4121A-ACA_Ax');
    assert.equal(
      full.description,
      'ConnectX-4 Lx EN network interface card; 25GbE dual-port SFP28; PCIe3.0 x8; ROHS R6',
    );
    assert.equal(full.psid, 'MT_2420110034');
    assert.equal(full.image_type, 'FS3');
  });

  it('parses every mst status layout', async () => {
    const bf2 = parseMstStatus(await fixture('mst-status-v-bf2.txt'));
    assert.deepEqual(bf2, [
      {
        deviceType: 'BlueField2(rev:1)',
        mst: '/dev/mst/mt41686_pciconf0.1',
        pci: '0000:e2:00.1',
        rdma: 'mlx5_1',
        net: 'ens7f1',
        numa: '1',
      },
      {
        deviceType: 'BlueField2(rev:1)',
        mst: '/dev/mst/mt41686_pciconf0',
        pci: '0000:e2:00.0',
        rdma: 'mlx5_0',
        net: 'ens7f0',
        numa: '1',
      },
    ]);
    const aux = parseMstStatus(await fixture('mst-status-v-bf2-aux-channel.txt'));
    assert.deepEqual(
      aux.map((d) => [d.mst, d.pci, d.rdma, d.net, d.numa]),
      [
        ['/dev/mst/mt41686_pciconf0', '0000:10:00.0', null, null, '-1'],
        ['/dev/mst/mt41686_pciconf0.1', '0000:10:00.1', null, null, '-1'],
        ['/dev/mst/mt49873_pciconf0.2', '0000:10:00.2', null, null, '-1'],
      ],
    );
    const docs = parseMstStatus(await fixture('mst-status-v-bf2-bf3-nvidia-docs.txt'));
    assert.equal(docs.length, 4);
    assert.equal(mstNameForBdf(docs, 'e2:00.0'), '/dev/mst/mt41692_pciconf0');
    assert.equal(bdfForMstName(docs, '/dev/mst/mt41686_pciconf0'), '0000:3b:00.0');
    assert.equal(mstNameForBdf(docs, '0000:99:00.0'), null);
    const plain = parseMstStatus(await fixture('mst-status-cx6lx-mft430.txt'));
    assert.deepEqual(plain, [
      {
        deviceType: null,
        mst: '/dev/mst/mt4127_pciconf0',
        pci: '0002:01:00.0',
        rdma: null,
        net: null,
        numa: null,
      },
    ]);
  });

  it('normalizes PCI addresses', () => {
    assert.equal(normalizeBdf('E2:00.1'), '0000:e2:00.1');
    assert.equal(normalizeBdf('0002:01:00.0'), '0002:01:00.0');
    assert.equal(normalizeBdf('/dev/mst/mt41686_pciconf0'), '/dev/mst/mt41686_pciconf0');
  });

  it('runs flint and mst through the runner', async () => {
    const s = scripted('host', [
      { stdout: await fixture('flint-q-cx6lx-mft430.txt') },
      { stdout: await fixture('mst-status-v-bf2.txt') },
      { stdout: '-E- Cannot open Device: x. No such file or directory. MFE_CR_ERROR\n', exitCode: 1 },
      { stdout: 'Image type: FS4\n' },
    ]);
    assert.equal((await readFirmware(s.runner, MFT_TOOLS, '/dev/mst/mt4127_pciconf0')).psid, 'MT_0000000575');
    assert.equal((await readMstDevices(s.runner, MFT_TOOLS)).length, 2);
    assert.deepEqual(s.calls.slice(0, 2), [
      { program: 'flint', args: ['-d', '/dev/mst/mt4127_pciconf0', 'q'] },
      { program: 'mst', args: ['status', '-v'] },
    ]);
    await rejectsWithCode(readFirmware(s.runner, MSTFLINT_TOOLS, 'x'), 'TOOL_FAILED', /Cannot open Device/);
    await rejectsWithCode(readFirmware(s.runner, MSTFLINT_TOOLS, 'x'), 'TOOL_FAILED', /could not query/);
    assert.deepEqual(await readMstDevices(scripted('host', []).runner, MSTFLINT_TOOLS), []);
  });
});
