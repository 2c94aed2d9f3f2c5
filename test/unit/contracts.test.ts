// The wire contracts, tested at the boundary where they protect the rest of the code: a valid
// spec comes out with every default applied, and every hostile input is refused with a one-line
// message that names the field and the rule. Property tests check the invariants the other
// services rely on (names are safe subject tokens, paths never climb, parsing never throws).
import { describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import type { z } from 'zod';
import {
  ERROR_CODES,
  InvalidInput,
  JailNotFound,
  NAME_RULE,
  WIRE_VERSION,
  absolutePathSchema,
  applyRequestSchema,
  commandMsgId,
  commandSchema,
  desiredRecordSchema,
  describeIssues,
  execRequestSchema,
  expandReplicas,
  fleetJailSchema,
  fleetSchema,
  heartbeatSchema,
  jailHostname,
  jailSpecSchema,
  jailSeccomp,
  nameRequestSchema,
  nameSchema,
  parseOrThrow,
  placementRecordSchema,
  psReplySchema,
  psRequestSchema,
  stateEventSchema,
  subjects,
  type Command,
} from '../../contracts/index.js';

const AT = '2025-01-02T03:04:05.000Z';
const base = { name: 'web', command: ['/usr/sbin/nginx', '-g', 'daemon off;'] };
const spec = (extra: Record<string, unknown>) => ({ ...base, ...extra });

/** Asserts `data` is refused and returns the InvalidInput message built from the failure. */
function refusal(schema: z.ZodTypeAny, data: unknown, prefix = ''): string {
  const r = schema.safeParse(data);
  expect(r.success).toBe(false);
  if (r.success) throw new Error(`accepted: ${JSON.stringify(data)?.slice(0, 200)}`);
  const err = InvalidInput.fromZod(r.error, prefix);
  expect(err).toBeInstanceOf(InvalidInput);
  expect(err.code).toBe('invalid');
  expect(err.message).toBe(describeIssues(r.error, prefix));
  expect(err.message).not.toMatch(/\n/);
  return err.message;
}

describe('a valid jail spec', () => {
  test('the smallest spec parses with every default applied', () => {
    expect(jailSpecSchema.parse(base)).toEqual({
      name: 'web',
      command: ['/usr/sbin/nginx', '-g', 'daemon off;'],
      env: {},
      mounts: [],
      network: 'inherit',
      restart: 'always',
      stopTimeoutMs: 10_000,
      resources: { cpu: 0.1, memoryMB: 64, maxProcs: 128 },
      placement: { labels: {} },
      failover: { reschedule: true },
    });
  });

  test('a mount is read-only unless it says otherwise, and a trailing slash is dropped', () => {
    const s = jailSpecSchema.parse(
      spec({
        mounts: [
          { source: '/srv/www/', target: '/var/www' },
          { source: '/srv/data', target: '/data', readOnly: false },
        ],
      }),
    );
    expect(s.mounts).toEqual([
      { source: '/srv/www', target: '/var/www', readOnly: true },
      { source: '/srv/data', target: '/data', readOnly: false },
    ]);
  });

  test('every field set explicitly is kept as written', () => {
    const full = {
      name: 'db-1',
      command: ['/bin/postgres'],
      hostname: 'db.example.org',
      env: { PGDATA: '/data', _X1: '' },
      mounts: [{ source: '/srv/pg', target: '/data', readOnly: false }],
      network: 'none',
      restart: 'on-failure',
      stopTimeoutMs: 600_000,
      resources: { cpu: 0.25, memoryMB: 512, maxProcs: 64 },
      placement: { host: 'host-2', labels: { zone: 'eu-1', 'disk/ssd': 'true' }, spreadGroup: 'db', maxPerHost: 1 },
      failover: { reschedule: false, stopWhenDisconnectedMs: 5000 },
    };
    expect(jailSpecSchema.parse(full)).toEqual(full);
  });

  test('the jail sees its own hostname if set, else its name', () => {
    expect(jailHostname(jailSpecSchema.parse(base))).toBe('web');
    expect(jailHostname(jailSpecSchema.parse(spec({ hostname: 'www.example' })))).toBe('www.example');
  });

  test('limits are inclusive: 63-char name, 1024 args, 8192-char arg, 64 mounts, 256 vars, 0 and 600000 ms', () => {
    expect(jailSpecSchema.safeParse(spec({ name: 'a'.repeat(63) })).success).toBe(true);
    expect(jailSpecSchema.safeParse(spec({ command: Array(1024).fill('x') })).success).toBe(true);
    expect(jailSpecSchema.safeParse(spec({ command: ['x', 'y'.repeat(8192)] })).success).toBe(true);
    const mounts = Array.from({ length: 64 }, (_, i) => ({ source: '/s', target: `/t${i}` }));
    expect(jailSpecSchema.safeParse(spec({ mounts })).success).toBe(true);
    const env = Object.fromEntries(Array.from({ length: 256 }, (_, i) => [`V${i}`, 'x']));
    expect(jailSpecSchema.safeParse(spec({ env })).success).toBe(true);
    expect(jailSpecSchema.safeParse(spec({ env: { BIG: 'v'.repeat(32768) } })).success).toBe(true);
    expect(jailSpecSchema.safeParse(spec({ stopTimeoutMs: 0 })).success).toBe(true);
    expect(jailSpecSchema.safeParse(spec({ stopTimeoutMs: 600_000 })).success).toBe(true);
    expect(jailSpecSchema.safeParse(spec({ mounts: [{ source: '/' + 'a'.repeat(1023), target: '/b' }] })).success).toBe(true);
  });

  test('shell metacharacters in arguments are plain argv data, accepted unchanged', () => {
    const argv = ['/bin/echo', '; rm -rf /', '$(id)', '`id`', 'a | b', 'a && b', '> /etc/passwd', '< x', "'\"", '*', '~', '\n', '$HOME'];
    const s = jailSpecSchema.parse(spec({ command: argv }));
    expect(s.command).toEqual(argv);
    expect(s.command).toHaveLength(argv.length);
  });
});

describe('hostile names are refused with the field and the rule', () => {
  test.each([
    ['uppercase', 'Web'],
    ['a dot', 'web.1'],
    ['a NATS wildcard *', 'web*'],
    ['a NATS wildcard >', 'web>'],
    ['a space', 'my web'],
    ['a leading "-"', '-web'],
    ['64 characters', 'a'.repeat(64)],
    ['nothing', ''],
    ['unicode', 'wéb'],
    ['a path', '../x'],
    ['an underscore', 'my_web'],
  ])('a name with %s', (_what, name) => {
    const msg = refusal(jailSpecSchema, spec({ name }));
    expect(msg).toMatch(/^name: /);
    expect(msg).toContain(NAME_RULE);
    if (name.length === 64) expect(msg).toContain('at most 63 characters');
  });

  test('a name that is not a string', () => {
    expect(refusal(jailSpecSchema, spec({ name: 42 }))).toMatch(/^name: .*expected string/);
  });

  test('the same rule guards host names in events, placements and requests', () => {
    expect(refusal(nameRequestSchema, { v: 1, name: 'Web' })).toBe(`name: must be ${NAME_RULE}`);
    expect(refusal(jailSpecSchema, spec({ placement: { host: 'host.1' } }))).toBe(`placement.host: must be ${NAME_RULE}`);
  });
});

describe('hostile commands are refused', () => {
  test('an empty argv', () => {
    expect(refusal(jailSpecSchema, spec({ command: [] }))).toBe('command: must have at least one element (the program to run)');
  });
  test('a missing command', () => {
    expect(refusal(jailSpecSchema, { name: 'web' })).toMatch(/^command: .*expected array/);
  });
  test('a shell string instead of an argv array', () => {
    expect(refusal(jailSpecSchema, spec({ command: 'nginx -g "daemon off;"' }))).toMatch(/^command: .*expected array/);
  });
  test('an empty program', () => {
    expect(refusal(jailSpecSchema, spec({ command: ['', 'x'] }))).toBe('command: the program (first element) must not be empty');
  });
  test('a NUL byte in an argument names its index', () => {
    expect(refusal(jailSpecSchema, spec({ command: ['/bin/echo', 'a\0b'] }))).toBe('command.1: must not contain a NUL byte');
  });
  test('1025 arguments', () => {
    expect(refusal(jailSpecSchema, spec({ command: Array(1025).fill('x') }))).toBe('command: at most 1024 arguments');
  });
  test('an 8193-character argument', () => {
    expect(refusal(jailSpecSchema, spec({ command: ['/bin/echo', 'x', 'y'.repeat(8193)] }))).toBe(
      'command.2: each argument must be at most 8192 characters',
    );
  });
  test('a non-string argument', () => {
    expect(refusal(jailSpecSchema, spec({ command: ['/bin/echo', 1] }))).toMatch(/^command\.1: .*expected string/);
  });
});

describe('hostile mounts are refused', () => {
  const m = (source: string, target = '/mnt') => spec({ mounts: [{ source, target }] });
  test.each([
    ['a relative source', m('srv/www'), 'mounts.0.source', 'must be an absolute path'],
    ['a relative target', m('/srv', 'mnt'), 'mounts.0.target', 'must be an absolute path'],
    ['a ".." segment', m('/a/../etc'), 'mounts.0.source', 'must not contain "." or ".." segments'],
    ['a trailing ".."', m('/a/..'), 'mounts.0.source', 'must not contain "." or ".." segments'],
    ['a ".." target', m('/srv', '/mnt/../../etc'), 'mounts.0.target', 'must not contain "." or ".." segments'],
    ['a "." segment', m('/a/./b'), 'mounts.0.source', 'must not contain "." or ".." segments'],
    ['a "//"', m('/a//b'), 'mounts.0.source', 'must not contain "//"'],
    ['a NUL byte', m('/a\0/b'), 'mounts.0.source', 'must not contain a NUL byte'],
    ['the whole host as source', m('/'), 'mounts.0.source', 'must not be "/" (the whole host)'],
    ['the jail root as target', m('/srv', '/'), 'mounts.0.target', 'must not be "/" (the jail root itself)'],
    ['a 2000-character path', m('/' + 'a'.repeat(1999)), 'mounts.0.source', 'must be at most 1024 characters'],
    ['an empty path', m(''), 'mounts.0.source', ''],
  ])('%s', (_what, data, path, rule) => {
    const msg = refusal(jailSpecSchema, data);
    expect(msg.startsWith(`${path}: `)).toBe(true);
    expect(msg).toContain(rule);
  });

  test('the index of the bad mount is in the path', () => {
    const mounts = [
      { source: '/ok', target: '/a' },
      { source: '/ok', target: '/b' },
      { source: '/x/../y', target: '/c' },
    ];
    expect(refusal(jailSpecSchema, spec({ mounts }))).toBe('mounts.2.source: must not contain "." or ".." segments');
  });

  test('two mounts on the same target, also when one has a trailing slash', () => {
    const same = [
      { source: '/a', target: '/data' },
      { source: '/b', target: '/data' },
    ];
    expect(refusal(jailSpecSchema, spec({ mounts: same }))).toBe('mounts: two mounts or volumes have the same target');
    const slash = [
      { source: '/a', target: '/data' },
      { source: '/b', target: '/data/' },
    ];
    expect(refusal(jailSpecSchema, spec({ mounts: slash }))).toBe('mounts: two mounts or volumes have the same target');
  });

  test('65 mounts', () => {
    const mounts = Array.from({ length: 65 }, (_, i) => ({ source: '/s', target: `/t${i}` }));
    expect(refusal(jailSpecSchema, spec({ mounts }))).toBe('mounts: at most 64 mounts');
  });

  test('an unknown key in a mount (typo of readOnly)', () => {
    const msg = refusal(jailSpecSchema, spec({ mounts: [{ source: '/a', target: '/b', readonly: false }] }));
    expect(msg).toMatch(/^mounts\.0: /);
    expect(msg).toContain('"readonly"');
  });

  test('readOnly must be a boolean', () => {
    expect(refusal(jailSpecSchema, spec({ mounts: [{ source: '/a', target: '/b', readOnly: 'no' }] }))).toMatch(
      /^mounts\.0\.readOnly: .*expected boolean/,
    );
  });
});

describe('hostile environments are refused', () => {
  test.each([
    ['an "="', 'A=B'],
    ['a space', 'A B'],
    ['a leading digit', '1A'],
    ['a dash', 'A-B'],
    ['129 characters', 'A'.repeat(129)],
    ['nothing', ''],
  ])('a variable name with %s is refused and its path named', (_what, key) => {
    const msg = refusal(jailSpecSchema, spec({ env: { [key]: 'x' } }));
    // describeIssues drops empty path segments, so the empty name shows as `env: ...`
    expect(msg.startsWith(key === '' ? 'env: ' : `env.${key}: `)).toBe(true);
  });

  // zod 4 nests a bad record key's own message inside `invalid_key`; describeIssues digs it out
  test('a bad variable name message states the rule, not just "Invalid key in record"', () => {
    const msg = refusal(jailSpecSchema, spec({ env: { 'A=B': 'x' } }));
    expect(msg).toContain('environment variable names must be letters, digits and "_"');
  });

  test('257 variables', () => {
    const env = Object.fromEntries(Array.from({ length: 257 }, (_, i) => [`V${i}`, 'x']));
    expect(refusal(jailSpecSchema, spec({ env }))).toBe('env: at most 256 variables');
  });

  test('a huge value', () => {
    expect(refusal(jailSpecSchema, spec({ env: { BIG: 'v'.repeat(32769) } }))).toBe('env.BIG: must be at most 32768 characters');
  });

  test('a NUL byte in a value', () => {
    expect(refusal(jailSpecSchema, spec({ env: { A: 'x\0y' } }))).toBe('env.A: must not contain a NUL byte');
  });

  test('a non-string value', () => {
    expect(refusal(jailSpecSchema, spec({ env: { PORT: 80 } }))).toMatch(/^env\.PORT: .*expected string/);
  });

  // zod's record would drop an own "__proto__" key silently: the contract refuses it instead
  test('a variable named __proto__ is either kept or refused, never dropped silently', () => {
    const r = jailSpecSchema.safeParse(spec({ env: JSON.parse('{"__proto__":"x","B":"y"}') }));
    expect(r.success).toBe(false);
    if (!r.success) expect(describeIssues(r.error)).toBe('env.__proto__: "__proto__" is not allowed as a variable name');
  });
});

describe('other fields are refused outside their rules', () => {
  test('an unknown top-level key (typo) is refused, not ignored', () => {
    expect(refusal(jailSpecSchema, { name: 'web', comand: ['x'], command: ['y'] })).toBe('(root): Unrecognized key: "comand"');
  });
  test('an unknown key in placement', () => {
    expect(refusal(jailSpecSchema, spec({ placement: { hots: 'a' } }))).toBe('placement: Unrecognized key: "hots"');
  });
  test('a spec that is not an object', () => {
    expect(refusal(jailSpecSchema, 'web')).toMatch(/^\(root\): .*expected object/);
    expect(refusal(jailSpecSchema, null)).toMatch(/^\(root\): /);
    expect(refusal(jailSpecSchema, [base])).toMatch(/^\(root\): /);
  });
  test.each([
    ['network', 'host', '"inherit"|"none"'],
    ['network', 'INHERIT', '"inherit"|"none"'],
    ['restart', 'sometimes', '"always"|"on-failure"|"never"'],
    ['restart', 'on_failure', '"always"|"on-failure"|"never"'],
  ])('%s %j is outside the enum', (field, value, options) => {
    const msg = refusal(jailSpecSchema, spec({ [field]: value }));
    expect(msg.startsWith(`${field}: `)).toBe(true);
    expect(msg).toContain(options);
  });
  test('security.seccomp is default or unconfined; absent means the default filter and keeps the spec as written', () => {
    expect(jailSpecSchema.parse(spec({})).security).toBeUndefined();
    expect(jailSeccomp(jailSpecSchema.parse(spec({})))).toBe('default');
    expect(jailSeccomp(jailSpecSchema.parse(spec({ security: {} })))).toBe('default');
    expect(jailSeccomp(jailSpecSchema.parse(spec({ security: { seccomp: 'unconfined' } })))).toBe('unconfined');
    expect(refusal(jailSpecSchema, spec({ security: { seccomp: 'off' } }))).toBe('security.seccomp: must be default or unconfined');
    expect(refusal(jailSpecSchema, spec({ security: { seccomp: 'Unconfined' } }))).toBe('security.seccomp: must be default or unconfined');
    expect(refusal(jailSpecSchema, spec({ security: { secomp: 'unconfined' } }))).toBe('security: Unrecognized key: "secomp"');
    expect(refusal(jailSpecSchema, spec({ security: 'unconfined' }))).toMatch(/^security: .*expected object/);
  });
  test.each([
    [-1, 'expected number to be >=0'],
    [1.5, 'expected int'],
    [600_001, 'expected number to be <=600000'],
    ['10000', 'expected number'],
    [Number.NaN, 'expected number'],
    [Number.POSITIVE_INFINITY, ''],
  ])('stopTimeoutMs %p', (value, rule) => {
    const msg = refusal(jailSpecSchema, spec({ stopTimeoutMs: value }));
    expect(msg).toMatch(/^stopTimeoutMs: /);
    expect(msg).toContain(rule);
  });
  test.each([['-a'], ['a-'], ['a..b'], ['a b'], ['.a'], ['a.'], ['a_b'], ['a'.repeat(64)], [`${'a'.repeat(63)}.`.repeat(4) + 'a'], ['']])(
    'hostname %j',
    (hostname) => {
      const msg = refusal(jailSpecSchema, spec({ hostname }));
      expect(msg).toMatch(/^hostname: /);
      if (hostname !== '') expect(msg).toMatch(/must be (a valid hostname|at most 253 characters)/);
    },
  );
  test('a hostname of 253 characters in 63-character labels is accepted', () => {
    const hostname = [63, 63, 63, 61].map((n) => 'a'.repeat(n)).join('.');
    expect(hostname).toHaveLength(253);
    expect(jailSpecSchema.safeParse(spec({ hostname })).success).toBe(true);
  });
  test('describeIssues reports at most five issues, each with its own path', () => {
    const msg = refusal(jailSpecSchema, {
      name: 'Web',
      command: [],
      network: 'x',
      restart: 'x',
      stopTimeoutMs: -1,
      env: { A: 1 },
      hostname: '-',
    });
    const parts = msg.split('; ');
    expect(parts).toHaveLength(5);
    for (const p of parts) expect(p).toMatch(/^[a-zA-Z.0-9]+: \S/);
  });
  test('a typo is named before the missing field it leaves, so the user sees the cause first', () => {
    expect(refusal(jailSpecSchema, { name: 'web', comand: ['/x'] })).toBe(
      '(root): Unrecognized key: "comand"; command: Invalid input: expected array, received undefined',
    );
  });
  test('a prefix is put in front of every path', () => {
    expect(refusal(jailSpecSchema, spec({ name: 'X', command: [] }), 'jails.3')).toMatch(/^jails\.3\.name: .*; jails\.3\.command: /);
  });
  test('parseOrThrow throws InvalidInput with the cause and returns the parsed value', () => {
    expect(parseOrThrow(jailSpecSchema, base).restart).toBe('always');
    let thrown: unknown;
    try {
      parseOrThrow(jailSpecSchema, spec({ restart: 'x' }), 'spec');
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeInstanceOf(InvalidInput);
    expect((thrown as InvalidInput).name).toBe('InvalidInput');
    expect((thrown as InvalidInput).message).toMatch(/^spec\.restart: /);
    expect((thrown as InvalidInput).cause).toBeDefined();
  });
  test('JailNotFound names the jail and has the not_found code', () => {
    const e = new JailNotFound('web');
    expect(e.message).toBe('no jail named "web"');
    expect(e.code).toBe('not_found');
    expect(e.name).toBe('JailNotFound');
    expect(ERROR_CODES).toContain(e.code);
  });
});

describe('fleets', () => {
  test('a fleet parses every jail with defaults', () => {
    const f = fleetSchema.parse({ jails: [base, { name: 'db', command: ['/bin/db'] }] });
    expect(f.jails.map((j) => [j.name, j.restart, j.network])).toEqual([
      ['web', 'always', 'inherit'],
      ['db', 'always', 'inherit'],
    ]);
  });
  test('duplicate names are refused at the second occurrence', () => {
    const msg = refusal(fleetSchema, { jails: [base, { name: 'web', command: ['/bin/other'] }] });
    expect(msg).toBe('jails.1.name: duplicate jail name "web"');
  });
  test('the duplicate is named wherever it is', () => {
    const jails = [base, { name: 'a', command: ['x'] }, { name: 'b', command: ['x'] }, { name: 'a', command: ['y'] }];
    expect(refusal(fleetSchema, { jails })).toBe('jails.3.name: duplicate jail name "a"');
  });
  test('an empty fleet is refused', () => {
    expect(refusal(fleetSchema, { jails: [] })).toMatch(/^jails: .*>=1/);
  });
  test('a bad jail in a fleet is named by index', () => {
    expect(refusal(fleetSchema, { jails: [base, { name: 'x', command: [''] }] })).toBe(
      'jails.1.command: the program (first element) must not be empty',
    );
  });
  test('an unknown key next to jails is refused', () => {
    expect(refusal(fleetSchema, { jails: [base], jail: [] })).toBe('(root): Unrecognized key: "jail"');
  });
  test('an apply request names the fleet path of a duplicate', () => {
    expect(refusal(applyRequestSchema, { v: 1, fleet: { jails: [base, base] } })).toBe('fleet.jails.1.name: duplicate jail name "web"');
  });
});

describe('resources, labels and placement are refused outside their rules', () => {
  test.each([
    [{ cpu: -1 }, 'resources.cpu: must be at least 0.01 cores'],
    [{ cpu: 0 }, 'resources.cpu: must be at least 0.01 cores'],
    [{ cpu: 1e9 }, 'resources.cpu: must be at most 1024 cores'],
    [{ cpu: '2' }, 'resources.cpu: Invalid input: expected number, received string'],
    [{ cpu: Number.NaN }, 'resources.cpu: Invalid input: expected number, received NaN'],
    [{ memoryMB: 2 }, 'resources.memoryMB: must be at least 4 MB'],
    [{ memoryMB: 64.5 }, 'resources.memoryMB: Invalid input: expected int, received number'],
    [{ memoryMB: 1e12 }, 'resources.memoryMB: must be at most 4194304 MB (4 TB)'],
    [{ maxProcs: 1e7 }, 'resources.maxProcs: must be at most 1000000'],
    [{ cpu: 1, gpu: 1 }, 'resources: Unrecognized key: "gpu"'],
  ])('resources %j', (resources, message) => {
    expect(refusal(jailSpecSchema, spec({ resources }))).toBe(message);
  });

  test.each([
    [{ 'zone eu': 'x' }, 'placement.labels.zone eu'],
    [{ '$(reboot)': 'x' }, 'placement.labels.$(reboot)'],
    [{ '-zone': 'x' }, 'placement.labels.-zone'],
    [{ zone: 'eu;rm -rf /' }, 'placement.labels.zone'],
    [{ zone: '`id`' }, 'placement.labels.zone'],
    [{ zone: '' }, 'placement.labels.zone'],
    [{ ['k'.repeat(64)]: 'x' }, `placement.labels.${'k'.repeat(64)}`],
  ])('label %j is refused with its rule', (labels, path) => {
    const msg = refusal(jailSpecSchema, spec({ placement: { labels } }));
    expect(msg.startsWith(`${path}: must be `)).toBe(true);
    expect(msg).toMatch(/letters, digits, "\.", "_", "\/" and "-", 1 to 63 characters/);
  });

  test('65 labels', () => {
    const labels = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, 'v']));
    expect(refusal(jailSpecSchema, spec({ placement: { labels } }))).toBe('placement.labels: at most 64 labels');
  });

  test('a pinned host, a spread group and maxPerHost follow their rules', () => {
    expect(refusal(jailSpecSchema, spec({ placement: { host: 'Host_1' } }))).toMatch(/^placement\.host: must be lowercase letters/);
    expect(refusal(jailSpecSchema, spec({ placement: { spreadGroup: 'a;b' } }))).toMatch(/^placement\.spreadGroup: must be lowercase letters/);
    expect(refusal(jailSpecSchema, spec({ placement: { maxPerHost: 0 } }))).toMatch(/^placement\.maxPerHost: .*>=1/);
  });
});

describe('replicas', () => {
  test('one entry becomes NAME-0 … NAME-(N-1) in spread group NAME, without the replicas field', () => {
    const f = fleetSchema.parse({ jails: [spec({ replicas: 3, placement: { maxPerHost: 1 } }), { name: 'db', command: ['/bin/db'] }] });
    expect(f.jails.map((j) => [j.name, j.placement.spreadGroup, j.placement.maxPerHost])).toEqual([
      ['web-0', 'web', 1],
      ['web-1', 'web', 1],
      ['web-2', 'web', 1],
      ['db', undefined, undefined],
    ]);
    for (const j of f.jails) expect(j).not.toHaveProperty('replicas');
    // every expanded spec is a valid plain spec, the one the scheduler and agents take
    for (const j of f.jails) expect(jailSpecSchema.parse(j)).toEqual(j);
  });

  test('an explicit spread group is kept; replicas: 1 is NAME-0', () => {
    const [j] = expandReplicas(fleetJailSchema.parse(spec({ replicas: 1, placement: { spreadGroup: 'front' } })));
    expect([j!.name, j!.placement.spreadGroup]).toEqual(['web-0', 'front']);
  });

  test.each([
    [0, 'jails.0.replicas: must be at least 1'],
    [1001, 'jails.0.replicas: must be at most 1000'],
    [1.5, 'jails.0.replicas: must be a whole number'],
    ['3', 'jails.0.replicas: Invalid input: expected number, received string'],
  ])('replicas %p', (replicas, message) => {
    expect(refusal(fleetSchema, { jails: [spec({ replicas })] })).toBe(message);
  });

  test('the last replica name must still fit in 63 characters', () => {
    const name = 'a'.repeat(60);
    expect(refusal(fleetSchema, { jails: [{ name, command: ['x'], replicas: 1000 }] })).toBe(
      `jails.0.name: with 1000 replicas the last jail would be "${name}-999" (64 characters, at most 63): shorten the name or use fewer replicas`,
    );
    expect(fleetSchema.parse({ jails: [{ name, command: ['x'], replicas: 100 }] }).jails.at(-1)!.name).toBe(`${name}-99`);
  });

  test('a name made twice by the expansion is refused, naming both entries', () => {
    expect(refusal(fleetSchema, { jails: [spec({ replicas: 2 }), spec({ name: 'web-1' })] })).toBe(
      'jails.1.name: duplicate jail name "web-1" (made by jails.0.replicas and by jails.1)',
    );
    expect(refusal(fleetSchema, { jails: [spec({ name: 'web-1' }), spec({ replicas: 3 })] })).toBe(
      'jails.1.replicas: duplicate jail name "web-1" (made by jails.0 and by jails.1.replicas)',
    );
  });

  test('a fleet of more than 10000 jails once expanded is refused', () => {
    const jails = Array.from({ length: 11 }, (_, i) => ({ name: `s${i}`, command: ['x'], replicas: 1000 }));
    expect(refusal(fleetSchema, { jails })).toBe('jails: at most 10000 jails once replicas are expanded (this fleet makes 11000)');
  });

  test('a plain spec (an API command, an agent) does not take replicas', () => {
    expect(refusal(jailSpecSchema, spec({ replicas: 2 }))).toBe('(root): Unrecognized key: "replicas"');
  });

  test('an apply request expands replicas too', () => {
    const r = applyRequestSchema.parse({ v: 1, fleet: { jails: [spec({ replicas: 2 })] } });
    expect(r.fleet.jails.map((j) => j.name)).toEqual(['web-0', 'web-1']);
  });
});

describe('commands', () => {
  const ensure = {
    v: WIRE_VERSION,
    op: 'ensure',
    jail: 'web',
    generation: 1,
    revision: 0,
    desired: 'running',
    spec: base,
    issuedAt: AT,
  };
  const destroy = { v: 1, op: 'destroy', jail: 'web', generation: 2, revision: 7, issuedAt: AT };

  test('an ensure carries a parsed spec with defaults; a destroy carries none', () => {
    const c = commandSchema.parse(ensure);
    expect(c.op).toBe('ensure');
    if (c.op !== 'ensure') throw new Error('unreachable');
    expect(c.spec.stopTimeoutMs).toBe(10_000);
    expect(commandSchema.parse(destroy)).toEqual(destroy);
  });
  test('a wrong version says it is unsupported', () => {
    for (const v of [2, 0, '1', null]) {
      expect(refusal(commandSchema, { ...ensure, v })).toBe('v: unsupported message version (this build speaks v1)');
    }
    expect(refusal(commandSchema, { ...destroy, v: 2 })).toBe('v: unsupported message version (this build speaks v1)');
  });
  test('an unknown op names op and the known ones', () => {
    const msg = refusal(commandSchema, { ...destroy, op: 'nuke' });
    expect(msg).toMatch(/^op: /);
    expect(msg).toContain('ensure');
    expect(msg).toContain('destroy');
  });
  test('an ensure without a spec', () => {
    const { spec: _spec, ...noSpec } = ensure;
    expect(refusal(commandSchema, noSpec)).toMatch(/^spec: .*expected object/);
  });
  test('an ensure whose spec is bad names the spec field', () => {
    expect(refusal(commandSchema, { ...ensure, spec: spec({ mounts: [{ source: '/', target: '/x' }] }) })).toBe(
      'spec.mounts.0.source: must not be "/" (the whole host)',
    );
  });
  test.each([
    [0, '>=1'],
    [-1, '>=1'],
    [1.5, 'expected int'],
    [Number.MAX_SAFE_INTEGER + 2, ''],
    ['1', 'expected number'],
  ])('generation %p is refused', (generation, rule) => {
    const msg = refusal(commandSchema, { ...ensure, generation });
    expect(msg).toMatch(/^generation: /);
    expect(msg).toContain(rule);
    expect(refusal(commandSchema, { ...destroy, generation })).toMatch(/^generation: /);
  });
  test('revision must be a non-negative integer, desired an enum, issuedAt an ISO time, jail a name', () => {
    expect(refusal(commandSchema, { ...ensure, revision: -1 })).toMatch(/^revision: /);
    expect(refusal(commandSchema, { ...ensure, desired: 'destroyed' })).toMatch(/^desired: /);
    expect(refusal(commandSchema, { ...ensure, issuedAt: 'yesterday' })).toMatch(/^issuedAt: /);
    expect(refusal(commandSchema, { ...ensure, jail: 'a.b' }).startsWith(`jail: must be ${NAME_RULE}`)).toBe(true);
  });

  test('an ensure whose spec names another jail is refused (it would replace that one unnoticed)', () => {
    expect(refusal(commandSchema, { ...ensure, jail: 'other' })).toBe('spec.name: the spec names another jail than the command');
  });

  test('commandMsgId is stable: a redelivered command has the same id', () => {
    const a = commandSchema.parse(ensure);
    const b = commandSchema.parse({ ...ensure, issuedAt: '2030-01-01T00:00:00Z' });
    expect(commandMsgId(a)).toBe(commandMsgId(a));
    expect(commandMsgId(a)).toBe(commandMsgId(b));
    expect(commandMsgId(a)).toBe('web/1/ensure/0');
  });
  test('commandMsgId differs for another revision, generation, op or jail', () => {
    const a = commandSchema.parse(ensure);
    const ids = [
      a,
      { ...a, revision: 1 },
      { ...a, generation: 2 },
      commandSchema.parse({ ...destroy, generation: 1, revision: 0 }),
      { ...a, jail: 'db' },
    ].map((c) => commandMsgId(c as Command));
    expect(new Set(ids).size).toBe(ids.length);
  });
  test('property: commandMsgId is injective over (jail, generation, op, revision)', () => {
    const cmd = fc.record({
      jail: fc.constantFrom('a', 'a-1', '1', 'web'),
      generation: fc.integer({ min: 1, max: 20 }),
      op: fc.constantFrom('ensure' as const, 'destroy' as const),
      revision: fc.integer({ min: 0, max: 20 }),
    });
    fc.assert(
      fc.property(cmd, cmd, (x, y) => {
        const same = x.jail === y.jail && x.generation === y.generation && x.op === y.op && x.revision === y.revision;
        const idx = commandMsgId({ v: 1, issuedAt: AT, ...x } as Command);
        const idy = commandMsgId({ v: 1, issuedAt: AT, ...y } as Command);
        return (idx === idy) === same;
      }),
    );
  });
});

describe('state events and heartbeats', () => {
  const event = {
    v: 1,
    host: 'h1',
    jail: 'web',
    generation: 1,
    seq: 1,
    state: 'running',
    pid: 42,
    exitCode: null,
    restarts: 0,
    error: null,
    at: AT,
  };
  const hb = { v: 1, host: 'h1', at: AT, startedAt: AT, driver: 'linux', capacity: { cpu: 2, memoryMB: 4096 }, labels: { zone: 'a' }, allocated: { cpu: 0.1, memoryMB: 64 }, jails: [{ name: 'web', generation: 1, state: 'running', pid: 42 }] };

  test('good ones parse unchanged', () => {
    expect(stateEventSchema.parse(event)).toEqual(event);
    const failed = { ...event, state: 'failed', pid: null, exitCode: 1, error: { step: 'mount', message: 'EPERM' } };
    expect(stateEventSchema.parse(failed)).toEqual(failed);
    expect(heartbeatSchema.parse(hb)).toEqual(hb);
  });
  test.each([
    ['v', 2, 'unsupported message version'],
    ['seq', 0, '>=1'],
    ['seq', 1.5, 'expected int'],
    ['generation', 0, '>=1'],
    ['state', 'exploded', 'expected one of'],
    ['state', 'starting', 'expected one of'],
    ['pid', 0, '>0'],
    ['pid', -1, '>0'],
    ['host', 'H1', NAME_RULE],
    ['host', 'h1.evil', NAME_RULE],
    ['jail', 'web>', NAME_RULE],
    ['restarts', -1, '>=0'],
    ['exitCode', 0.5, 'expected int'],
    ['at', 'yesterday', 'Invalid ISO datetime'],
    ['at', undefined, 'expected string'],
  ])('an event with %s = %p is refused', (field, value, rule) => {
    const msg = refusal(stateEventSchema, { ...event, [field]: value });
    expect(msg.startsWith(`${field}: `)).toBe(true);
    expect(msg).toContain(rule);
  });
  test('an event error must name a known step and a bounded message', () => {
    expect(refusal(stateEventSchema, { ...event, error: { step: 'boom', message: 'x' } })).toMatch(/^error\.step: .*"place"/);
    expect(refusal(stateEventSchema, { ...event, error: { step: 'start', message: 'x'.repeat(4097) } })).toMatch(/^error\.message: /);
  });
  test.each([
    ['v', 3, 'unsupported message version'],
    ['host', 'Host', NAME_RULE],
    ['driver', 'windows', '"linux"|"freebsd"'],
    ['at', 'now', 'Invalid ISO datetime'],
    ['startedAt', 12, 'expected string'],
    ['jails', {}, 'expected array'],
  ])('a heartbeat with %s = %p is refused', (field, value, rule) => {
    const msg = refusal(heartbeatSchema, { ...hb, [field]: value });
    expect(msg.startsWith(`${field}: `)).toBe(true);
    expect(msg).toContain(rule);
  });
  test('a bad jail inside a heartbeat is named by index', () => {
    const jails = [hb.jails[0], { name: 'db', generation: 0, state: 'running', pid: 1 }];
    expect(refusal(heartbeatSchema, { ...hb, jails })).toMatch(/^jails\.1\.generation: .*>=1/);
    expect(refusal(heartbeatSchema, { ...hb, jails: [{ ...hb.jails[0], state: 'gone' }] })).toMatch(/^jails\.0\.state: /);
  });
});

describe('api and state records', () => {
  test('requests carry the version and names', () => {
    expect(psRequestSchema.parse({ v: 1, host: 'h1', state: 'running' })).toEqual({ v: 1, host: 'h1', state: 'running' });
    expect(refusal(psRequestSchema, { v: 1, host: 'h*' })).toBe(`host: must be ${NAME_RULE}`);
    expect(refusal(nameRequestSchema, { v: 9, name: 'web' })).toBe('v: unsupported message version (this build speaks v1)');
  });
  test('exec requests get defaults and share the command rules', () => {
    expect(execRequestSchema.parse({ v: 1, jail: 'web', command: ['ls'] })).toEqual({
      v: 1,
      jail: 'web',
      command: ['ls'],
      timeoutMs: 30_000,
      maxOutputBytes: 256 * 1024,
    });
    expect(refusal(execRequestSchema, { v: 1, jail: 'web', command: [''] })).toBe('command: the program (first element) must not be empty');
    expect(refusal(execRequestSchema, { v: 1, jail: 'web', command: ['ls'], timeoutMs: 0 })).toMatch(/^timeoutMs: /);
    expect(refusal(execRequestSchema, { v: 1, jail: 'web', command: ['ls'], maxOutputBytes: 1024 * 1024 + 1 })).toMatch(/^maxOutputBytes: /);
  });
  test('replies are ok with a result or not ok with a known error code', () => {
    expect(psReplySchema.safeParse({ ok: true, result: { jails: [] } }).success).toBe(true);
    expect(psReplySchema.safeParse({ ok: false, error: { code: 'not_found', message: 'no' } }).success).toBe(true);
    expect(psReplySchema.safeParse({ ok: false, error: { code: 'oops', message: 'no' } }).success).toBe(false);
    expect(psReplySchema.safeParse({ ok: true, error: { code: 'invalid', message: 'no' } }).success).toBe(false);
  });
  test('desired and placement records', () => {
    const d = desiredRecordSchema.parse({ v: 1, spec: base, desired: 'removed', generation: 3, updatedAt: AT });
    expect(d.spec.restart).toBe('always');
    expect(refusal(desiredRecordSchema, { v: 1, spec: base, desired: 'gone', generation: 3, updatedAt: AT })).toMatch(/^desired: /);
    expect(refusal(desiredRecordSchema, { v: 1, spec: base, desired: 'running', generation: 0, updatedAt: AT })).toMatch(/^generation: /);
    expect(placementRecordSchema.parse({ v: 1, host: null, generation: 1, reason: 'no host is up' }).host).toBeNull();
    expect(refusal(placementRecordSchema, { v: 1, host: 'H', generation: 1, reason: null })).toBe(`host: must be ${NAME_RULE}`);
    expect(refusal(placementRecordSchema, { v: 2, host: 'h', generation: 1, reason: null })).toMatch(/^v: /);
  });
});

describe('properties', () => {
  const NAME_SHAPE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
  // mostly name characters, with the characters that would break a subject mixed in
  const nameish = fc.string({
    unit: fc.oneof(
      { weight: 20, arbitrary: fc.constantFrom(...'abcxyz019-'.split('')) },
      { weight: 1, arbitrary: fc.constantFrom('.', '*', '>', ' ', '\t', '\n', '\0', 'A', 'Z', '_', '/', 'é', '\u00a0', '$') },
      { weight: 1, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }) },
    ),
    maxLength: 70,
  });

  test('every accepted name is a DNS-label-like subject token with no NATS metacharacter', () => {
    let accepted = 0;
    fc.assert(
      fc.property(fc.oneof(nameish, fc.string(), fc.string({ unit: 'binary' })), (s) => {
        if (!nameSchema.safeParse(s).success) return;
        accepted++;
        expect(s).toMatch(NAME_SHAPE);
        expect(s).not.toMatch(/[.*>\s\0/]/);
        // as a token it keeps every subject at its fixed number of tokens
        expect(subjects.evt(s, s).split('.')).toHaveLength(4);
        expect(subjects.cmd(s).split('.')).toHaveLength(3);
      }),
      { numRuns: 2000 },
    );
    expect(accepted).toBeGreaterThan(100);
  });

  test('every string of the name shape is accepted (the rule is exact)', () => {
    fc.assert(
      fc.property(fc.stringMatching(NAME_SHAPE), (s) => {
        expect(nameSchema.safeParse(s).success).toBe(true);
      }),
      { numRuns: 500 },
    );
  });

  // a name ending in "-" ("web-") would hand the jail a hostname the hostname rule refuses
  test('the default hostname of every accepted spec is an accepted hostname', () => {
    fc.assert(
      fc.property(fc.stringMatching(NAME_SHAPE), (name) => {
        const s = jailSpecSchema.parse({ name, command: ['x'] });
        expect(jailSpecSchema.safeParse({ name, command: ['x'], hostname: jailHostname(s) }).success).toBe(true);
      }),
      { numRuns: 500 },
    );
    expect(nameSchema.safeParse('web-').success).toBe(false);
  });

  const specKeys = ['name', 'command', 'hostname', 'env', 'mounts', 'network', 'restart', 'stopTimeoutMs', 'placement'];
  const json = fc.jsonValue({ maxDepth: 3 });
  const anySpecish = fc.oneof(
    json,
    fc.dictionary(fc.constantFrom(...specKeys, '__proto__', 'constructor', 'comand'), json),
    fc.record(
      {
        name: fc.oneof(nameish, json),
        command: fc.oneof(fc.array(fc.string()), json),
        env: fc.oneof(fc.dictionary(fc.string(), fc.oneof(fc.string(), json)), json),
        mounts: fc.oneof(
          fc.array(fc.record({ source: fc.oneof(fc.string(), json), target: fc.string(), readOnly: json }, { requiredKeys: [] })),
          json,
        ),
        network: fc.oneof(fc.constantFrom('inherit', 'none'), json),
        stopTimeoutMs: fc.oneof(fc.double(), json),
        placement: fc.oneof(fc.record({ host: json }), json),
      },
      { requiredKeys: [] },
    ),
  );

  test('no JSON value makes a contract parser throw: it only succeeds or fails', () => {
    fc.assert(
      fc.property(anySpecish, (value) => {
        for (const schema of [jailSpecSchema, fleetSchema, commandSchema, stateEventSchema, heartbeatSchema] as z.ZodTypeAny[]) {
          const r = schema.safeParse(value);
          expect(typeof r.success).toBe('boolean');
          if (!r.success) expect(typeof describeIssues(r.error)).toBe('string');
        }
        const f = fleetSchema.safeParse({ jails: [value, value] });
        expect(typeof f.success).toBe('boolean');
        const c = commandSchema.safeParse({ v: 1, op: 'ensure', jail: 'w', generation: 1, revision: 0, desired: 'running', issuedAt: AT, spec: value });
        expect(typeof c.success).toBe('boolean');
      }),
      { numRuns: 600 },
    );
  });

  test('every accepted absolute path has no "." or ".." segment, no "//" and stays absolute', () => {
    const segment = fc.constantFrom('', '.', '..', '...', '.a', 'a.', 'etc', 'a b', '..a', '\0', '/', '%2e%2e', '\\..');
    const path = fc.tuple(fc.boolean(), fc.array(segment, { maxLength: 8 })).map(([abs, segs]) => (abs ? '/' : '') + segs.join('/'));
    let accepted = 0;
    fc.assert(
      fc.property(fc.oneof(path, fc.string()), (p) => {
        const r = absolutePathSchema.safeParse(p);
        if (!r.success) return;
        accepted++;
        expect(r.data.startsWith('/')).toBe(true);
        expect(r.data.split('/')).not.toContain('..');
        expect(r.data.split('/')).not.toContain('.');
        expect(r.data).not.toContain('//');
        expect(r.data).not.toContain('\0');
        expect(r.data === '/' || !r.data.endsWith('/')).toBe(true);
        // and the same holds through a mount in a spec
        const m = jailSpecSchema.safeParse(spec({ mounts: [{ source: '/src', target: p }] }));
        if (m.success) expect(m.data.mounts[0].target.split('/')).not.toContain('..');
      }),
      { numRuns: 2000 },
    );
    expect(accepted).toBeGreaterThan(50);
  });
});
