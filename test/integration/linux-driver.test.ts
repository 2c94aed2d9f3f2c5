// The linux driver against the real kernel, as root: a jail sees only itself (its own pids,
// hostname, /etc, /dev, environment and network), the host's secrets and the driver's data stay
// out of it, its mounts do what they say and hostile ones are refused, exit codes and stop
// behave like jail(8)'s, a jail outlives the process that started it, and every step can be
// repeated. Each test has its own data directory and leaves nothing mounted behind it.
import { afterEach, beforeAll, describe, expect, test } from '@jest/globals';
import { existsSync, statSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { jailSpecSchema, type JailSpec, type JailSpecInput } from '../../contracts/index.js';
import { DriverStepFailed } from '../../services/agent/drivers/driver.js';
import { LinuxDriver } from '../../services/agent/drivers/linux.js';
import { forceUnmountUnder, mountPointsUnder } from '../support/mount-table.js';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const isRoot = process.getuid?.() === 0;
if (!isRoot) console.warn('linux-driver.test.ts: SKIPPED: the linux driver needs root (mounts and namespaces)');
const suite = isRoot ? describe : describe.skip;

const EXEC = { timeoutMs: 10_000, maxOutputBytes: 1 << 20 };
const PATH_ENV = { PATH: '/usr/bin:/bin' };

interface Fixture {
  dataDir: string;
  /** Host files a test binds into its jails, outside the data directory. */
  hostDir: string;
  driver: LinuxDriver;
}
const fixtures: Fixture[] = [];
let seq = 0;

async function fixture(): Promise<Fixture> {
  const dataDir = await mkdtemp('/tmp/jf-linux-data-');
  const hostDir = await mkdtemp('/tmp/jf-linux-host-');
  const f = { dataDir, hostDir, driver: new LinuxDriver({ dataDir }) };
  fixtures.push(f);
  return f;
}

const jailName = (what: string) => `${what}-${process.pid}-${++seq}`;
const specOf = (input: JailSpecInput): JailSpec => jailSpecSchema.parse(input);

async function runningJail(f: Fixture, input: JailSpecInput): Promise<{ spec: JailSpec; pid: number }> {
  const spec = specOf(input);
  await f.driver.prepare(spec);
  await f.driver.mount(spec);
  const { pid } = await f.driver.start(spec);
  return { spec, pid };
}

const execIn = (f: Fixture, spec: JailSpec, argv: string[]) => f.driver.exec(spec, argv, EXEC);
const lines = (s: string) => s.split('\n').filter(Boolean);
const consoleOf = (f: Fixture, name: string) => readFile(join(f.dataDir, 'jails', name, 'console.log'), 'utf8');
const interfaces = (procNetDev: string) =>
  lines(procNetDev)
    .slice(2)
    .map((l) => l.split(':')[0].trim())
    .sort();

beforeAll(async () => {
  if (!isRoot) return;
  // scripts/setup.mjs builds the jail init; build it here too when it is missing or stale, so
  // this file also runs when the rest of the build is broken.
  const src = join(repo, 'native', 'jailinit.c');
  const bin = join(repo, 'dist', 'native', 'jailinit');
  if (!existsSync(bin) || statSync(bin).mtimeMs < statSync(src).mtimeMs) {
    await mkdir(dirname(bin), { recursive: true });
    await execa('cc', ['-O2', '-Wall', '-Werror', '-o', bin, src]);
  }
});

afterEach(async () => {
  const problems: string[] = [];
  for (const f of fixtures.splice(0)) {
    // A fresh driver: cleaning up must not depend on the state of the test's instance.
    const driver = new LinuxDriver({ dataDir: f.dataDir });
    for (const name of await driver.list()) {
      await driver.destroy(name).catch((err: Error) => problems.push(`destroy ${name}: ${err.message}`));
    }
    const left = await mountPointsUnder(f.dataDir);
    if (left.length) {
      problems.push(`still mounted after destroy: ${left.join(', ')}`);
      await forceUnmountUnder(f.dataDir);
    }
    if (!(await mountPointsUnder(f.dataDir)).length) await rm(f.dataDir, { recursive: true, force: true });
    await rm(f.hostDir, { recursive: true, force: true });
  }
  expect(problems).toEqual([]);
});

suite('linux driver (real kernel, as root)', () => {
  test('a jail sees only itself: its pids, hostname, /etc, /dev, environment and an empty network', async () => {
    const f = await fixture();
    const name = jailName('alone');
    const env = { GREETING: 'hello world', PATH: '/usr/bin:/bin' };
    const { spec, pid } = await runningJail(f, { name, command: ['sleep', '1000'], hostname: 'web-1.example', env, network: 'none' });
    expect(await f.driver.inspect(name)).toEqual({ name, prepared: true, mounted: true, pid });

    // pid 1 is the jail's init, pid 2 its command; the rest of /proc is this exec's own processes.
    const procs = await execIn(f, spec, ['sh', '-c', 'for p in /proc/[0-9]*; do echo "${p#/proc/} $(tr "\\0" " " < $p/cmdline)"; done']);
    const byPid = new Map(lines(procs.stdout).map((l) => [Number(l.split(' ')[0]), l.slice(l.indexOf(' ') + 1).trim()]));
    expect(byPid.get(1)).toBe('jailinit');
    expect(byPid.get(2)).toBe('sleep 1000');
    expect(byPid.size).toBeLessThanOrEqual(5);
    expect(procs.stdout).not.toContain(f.dataDir);
    const init = await execIn(f, spec, ['cat', '/proc/2/stat']);
    expect(init.stdout.split(') ')[1].split(' ')[1]).toBe('1'); // the command's parent is pid 1

    const hostname = await execIn(f, spec, ['cat', '/proc/sys/kernel/hostname']);
    expect(hostname.stdout).toBe('web-1.example\n');
    expect((await execIn(f, spec, ['uname', '-n'])).stdout).toBe('web-1.example\n');

    expect(lines((await execIn(f, spec, ['ls', '-A', '/etc'])).stdout)).toEqual(
      ['group', 'hostname', 'hosts', 'nsswitch.conf', 'passwd', ...(existsSync('/etc/resolv.conf') ? ['resolv.conf'] : [])].sort(),
    );
    expect((await execIn(f, spec, ['cat', '/etc/hosts'])).stdout).toMatch(/^127\.0\.0\.1\s+localhost$/m);
    expect((await execIn(f, spec, ['cat', '/etc/hosts'])).stdout).toMatch(/\sweb-1\.example$/m);

    // Nothing of the host beyond the thin base: not root's home, not /home, not the shadow
    // file, not the driver's data directory (whose path names nothing inside the jail).
    const secrets = await execIn(f, spec, [
      'sh', '-c', 'ls -A /root; for p in /home /etc/shadow "$1" "$2"; do test -e "$p" && echo "visible: $p"; done; true',
      'sh', f.dataDir, f.hostDir,
    ]);
    expect(secrets).toMatchObject({ exitCode: 0, stdout: '' });
    expect((await readdir('/root')).length).toBeGreaterThan(0); // so the empty /root above means something

    const usr = await execIn(f, spec, ['touch', '/usr/jailfleet-probe']);
    expect(usr.exitCode).not.toBe(0);
    expect(usr.stderr).toMatch(/Read-only file system/);
    expect(existsSync('/usr/jailfleet-probe')).toBe(false);

    // /dev: exactly the minimal nodes (devfs ruleset 4), and they work.
    expect(lines((await execIn(f, spec, ['ls', '-A', '/dev'])).stdout)).toEqual(
      ['fd', 'full', 'null', 'ptmx', 'pts', 'random', 'shm', 'stderr', 'stdin', 'stdout', 'tty', 'urandom', 'zero'],
    );
    expect(lines((await execIn(f, spec, ['ls', '-A', '/dev/pts'])).stdout)).toEqual(['ptmx']);
    const devNull = await execIn(f, spec, ['sh', '-c', 'echo gone > /dev/null && head -c 16 /dev/zero | wc -c && head -c 4 /dev/urandom | wc -c']);
    expect(devNull).toMatchObject({ exitCode: 0, stdout: '16\n4\n' });

    // The environment is the spec's, exactly: for exec and for the command itself.
    expect(lines((await execIn(f, spec, ['env'])).stdout).sort()).toEqual(['GREETING=hello world', 'PATH=/usr/bin:/bin']);
    const environ = await execIn(f, spec, ['cat', '/proc/2/environ']);
    expect(environ.stdout.split('\0').filter(Boolean).sort()).toEqual(['GREETING=hello world', 'PATH=/usr/bin:/bin']);

    // network none: only the loopback, and it is up (a refused connection, not an unreachable net).
    expect(interfaces((await execIn(f, spec, ['cat', '/proc/net/dev'])).stdout)).toEqual(['lo']);
    const lo = await execIn(f, spec, ['bash', '-c', 'echo > /dev/tcp/127.0.0.1/9']);
    expect(lo.stderr).toMatch(/Connection refused/);
  });

  test('mounts: read-only stays read-only, read-write writes through to the host, destroy never deletes through them', async () => {
    const f = await fixture();
    const ro = join(f.hostDir, 'ro');
    const rw = join(f.hostDir, 'rw');
    await mkdir(ro);
    await mkdir(rw);
    await writeFile(join(ro, 'data.txt'), 'read me\n');
    await writeFile(join(rw, 'keep.txt'), 'keep me\n');
    await writeFile(join(f.hostDir, 'app.conf'), 'setting=1\n');
    const name = jailName('mounts');
    const { spec } = await runningJail(f, {
      name,
      command: ['sleep', '1000'],
      env: PATH_ENV,
      mounts: [
        { source: rw, target: '/srv/rw', readOnly: false },
        { source: ro, target: '/srv/ro', readOnly: true },
        { source: join(f.hostDir, 'app.conf'), target: '/etc/app.conf', readOnly: true },
      ],
    });

    expect((await execIn(f, spec, ['cat', '/srv/ro/data.txt'])).stdout).toBe('read me\n');
    const roWrite = await execIn(f, spec, ['touch', '/srv/ro/new']);
    expect(roWrite.exitCode).not.toBe(0);
    expect(roWrite.stderr).toMatch(/Read-only file system/);
    expect(existsSync(join(ro, 'new'))).toBe(false);

    expect(await execIn(f, spec, ['sh', '-c', 'echo written > /srv/rw/out'])).toMatchObject({ exitCode: 0 });
    expect(await readFile(join(rw, 'out'), 'utf8')).toBe('written\n');

    expect((await execIn(f, spec, ['cat', '/etc/app.conf'])).stdout).toBe('setting=1\n');
    expect((await execIn(f, spec, ['sh', '-c', 'echo x >> /etc/app.conf'])).exitCode).not.toBe(0);

    // network inherit: the host's interfaces.
    const hostIfs = interfaces(await readFile('/proc/net/dev', 'utf8'));
    expect(interfaces((await execIn(f, spec, ['cat', '/proc/net/dev'])).stdout)).toEqual(hostIfs);

    // Arguments are argv, never shell text: nothing here is expanded or run.
    const hostile = '$(touch /tmp/jf-pwned); `touch /tmp/jf-pwned`; rm -rf /srv/rw';
    expect((await execIn(f, spec, ['echo', hostile])).stdout).toBe(`${hostile}\n`);
    expect(existsSync('/tmp/jf-pwned')).toBe(false);
    expect(existsSync(join(rw, 'keep.txt'))).toBe(true);

    // Destroyed while running and mounted: the host's files survive.
    await f.driver.destroy(name);
    expect(await mountPointsUnder(f.dataDir)).toEqual([]);
    expect(existsSync(join(f.dataDir, 'jails', name))).toBe(false);
    expect(await readFile(join(rw, 'keep.txt'), 'utf8')).toBe('keep me\n');
    expect(await readFile(join(rw, 'out'), 'utf8')).toBe('written\n');
    expect(await readFile(join(ro, 'data.txt'), 'utf8')).toBe('read me\n');
    expect(await f.driver.list()).toEqual([]);
  });

  test('hostile mounts and names are refused: the data directory, a missing source, symlinks out of the root', async () => {
    const f = await fixture();
    const refusedMount = async (source: string, target = '/data') => {
      const spec = specOf({ name: jailName('refused'), command: ['true'], mounts: [{ source, target }] });
      await f.driver.prepare(spec);
      const err = await f.driver.mount(spec).then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(DriverStepFailed);
      expect(err).toMatchObject({ step: 'mount' });
      return (err as Error).message;
    };
    expect(await refusedMount(f.dataDir)).toMatch(/data directory/);
    expect(await refusedMount(join(f.dataDir, 'jails'))).toMatch(/data directory/);
    expect(await refusedMount(dirname(f.dataDir))).toMatch(/contains the jail driver's data directory/);
    expect(await refusedMount(join(f.hostDir, 'missing'))).toMatch(/does not exist/);

    // A symlink in a read-write mount, pointing out of the root (as a jail could leave one).
    const victim = join(f.hostDir, 'victim');
    const rw = join(f.hostDir, 'rw');
    await mkdir(victim);
    await mkdir(rw);
    await symlink(victim, join(rw, 'escape'));
    const escaping = specOf({
      name: jailName('escape'),
      command: ['true'],
      mounts: [
        { source: rw, target: '/data', readOnly: false },
        { source: f.hostDir, target: '/data/escape/evil' },
      ],
    });
    await f.driver.prepare(escaping);
    await expect(f.driver.mount(escaping)).rejects.toMatchObject({ step: 'mount', message: expect.stringMatching(/escapes the jail root/) });
    expect(await readdir(victim)).toEqual([]);

    // A running jail leaves symlinks to a host directory in its root, on the driver's disk: in
    // /root, and in place of its own /tmp. The next steps must not follow them.
    const name = jailName('plant');
    const { spec } = await runningJail(f, { name, command: ['sleep', '1000'], env: PATH_ENV });
    expect(await execIn(f, spec, ['ln', '-s', victim, '/root/evil'])).toMatchObject({ exitCode: 0 });
    await f.driver.stop(spec);
    await f.driver.unmount(spec);
    await f.driver.prepare(spec);
    const planted = specOf({ name, command: ['sleep', '1000'], env: PATH_ENV, mounts: [{ source: rw, target: '/root/evil/x' }] });
    await expect(f.driver.mount(planted)).rejects.toMatchObject({ step: 'mount', message: expect.stringMatching(/escapes the jail root/) });

    await f.driver.mount(spec);
    await f.driver.start(spec);
    const swap = await execIn(f, spec, ['sh', '-c', 'umount /tmp && rmdir /tmp && ln -s "$1" /tmp', 'sh', victim]);
    expect(swap).toMatchObject({ exitCode: 0 });
    await f.driver.stop(spec);
    await f.driver.unmount(spec);
    await expect(f.driver.prepare(spec)).rejects.toMatchObject({ step: 'prepare', message: expect.stringMatching(/tmp is not a directory/) });
    await expect(f.driver.mount(spec)).rejects.toMatchObject({ step: 'mount' });
    expect(await mountPointsUnder(victim)).toEqual([]);
    expect(await readdir(victim)).toEqual([]);

    // Names are checked before any path or command is built from them.
    await expect(f.driver.destroy('../../etc')).rejects.toBeInstanceOf(DriverStepFailed);
    await expect(f.driver.inspect('a;reboot')).rejects.toThrow(/invalid jail name/);
  });

  test('exit codes: exit 3, a missing program, a signal; the console keeps stdout and stderr', async () => {
    const f = await fixture();
    const exitOf = async (command: string[]) => {
      const name = jailName('exit');
      const { pid } = await runningJail(f, { name, command, env: PATH_ENV });
      const { exitCode } = await f.driver.wait(name, pid, new AbortController().signal);
      expect((await f.driver.inspect(name)).pid).toBeNull();
      return { exitCode, console: await consoleOf(f, name) };
    };
    const three = await exitOf(['sh', '-c', 'echo to-stdout; echo to-stderr >&2; exit 3']);
    expect(three.exitCode).toBe(3);
    expect(lines(three.console)).toEqual(['to-stdout', 'to-stderr']);

    const missing = await exitOf(['/no/such/program']);
    expect(missing.exitCode).toBe(127);
    expect(missing.console).toMatch(/jailinit: cannot run \/no\/such\/program/);

    expect((await exitOf(['sh', '-c', 'kill -USR1 $$'])).exitCode).toBe(128 + 10);
  });

  test('stop: SIGTERM reaches the command; one that ignores it is SIGKILLed after stopTimeoutMs', async () => {
    const f = await fixture();
    const polite = await runningJail(f, { name: jailName('polite'), command: ['sleep', '1000'], env: PATH_ENV, stopTimeoutMs: 5_000 });

    const aborted = new AbortController();
    const waiting = f.driver.wait(polite.spec.name, polite.pid, aborted.signal);
    aborted.abort();
    await expect(waiting).rejects.toMatchObject({ name: 'AbortError' });

    let t = Date.now();
    expect(await f.driver.stop(polite.spec)).toEqual({ exitCode: 128 + 15 });
    expect(Date.now() - t).toBeLessThan(2_000);

    const stubborn = await runningJail(f, {
      name: jailName('stubborn'),
      command: ['sh', '-c', 'trap "" TERM; echo trap set; while :; do sleep 1; done'],
      env: PATH_ENV,
      stopTimeoutMs: 700,
    });
    while (!(await consoleOf(f, stubborn.spec.name)).includes('trap set')) await new Promise((r) => setTimeout(r, 20));
    const exited = f.driver.wait(stubborn.spec.name, stubborn.pid, new AbortController().signal);
    t = Date.now();
    expect(await f.driver.stop(stubborn.spec)).toEqual({ exitCode: 128 + 9 });
    expect(Date.now() - t).toBeGreaterThanOrEqual(700);
    expect(Date.now() - t).toBeLessThan(5_000);
    expect(await exited).toEqual({ exitCode: 128 + 9 });
    expect(existsSync(`/proc/${stubborn.pid}`)).toBe(false);
    expect(await f.driver.stop(stubborn.spec)).toEqual({ exitCode: 128 + 9 });
    await expect(f.driver.exec(stubborn.spec, ['true'], EXEC)).rejects.toMatchObject({ step: 'exec', message: expect.stringMatching(/is not running/) });
  });

  test('a jail outlives the Node process that started it, and another driver adopts it', async () => {
    const f = await fixture();
    const spec = specOf({ name: jailName('orphan'), command: ['sleep', '1000'], env: PATH_ENV, hostname: 'adopted' });
    const script = join(f.hostDir, 'start-jail.mjs');
    await writeFile(
      script,
      [
        `const { LinuxDriver } = await import(${JSON.stringify(join(repo, 'services/agent/drivers/linux.ts'))});`,
        'const spec = JSON.parse(process.env.JF_SPEC);',
        'const driver = new LinuxDriver({ dataDir: process.env.JF_DATA_DIR });',
        'await driver.prepare(spec);',
        'await driver.mount(spec);',
        'const { pid } = await driver.start(spec);',
        'console.log(JSON.stringify({ pid, starter: process.pid }));',
      ].join('\n'),
    );
    const starter = await execa(process.execPath, ['--import', join(repo, 'test/support/ts-loader.mjs'), script], {
      env: { JF_SPEC: JSON.stringify(spec), JF_DATA_DIR: f.dataDir },
      timeout: 30_000,
    });
    const { pid, starter: starterPid } = JSON.parse(starter.stdout) as { pid: number; starter: number };
    expect(existsSync(`/proc/${starterPid}`)).toBe(false);

    // Still running, in a session of its own (not the starter's, not ours).
    const unsharePid = Number((await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1].split(' ')[1]);
    const unshareStat = (await readFile(`/proc/${unsharePid}/stat`, 'utf8')).split(') ')[1].split(' ');
    expect(Number(unshareStat[3])).toBe(unsharePid); // session id
    expect(Number(unshareStat[1])).not.toBe(starterPid); // parent

    const adopter = f.driver; // never started anything: it only has the data directory
    expect(await adopter.list()).toEqual([spec.name]);
    expect(await adopter.inspect(spec.name)).toEqual({ name: spec.name, prepared: true, mounted: true, pid });
    expect((await adopter.exec(spec, ['uname', '-n'], EXEC)).stdout).toBe('adopted\n');

    const aborted = new AbortController();
    const abandoned = adopter.wait(spec.name, pid, aborted.signal);
    aborted.abort();
    await expect(abandoned).rejects.toMatchObject({ name: 'AbortError' });

    const exited = adopter.wait(spec.name, pid, new AbortController().signal);
    expect(await adopter.start(spec)).toEqual({ pid }); // already running: not started twice
    expect(await adopter.stop(spec)).toEqual({ exitCode: 128 + 15 });
    expect(await exited).toEqual({ exitCode: 128 + 15 });
  });

  test('every step can be repeated: prepare, mount, start, stop, unmount, destroy', async () => {
    const f = await fixture();
    const name = jailName('again');
    const spec = specOf({ name, command: ['sleep', '1000'], env: PATH_ENV, mounts: [{ source: f.hostDir, target: '/srv/host' }] });
    const root = join(f.dataDir, 'jails', name, 'root');

    await f.driver.prepare(spec);
    const afterPrepare = await mountPointsUnder(root);
    await f.driver.prepare(spec);
    expect(await mountPointsUnder(root)).toEqual(afterPrepare);
    expect((await lstat(join(root, 'bin'))).isSymbolicLink() || afterPrepare.includes(join(root, 'bin'))).toBe(true);

    await f.driver.mount(spec);
    const afterMount = await mountPointsUnder(root);
    await f.driver.mount(spec);
    expect(await mountPointsUnder(root)).toEqual(afterMount);
    expect(afterMount).toEqual(expect.arrayContaining([root, join(root, 'usr'), join(root, 'dev'), join(root, 'dev/null'), join(root, 'tmp'), join(root, 'srv/host')]));

    const { pid } = await f.driver.start(spec);
    expect(await f.driver.start(spec)).toEqual({ pid });
    expect(await f.driver.stop(spec)).toEqual({ exitCode: 143 });
    expect(await f.driver.stop(spec)).toEqual({ exitCode: 143 });

    await f.driver.unmount(spec);
    await f.driver.unmount(spec);
    expect(await mountPointsUnder(join(f.dataDir, 'jails', name))).toEqual([]);
    expect(await f.driver.inspect(name)).toEqual({ name, prepared: false, mounted: false, pid: null });
    expect(existsSync(join(root, 'etc', 'passwd'))).toBe(true); // the root's files are kept

    // From stopped back to running.
    await f.driver.prepare(spec);
    await f.driver.mount(spec);
    const again = await f.driver.start(spec);
    expect((await f.driver.exec(spec, ['cat', '/proc/1/cmdline'], EXEC)).stdout).toMatch(/^jailinit/);
    expect(again.pid).not.toBe(pid);

    await f.driver.destroy(name);
    await f.driver.destroy(name);
    await f.driver.destroy(jailName('never-made'));
    expect(await f.driver.list()).toEqual([]);
    expect(await mountPointsUnder(f.dataDir)).toEqual([]);
  });
});
