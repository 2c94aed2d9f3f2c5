// What an operator tells an agent about its host (`serve agent --cpu --memory-mb --label`, and
// `up --agent-cpu --agent-memory-mb`): parsed at the boundary, a bad value refused with the flag,
// the rule and exit code 2, before anything starts.
import { describe, expect, test } from '@jest/globals';
import { CliError } from '../../services/cli/client.js';
import { cpuCoresSchema, flag, memoryMBSchema, parseLabelFlags, parseMountSourceFlags, zfsDatasetSchema } from '../../services/cli/flags.js';

const refusal = (fn: () => unknown) => {
  try {
    fn();
  } catch (err) {
    return { cli: err instanceof CliError, exitCode: (err as CliError).exitCode, message: (err as Error).message };
  }
  throw new Error('not refused');
};

describe('--cpu and --memory-mb', () => {
  test('cores may be fractional; memory is whole MB', () => {
    expect(flag('cpu', cpuCoresSchema, '8')).toBe(8);
    expect(flag('cpu', cpuCoresSchema, '0.5')).toBe(0.5);
    expect(flag('cpu', cpuCoresSchema, '1.125')).toBe(1.125);
    expect(flag('memory-mb', memoryMBSchema, '4096')).toBe(4096);
  });

  test.each([
    ['cpu', 'abc', cpuCoresSchema, '--cpu: must be a number of cores, like 8 or 0.5 (got "abc")'],
    ['cpu', '-1', cpuCoresSchema, '--cpu: must be a number of cores, like 8 or 0.5 (got "-1")'],
    ['cpu', '0', cpuCoresSchema, '--cpu: must be at least 0.01 cores (got "0")'],
    ['cpu', '1e3', cpuCoresSchema, '--cpu: must be a number of cores, like 8 or 0.5 (got "1e3")'],
    ['memory-mb', '1.5', memoryMBSchema, '--memory-mb: must be a whole number of MB (got "1.5")'],
    ['memory-mb', '2', memoryMBSchema, '--memory-mb: must be at least 4 MB (got "2")'],
    ['memory-mb', '', memoryMBSchema, '--memory-mb: must be a whole number of MB (got "")'],
  ] as const)('--%s %p is refused naming the flag and the rule, exit 2', (name, value, schema, message) => {
    expect(refusal(() => flag(name, schema, value))).toEqual({ cli: true, exitCode: 2, message });
  });
});

describe('--label KEY=VALUE, repeatable', () => {
  test('collects into the host labels; none gives none', () => {
    expect(parseLabelFlags(['zone=eu-1', 'disk=ssd', 'rack=a/3'])).toEqual({ zone: 'eu-1', disk: 'ssd', rack: 'a/3' });
    expect(parseLabelFlags([])).toEqual({});
  });

  test('a missing "=", a key given twice, or a token outside the label rule is refused, exit 2', () => {
    expect(refusal(() => parseLabelFlags(['zone']))).toEqual({ cli: true, exitCode: 2, message: '--label: expected KEY=VALUE (got "zone")' });
    expect(refusal(() => parseLabelFlags(['zone=a', 'zone=b']))).toEqual({ cli: true, exitCode: 2, message: '--label: "zone" is given twice' });
    expect(refusal(() => parseLabelFlags(['zone=eu west']))).toMatchObject({ cli: true, exitCode: 2, message: expect.stringMatching(/^--label: .*zone.*letters, digits/) });
    expect(refusal(() => parseLabelFlags(['zone=']))).toMatchObject({ cli: true, exitCode: 2, message: expect.stringMatching(/^--label: .*zone/) });
  });
});

describe('--zfs-dataset POOL/PATH (freebsd)', () => {
  test('a dataset name is taken as given', () => {
    expect(flag('zfs-dataset', zfsDatasetSchema, 'zroot/jailfleet')).toBe('zroot/jailfleet');
    expect(flag('zfs-dataset', zfsDatasetSchema, 'tank')).toBe('tank');
  });

  test.each(['zroot/jails@snap', 'zroot/a#b', '-oops', 'zroot//x', 'zroot/x/', '/zroot', 'zroot/a b', ''])('%p is refused naming the flag and the rule, exit 2', (value) => {
    expect(refusal(() => flag('zfs-dataset', zfsDatasetSchema, value))).toEqual({ cli: true, exitCode: 2, message: expect.stringMatching(/^--zfs-dataset: must be a zfs dataset \(POOL or POOL\/PATH/) });
  });
});

describe('--allow-mount-source PREFIX, repeatable', () => {
  test('none by default; each an existing directory', () => {
    expect(parseMountSourceFlags([])).toEqual([]);
    expect(parseMountSourceFlags(['/tmp', '/usr/'])).toEqual(['/tmp', '/usr']);
  });
  test.each([
    ['tmp', '--allow-mount-source: the path must be an absolute path (start with "/") (got "tmp")'],
    ['/tmp/../etc', '--allow-mount-source: the path must not contain "." or ".." segments (got "/tmp/../etc")'],
    ['/nonexistent-jailfleet-prefix', '--allow-mount-source: /nonexistent-jailfleet-prefix is not an existing directory'],
    ['/etc/hostname', '--allow-mount-source: /etc/hostname is not an existing directory'],
  ])('%p is refused naming the flag and the rule, exit 2', (value, message) => {
    expect(refusal(() => parseMountSourceFlags([value]))).toEqual({ cli: true, exitCode: 2, message });
  });
});
