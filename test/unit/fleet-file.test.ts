// Reading a fleet file: strict JSON or YAML, every refusal one line naming the file and why.
import { describe, expect, it } from '@jest/globals';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readFleetFile } from '../../services/cli/flags.js';
import { scratchDir } from '../support/scratch.js';

const dir = scratchDir('jf-fleet-file-');
const file = (name: string, text: string) => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};
const refusal = (p: string) => readFleetFile(p).then(() => 'accepted', (err: Error) => err.message);

describe('readFleetFile', () => {
  it('reads YAML and JSON with defaults applied', async () => {
    const y = await readFleetFile(file('a.yaml', 'jails:\n  - name: web\n    command: [/bin/true]\n'));
    const j = await readFleetFile(file('a.json', JSON.stringify({ jails: [{ name: 'web', command: ['/bin/true'] }] })));
    expect(y).toEqual(j);
    expect(y.jails[0]).toMatchObject({ name: 'web', restart: 'always', network: 'inherit', env: {}, mounts: [] });
  });

  it('parses *.json strictly: a trailing comma is an error, not YAML', async () => {
    expect(await refusal(file('comma.json', '{"jails":[{"name":"x","command":["/bin/true"]},]}\n'))).toMatch(/comma\.json: not valid JSON: /);
  });

  it('refuses duplicate YAML keys, which would silently override each other', async () => {
    expect(await refusal(file('dup.yaml', 'jails:\n  - name: a\n    command: [x]\n    name: b\n'))).toMatch(/dup\.yaml: not valid YAML: duplicate key "name"$/);
  });

  it('refuses an empty file, a missing one and a directory in plain words', async () => {
    expect(await refusal(file('empty.yaml', '  \n'))).toMatch(/empty\.yaml: file is empty \(expected \{ jails: \[spec, \.\.\.\] \}\)$/);
    expect(await refusal(join(dir, 'missing.yaml'))).toBe(`cannot read ${join(dir, 'missing.yaml')}: no such file`);
    expect(await refusal(dir)).toBe(`cannot read ${dir}: is a directory, not a file`);
  });

  it('refuses a YAML alias bomb', async () => {
    const bomb = 'a: &a [1,2]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n';
    expect(await refusal(file('bomb.yaml', bomb))).toMatch(/bomb\.yaml: not valid YAML: Excessive alias count/);
  });

  it('refuses a mapping of 100,000 keys by its rule, in seconds rather than minutes', async () => {
    const env = Array.from({ length: 100_000 }, (_, i) => `      K${i}: v\n`).join('');
    const p = file('bigenv.yaml', `jails:\n  - name: big\n    command: [/bin/true]\n    env:\n${env}`);
    const t = Date.now();
    expect(await refusal(p)).toMatch(/bigenv\.yaml: invalid spec: jails\.0\.env: at most 256 variables$/);
    expect(Date.now() - t).toBeLessThan(60_000); // the quadratic unique-key check took minutes
  }, 90_000);
});
