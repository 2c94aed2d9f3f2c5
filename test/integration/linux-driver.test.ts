// The linux driver against the real kernel, as root: a jail sees only itself (its own pids,
// hostname, /etc, /dev, environment and network), the host's secrets and the driver's data stay
// out of it, its mounts do what they say and hostile ones are refused, exit codes and stop
// behave like jail(8)'s, a jail outlives the process that started it, and every step can be
// repeated. Each test has its own data directory and leaves nothing mounted behind it.
import { afterEach, beforeAll, describe, expect, test } from '@jest/globals';
import { existsSync, statSync } from 'node:fs';
import { copyFile, lstat, mkdir, mkdtemp, readFile, readdir, rename, rm, rmdir, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { jailSpecSchema, type JailSpec, type JailSpecInput } from '../../contracts/index.js';
import { DriverStepFailed } from '../../services/agent/drivers/driver.js';
import { LinuxDriver } from '../../services/agent/drivers/linux.js';
import { detectCgroupLayout, type CgroupController } from '../../services/agent/drivers/cgroup-limits.js';
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

async function fixture(options: { allowMountSources?: (hostDir: string) => string[] } = {}): Promise<Fixture> {
  const dataDir = await mkdtemp('/tmp/jf-linux-data-');
  const hostDir = await mkdtemp('/tmp/jf-linux-host-');
  const allowMountSources = options.allowMountSources?.(hostDir);
  for (const dir of allowMountSources ?? []) await mkdir(dir, { recursive: true });
  const f = { dataDir, hostDir, driver: new LinuxDriver({ dataDir, allowMountSources }) };
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

/**
 * The capabilities a jail keeps (numbers from linux/capability.h): Docker's default set less
 * mknod and sys_chroot (a chroot jail with CAP_SYS_CHROOT can chroot its way out).
 */
const KEPT_CAPS: Record<string, number> = {
  chown: 0, dac_override: 1, fowner: 3, fsetid: 4, kill: 5, setgid: 6, setuid: 7, setpcap: 8,
  net_bind_service: 10, net_raw: 13, audit_write: 29, setfcap: 31,
};
const KEPT_MASK = Object.values(KEPT_CAPS).reduce((mask, bit) => mask | (1n << BigInt(bit)), 0n);
/** The capability and no_new_privs lines of a /proc/<pid>/status. */
function privsOf(status: string) {
  const field = (name: string) => {
    const value = new RegExp(`^${name}:\\s*(\\S+)$`, 'm').exec(status)?.[1];
    if (value === undefined) throw new Error(`no ${name} in ${status}`);
    return value;
  };
  const caps = (name: string) => `0x${BigInt(`0x${field(name)}`).toString(16)}`;
  return { CapInh: caps('CapInh'), CapPrm: caps('CapPrm'), CapEff: caps('CapEff'), CapBnd: caps('CapBnd'), CapAmb: caps('CapAmb'), NoNewPrivs: field('NoNewPrivs') };
}
/** What privsOf() gives for a process of a jail: the kept set (of what this host has), no more. */
async function jailPrivs() {
  const hostBounding = BigInt(`0x${/^CapBnd:\s*(\S+)$/m.exec(await readFile('/proc/self/status', 'utf8'))![1]}`);
  const kept = `0x${(KEPT_MASK & hostBounding).toString(16)}`;
  return { CapInh: '0x0', CapPrm: kept, CapEff: kept, CapBnd: kept, CapAmb: '0x0', NoNewPrivs: '1' };
}
/** Proc paths a jail sees read-only, and those it sees as /dev/null (when the kernel has them). */
const READONLY_PROC = ['/proc/sys', '/proc/sysrq-trigger', '/proc/irq', '/proc/bus', '/proc/fs'];
const MASKED_PROC = ['/proc/kcore', '/proc/keys', '/proc/timer_list', '/proc/sched_debug', '/proc/kmsg'];
/**
 * Escape and reconfiguration attempts, run by `sh -c PROBES sh TAG` inside a jail with network
 * none (so a broken hardening changes only the jail's own network, uts and mounts; the sysrq
 * key is h, help). One line per probe: "<probe>: allowed" or "<probe>: denied: <first error line>".
 */
const PROBES = [
  'probe() { name=$1; shift; if err=$("$@" 2>&1 >/dev/null); then echo "$name: allowed"; else echo "$name: denied: $(echo "$err" | head -n 1)"; fi; }',
  'mkdir -p /tmp/m-$1',
  'probe mount mount -t tmpfs x /tmp/m-$1',
  'probe mknod mknod /tmp/blk-$1 b 8 0',
  'probe chroot /usr/sbin/chroot / /bin/true',
  'probe sysrq sh -c "echo h > /proc/sysrq-trigger"',
  'probe sysctl sh -c "echo renamed > /proc/sys/kernel/hostname"',
  'probe sethostname hostname renamed',
  'probe netadmin ip link set lo down',
  'probe umount umount /proc/sys',
  'probe remount mount -o remount,bind,rw /proc/sys',
  'echo probes done',
].join('\n');
const probeResults = (out: string) =>
  Object.fromEntries(lines(out).filter((l) => /^\w+: (allowed|denied)/.test(l)).map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 2)]));
const DENIED = {
  mount: expect.stringMatching(/^denied: .*(permission denied|not permitted)/i),
  mknod: expect.stringMatching(/^denied: .*Operation not permitted/),
  chroot: expect.stringMatching(/^denied: .*Operation not permitted/),
  // A kernel without CONFIG_MAGIC_SYSRQ has no /proc/sysrq-trigger at all.
  sysrq: expect.stringMatching(existsSync('/proc/sysrq-trigger') ? /^denied: .*Read-only file system/ : /^denied: .*(nonexistent|No such file)/),
  sysctl: expect.stringMatching(/^denied: .*Read-only file system/),
  sethostname: expect.stringMatching(/^denied: .*(must be root|not permitted)/i),
  netadmin: expect.stringMatching(/^denied: .*Operation not permitted/),
  umount: expect.stringMatching(/^denied: .*(must be superuser|permission denied|not permitted)/i),
  remount: expect.stringMatching(/^denied: .*(permission denied|not permitted)/i),
};
async function consoleUntil(f: Fixture, name: string, marker: string): Promise<string> {
  for (const until = Date.now() + 20_000; ; await new Promise((r) => setTimeout(r, 50))) {
    const text = await consoleOf(f, name);
    if (text.includes(marker) || Date.now() > until) return text;
  }
}

/** The cgroup layout, read here from the mount table (the same pure parser the driver uses). */
const cgroupLayout = async () => detectCgroupLayout(await readFile('/proc/self/mountinfo', 'utf8'));
type CgroupPaths = Record<CgroupController, string>;
/** Every pid in the jail's cgroup (of each hierarchy: on v1 they must agree). */
async function cgroupPids(paths: CgroupPaths): Promise<number[]> {
  const sets = await Promise.all([...new Set(Object.values(paths))].map(async (d) => lines(await readFile(join(d, 'cgroup.procs'), 'utf8')).map(Number).sort()));
  for (const other of sets.slice(1)) expect(other).toEqual(sets[0]);
  return sets[0] ?? [];
}
/** A file of the jail's cgroup by its v1 or v2 name, trimmed. */
async function cgroupFile(paths: CgroupPaths, controller: CgroupController, v1: string, v2: string): Promise<string> {
  const { version } = await cgroupLayout();
  return (await readFile(join(paths[controller], version === 1 ? v1 : v2), 'utf8')).trim();
}
/** This driver's cgroup directories (`jailfleet/<scope>` in each hierarchy) that still exist. */
async function cgroupScopesLeft(driver: LinuxDriver): Promise<string[]> {
  const paths = await driver.cgroupPaths('probe');
  return [...new Set(Object.values(paths).map((p) => dirname(p)))].filter((d) => existsSync(d));
}
/** Last resort after a failed test: SIGKILL what is left in a scope's cgroups and remove them. */
async function forceRemoveCgroups(scope: string): Promise<void> {
  for (const entry of await readdir(scope, { withFileTypes: true })) {
    if (!entry.isDirectory()) continue;
    const dir = join(scope, entry.name);
    for (const pid of lines(await readFile(join(dir, 'cgroup.procs'), 'utf8'))) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // gone
      }
    }
    for (let tries = 0; tries < 100 && existsSync(dir); tries++) await rmdir(dir).catch(() => new Promise((r) => setTimeout(r, 50)));
  }
  await rmdir(scope).catch(() => undefined);
  await rmdir(dirname(scope)).catch(() => undefined);
}

beforeAll(async () => {
  if (!isRoot) return;
  // scripts/setup.mjs builds the jail init; build it here too when it is missing or stale, so
  // this file also runs when the rest of the build is broken.
  const src = join(repo, 'native', 'jailinit.c');
  const bin = join(repo, 'dist', 'native', 'jailinit');
  if (!existsSync(bin) || statSync(bin).mtimeMs < statSync(src).mtimeMs) {
    await mkdir(dirname(bin), { recursive: true });
    await execa('cc', ['-O2', '-Wall', '-Werror', '-o', bin, src, '-lseccomp']);
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
    const cgroups = await cgroupScopesLeft(driver);
    if (cgroups.length) {
      problems.push(`cgroups left after destroy: ${cgroups.join(', ')}`);
      for (const scope of cgroups) await forceRemoveCgroups(scope);
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
    // A jail has no CAP_SYS_ADMIN any more, so it cannot unmount its /tmp to swap it...
    const swap = await execIn(f, spec, ['sh', '-c', 'umount /tmp && rmdir /tmp && ln -s "$1" /tmp', 'sh', victim]);
    expect(swap.exitCode).not.toBe(0);
    expect(swap.stderr).toMatch(/umount: \/tmp: must be superuser|permission denied|not permitted/i);
    await f.driver.stop(spec);
    await f.driver.unmount(spec);
    // ...but the driver must not rely on that: leave the same swap in the root from the host.
    const root = join(f.dataDir, 'jails', name, 'root');
    await rmdir(join(root, 'tmp'));
    await symlink(victim, join(root, 'tmp'));
    await expect(f.driver.prepare(spec)).rejects.toMatchObject({ step: 'prepare', message: expect.stringMatching(/tmp is not a directory/) });
    await expect(f.driver.mount(spec)).rejects.toMatchObject({ step: 'mount' });
    expect(await mountPointsUnder(victim)).toEqual([]);
    expect(await readdir(victim)).toEqual([]);

    // Names are checked before any path or command is built from them.
    await expect(f.driver.destroy('../../etc')).rejects.toBeInstanceOf(DriverStepFailed);
    await expect(f.driver.inspect('a;reboot')).rejects.toThrow(/invalid jail name/);
  });

  test('mount sources are a host policy: outside the allowed prefixes or through a symlink, refused with the reason', async () => {
    const f = await fixture({ allowMountSources: (host) => [join(host, 'allowed')] });
    const allowed = join(f.hostDir, 'allowed');
    await mkdir(join(allowed, 'www'), { recursive: true });
    await writeFile(join(allowed, 'www', 'index.html'), 'hello\n');
    await mkdir(join(f.hostDir, 'secret'));
    await writeFile(join(f.hostDir, 'secret', 'key'), 'secret\n');
    await symlink(join(f.hostDir, 'secret'), join(allowed, 'link'));
    const refusal = async (source: string) => {
      const spec = specOf({ name: jailName('policy'), command: ['true'], mounts: [{ source, target: '/data' }] });
      await f.driver.prepare(spec);
      return f.driver.mount(spec).then(() => null, (e: unknown) => e);
    };
    expect(await refusal(join(f.hostDir, 'secret'))).toMatchObject({ step: 'mount', message: expect.stringContaining(`refused: the source is outside the mount sources this host allows (${allowed}: serve agent --allow-mount-source)`) });
    expect(await refusal(`${allowed}-not`)).toMatchObject({ message: expect.stringMatching(/outside the mount sources this host allows/) });
    expect(await refusal(join(allowed, 'link'))).toMatchObject({ message: expect.stringContaining(`the source passes through the symlink ${join(allowed, 'link')}`) });
    expect(await refusal(join(allowed, 'link', 'key'))).toMatchObject({ message: expect.stringMatching(/passes through the symlink/) });

    const { spec } = await runningJail(f, { name: jailName('allowed'), command: ['sleep', '1000'], env: PATH_ENV, mounts: [{ source: join(allowed, 'www'), target: '/srv/www' }] });
    expect(await execIn(f, spec, ['cat', '/srv/www/index.html'])).toMatchObject({ exitCode: 0, stdout: 'hello\n' });
    expect((await execIn(f, spec, ['touch', '/srv/www/x'])).stderr).toMatch(/Read-only file system/);

    const none = await fixture({ allowMountSources: () => [] });
    const spec2 = specOf({ name: jailName('nomounts'), command: ['true'], mounts: [{ source: allowed, target: '/data' }] });
    await none.driver.prepare(spec2);
    await expect(none.driver.mount(spec2)).rejects.toMatchObject({ message: expect.stringContaining('this host allows no mount sources (serve agent --allow-mount-source PREFIX)') });
  });

  test('a source swapped for a symlink between the check and the mount cannot redirect it: the start fails, nothing of the target shows', async () => {
    const f = await fixture({ allowMountSources: (host) => [join(host, 'allowed')] });
    const allowed = join(f.hostDir, 'allowed');
    await mkdir(join(allowed, 'data'), { recursive: true });
    await writeFile(join(allowed, 'data', 'mine'), 'mine\n');
    await mkdir(join(f.hostDir, 'secret'));
    await writeFile(join(f.hostDir, 'secret', 'key'), 'secret\n');
    const name = jailName('swapped');
    const spec = specOf({ name, command: ['cat', '/data/key'], env: PATH_ENV, mounts: [{ source: join(allowed, 'data'), target: '/data' }] });
    await f.driver.prepare(spec);
    await f.driver.mount(spec); // checked: a real directory under the prefix
    // the swap, as a jail with a writable mount of the prefix could make it
    await rename(join(allowed, 'data'), join(allowed, 'data-old'));
    await symlink(join(f.hostDir, 'secret'), join(allowed, 'data'));
    const failed = await f.driver.start(spec).then(() => null, (e: unknown) => e);
    expect(failed).toBeInstanceOf(DriverStepFailed);
    expect(failed).toMatchObject({ step: 'start', message: expect.stringMatching(/cannot resolve data beneath .*allowed without a symlink: Too many levels of symbolic links/) });
    expect(await consoleOf(f, name)).not.toContain('secret');

    // a parent swapped for a symlink is refused the same way
    await rm(join(allowed, 'data'));
    await mkdir(join(allowed, 'deep', 'data'), { recursive: true });
    const deep = specOf({ name: jailName('swapped-parent'), command: ['cat', '/data/key'], env: PATH_ENV, mounts: [{ source: join(allowed, 'deep', 'data'), target: '/data' }] });
    await f.driver.prepare(deep);
    await f.driver.mount(deep);
    await rename(join(allowed, 'deep'), join(allowed, 'deep-old'));
    await mkdir(join(f.hostDir, 'secret-parent', 'data'), { recursive: true });
    await writeFile(join(f.hostDir, 'secret-parent', 'data', 'key'), 'secret\n');
    await symlink(join(f.hostDir, 'secret-parent'), join(allowed, 'deep'));
    await expect(f.driver.start(deep)).rejects.toMatchObject({ step: 'start', message: expect.stringMatching(/without a symlink/) });
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

    // a command that cannot be exec'd fails the start step itself, with the reason
    const name = jailName('missing');
    const spec = specOf({ name, command: ['/no/such/program'], env: PATH_ENV });
    await f.driver.prepare(spec);
    await f.driver.mount(spec);
    const failed = await f.driver.start(spec).catch((err: unknown) => err);
    expect(failed).toBeInstanceOf(DriverStepFailed);
    expect(failed).toMatchObject({ step: 'start', message: `start of jail ${name} failed: cannot run /no/such/program: No such file or directory` });
    await new Promise((r) => setTimeout(r, 300));
    expect((await f.driver.inspect(name)).pid).toBeNull();
    expect(await consoleOf(f, name)).toMatch(/jailinit: cannot run \/no\/such\/program/);

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
    expect(await exited).toEqual({ exitCode: 128 + 9, outOfMemory: false }); // SIGKILLed, but not for memory
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
    // the same data directory: the same cgroup, with the jail's init in it
    expect(await cgroupPids(await adopter.cgroupPaths(spec.name))).toContain(pid);
    expect((await adopter.exec(spec, ['uname', '-n'], EXEC)).stdout).toBe('adopted\n');

    const aborted = new AbortController();
    const abandoned = adopter.wait(spec.name, pid, aborted.signal);
    aborted.abort();
    await expect(abandoned).rejects.toMatchObject({ name: 'AbortError' });

    const exited = adopter.wait(spec.name, pid, new AbortController().signal);
    expect(await adopter.start(spec)).toEqual({ pid }); // already running: not started twice
    expect(await adopter.stop(spec)).toEqual({ exitCode: 128 + 15 });
    expect(await exited).toEqual({ exitCode: 128 + 15, outOfMemory: false });
  });

  test('every step can be repeated: prepare, mount, start, stop, unmount, destroy', async () => {
    const f = await fixture();
    const name = jailName('again');
    const spec = specOf({ name, command: ['sleep', '1000'], env: PATH_ENV, mounts: [{ source: f.hostDir, target: '/srv/host' }] });
    const root = join(f.dataDir, 'jails', name, 'root');

    // prepare and mount make files and a plan, and mount nothing on the host
    await f.driver.prepare(spec);
    await f.driver.prepare(spec);
    expect((await lstat(join(root, 'bin'))).isSymbolicLink() || (await lstat(join(root, 'bin'))).isDirectory()).toBe(true);
    await f.driver.mount(spec);
    await f.driver.mount(spec);
    expect(await mountPointsUnder(f.dataDir)).toEqual([]);
    expect(await f.driver.inspect(name)).toEqual({ name, prepared: true, mounted: true, pid: null });

    const { pid } = await f.driver.start(spec);
    expect(await f.driver.start(spec)).toEqual({ pid });
    expect(await f.driver.stop(spec)).toEqual({ exitCode: 143 });
    expect(await f.driver.stop(spec)).toEqual({ exitCode: 143 });

    await f.driver.unmount(spec);
    await f.driver.unmount(spec);
    expect(await mountPointsUnder(join(f.dataDir, 'jails', name))).toEqual([]);
    // the root's files are kept (prepared), its mount plan is gone (start needs mount again)
    expect(await f.driver.inspect(name)).toEqual({ name, prepared: true, mounted: false, pid: null });
    await expect(f.driver.start(spec)).rejects.toMatchObject({ step: 'start', message: expect.stringMatching(/not mounted/) });
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

  test('capabilities: the command, its init and exec keep only the kept set, with no_new_privs', async () => {
    expect(KEPT_MASK.toString(16)).toBe('a00025fb'); // Docker's 0xa80425fb less mknod (27) and sys_chroot (18)
    const expected = await jailPrivs();
    const f = await fixture();
    const name = jailName('caps');
    // The command reads its own status (the shell, pid 2, through a redirection it opens itself).
    const { spec } = await runningJail(f, {
      name,
      command: ['sh', '-c', 'while IFS= read -r l; do case $l in Cap*|NoNewPrivs*) echo "$l";; esac; done < /proc/$$/status; echo ready; exec sleep 1000'],
      env: PATH_ENV,
    });
    const out = await consoleUntil(f, name, 'ready');
    expect(out).toContain('ready');
    expect(privsOf(out)).toEqual(expected);

    expect(privsOf((await execIn(f, spec, ['cat', '/proc/2/status'])).stdout)).toEqual(expected); // the command, now sleep
    expect(privsOf((await execIn(f, spec, ['cat', '/proc/self/status'])).stdout)).toEqual(expected); // exec's own
    const init = privsOf((await execIn(f, spec, ['cat', '/proc/1/status'])).stdout);
    expect(init).toEqual(expected);

    // The init is not dumpable: a command with the same capabilities cannot reach its open
    // files (the exit-code file on the host is one) nor ptrace it; the command itself can be.
    const initFds = await execIn(f, spec, ['ls', '-l', '/proc/1/fd/']);
    expect(initFds.exitCode).not.toBe(0);
    expect(initFds.stderr).toMatch(/cannot read symbolic link '\/proc\/1\/fd\/\d+': Permission denied/);
    expect(await execIn(f, spec, ['cat', '/proc/1/environ'])).toMatchObject({ exitCode: 1, stderr: expect.stringMatching(/Permission denied/) });
    expect(await execIn(f, spec, ['ls', '-l', '/proc/2/fd/'])).toMatchObject({ exitCode: 0, stdout: expect.stringMatching(/ -> /) });
  });

  test('a jail cannot mount, mknod, chroot, unmount, write kernel knobs, reconfigure its network or read masked kernel files', async () => {
    const f = await fixture();
    const name = jailName('probes');
    const { spec } = await runningJail(f, {
      name,
      command: ['sh', '-c', `${PROBES}\nexec sleep 1000`, 'sh', 'cmd'],
      env: PATH_ENV,
      hostname: 'probed',
      network: 'none',
    });
    const fromCommand = await consoleUntil(f, name, 'probes done');
    expect(fromCommand).toContain('probes done');
    expect(probeResults(fromCommand)).toEqual(DENIED);
    const fromExec = await execIn(f, spec, ['sh', '-c', PROBES, 'sh', 'exec']);
    expect(fromExec.stdout).toContain('probes done');
    expect(probeResults(fromExec.stdout)).toEqual(DENIED);

    // Nothing changed: no node, no mount, same hostname, lo still up.
    expect((await execIn(f, spec, ['ls', '-A', '/tmp'])).stdout.split('\n').filter((l) => l.startsWith('blk-'))).toEqual([]);
    expect((await execIn(f, spec, ['cat', '/proc/self/mountinfo'])).stdout).not.toMatch(/ \/tmp\/m-/);
    expect((await execIn(f, spec, ['uname', '-n'])).stdout).toBe('probed\n');
    expect((await execIn(f, spec, ['bash', '-c', 'echo > /dev/tcp/127.0.0.1/9'])).stderr).toMatch(/Connection refused/);

    // proc: the kernel knobs are read-only mounts, the kernel-information files are /dev/null.
    const mountinfo = lines((await execIn(f, spec, ['cat', '/proc/self/mountinfo'])).stdout).map((l) => l.split(' '));
    const readonly = READONLY_PROC.filter((p) => existsSync(p));
    expect(readonly).toContain('/proc/sys');
    for (const p of readonly) {
      const options = mountinfo.filter((m) => m[4] === p).at(-1)?.[5];
      expect({ path: p, options }).toEqual({ path: p, options: expect.stringMatching(/^ro,/) });
    }
    const masked = MASKED_PROC.filter((p) => existsSync(p));
    expect(masked.length).toBeGreaterThan(0);
    const types = await execIn(f, spec, ['stat', '-c', '%n %F %t:%T', ...masked]);
    expect(lines(types.stdout)).toEqual(masked.map((p) => `${p} character special file 1:3`));
    const readable = masked.filter((p) => p !== '/proc/kmsg'); // the real one would block
    expect((await execIn(f, spec, ['sh', '-c', 'cat "$@" | wc -c', 'sh', ...readable])).stdout.trim()).toBe('0');
    // Still readable where it should be.
    expect((await execIn(f, spec, ['cat', '/proc/sys/kernel/hostname'])).stdout).toBe('probed\n');
  });

  test('what the kept capabilities are for still works: chown, chmod, write as root, setuid, kill, a port below 1024', async () => {
    const f = await fixture();
    const name = jailName('works');
    const script = [
      'set -e',
      'f=/tmp/owned-$1',
      'echo mine > $f',
      'chown 65534:65534 $f',
      'chmod 600 $f',
      'echo root-writes >> $f', // dac_override: root is not the owner any more
      'stat -c "owner %u:%g %a" $f',
      'cat $f',
      'setpriv --reuid 65534 --regid 65534 --clear-groups id -u',
      'setpriv --reuid 65534 --regid 65534 --clear-groups id -g',
      // kill: a process of another uid (once it has switched), which takes CAP_KILL.
      'setpriv --reuid 65534 --regid 65534 --clear-groups sleep 100 & p=$!',
      'until grep -q "^Uid:[[:space:]]*65534[[:space:]]" /proc/$p/status; do sleep 0.05; done',
      'kill $p',
      'wait $p 2>/dev/null || echo "killed $?"',
      'perl -MIO::Socket::INET -e \'IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => 80, Listen => 1, ReuseAddr => 1) or die "bind: $!\\n"; print "bound 80\\n"\'',
      'echo all done',
    ].join('\n');
    const expected = ['owner 65534:65534 600', 'mine', 'root-writes', '65534', '65534', `killed ${128 + 15}`, 'bound 80', 'all done'];
    const { spec } = await runningJail(f, { name, command: ['sh', '-c', `${script}\nexec sleep 1000`, 'sh', 'cmd'], env: PATH_ENV, network: 'none' });
    expect(lines(await consoleUntil(f, name, 'all done'))).toEqual(expected);
    const viaExec = await execIn(f, spec, ['sh', '-c', script, 'sh', 'exec']);
    expect({ exitCode: viaExec.exitCode, stderr: viaExec.stderr, stdout: lines(viaExec.stdout) }).toEqual({ exitCode: 0, stderr: '', stdout: expected });
  });

  test('a jail that cannot be hardened never runs its command: its start fails, exit 126', async () => {
    const f = await fixture();
    const name = jailName('unhardened');
    // A regular file in place of /dev/null: proc cannot be masked with it.
    await writeFile(join(f.hostDir, 'not-null'), '');
    const failed = await runningJail(f, {
      name,
      command: ['sh', '-c', 'echo command ran'],
      env: PATH_ENV,
      mounts: [{ source: join(f.hostDir, 'not-null'), target: '/dev/null' }],
    }).catch((err: unknown) => err);
    expect(failed).toBeInstanceOf(DriverStepFailed);
    expect(failed).toMatchObject({ step: 'start', message: expect.stringMatching(/\/dev\/null in the jail is not the null device/) });
    await new Promise((r) => setTimeout(r, 300));
    expect((await readFile(join(f.dataDir, 'jails', name, 'exit-code'), 'utf8')).trim()).toBe('126');
    const out = await consoleOf(f, name);
    expect(out).toMatch(/jailinit: \/dev\/null in the jail is not the null device/);
    expect(out).not.toContain('command ran');
  });

  test('exec never runs a host tool that a mount put in the jail (no setpriv, no nsenter inside)', async () => {
    const f = await fixture();
    const fake = join(f.hostDir, 'fake-setpriv');
    await copyFile('/usr/bin/false', fake);
    const { spec } = await runningJail(f, {
      name: jailName('fakesetpriv'),
      command: ['sleep', '1000'],
      env: PATH_ENV,
      mounts: [{ source: fake, target: '/usr/bin/setpriv' }],
    });
    expect(await execIn(f, spec, ['id', '-u'])).toMatchObject({ exitCode: 0, stdout: '0\n' });
  });

  test('seccomp: the command, its init and exec run under the default filter; no user namespace', async () => {
    const f = await fixture();
    const name = jailName('seccomp');
    const { spec } = await runningJail(f, { name, command: ['sleep', '1000'], env: PATH_ENV, network: 'none' });
    const seccompOf = async (pid: string) => /^Seccomp:\s*(\d)$/m.exec((await execIn(f, spec, ['cat', `/proc/${pid}/status`])).stdout)?.[1];
    // 2: SECCOMP_MODE_FILTER
    expect({ init: await seccompOf('1'), command: await seccompOf('2'), exec: await seccompOf('self') }).toEqual({ init: '2', command: '2', exec: '2' });
    const userns = await execIn(f, spec, ['unshare', '-U', 'true']);
    expect(userns).toMatchObject({ exitCode: 1, stderr: expect.stringMatching(/unshare failed: Operation not permitted/) });
  });

  test('seccomp: unconfined is the spec\'s choice, for the jail and its exec alike', async () => {
    const f = await fixture();
    const { spec } = await runningJail(f, { name: jailName('unconfined'), command: ['sleep', '1000'], env: PATH_ENV, security: { seccomp: 'unconfined' } });
    const seccompOf = async (pid: string) => /^Seccomp:\s*(\d)$/m.exec((await execIn(f, spec, ['cat', `/proc/${pid}/status`])).stdout)?.[1];
    expect({ init: await seccompOf('1'), command: await seccompOf('2'), exec: await seccompOf('self') }).toEqual({ init: '0', command: '0', exec: '0' });
    // the capabilities are cut all the same
    expect(privsOf((await execIn(f, spec, ['cat', '/proc/self/status'])).stdout)).toEqual(await jailPrivs());
  });

  test('limits: a jail runs in a cgroup of its own with its memory, cpu and process limits; destroy removes it', async () => {
    const f = await fixture();
    const { spec, pid } = await runningJail(f, {
      name: jailName('limited'),
      command: ['sleep', '1000'],
      env: PATH_ENV,
      resources: { cpu: 0.5, memoryMB: 48, maxProcs: 20 },
    });
    const paths = await f.driver.cgroupPaths(spec.name);
    const { version } = await cgroupLayout();
    for (const dir of Object.values(paths)) expect(dir).toMatch(new RegExp(`/jailfleet/data-[0-9a-f]{12}/${spec.name}$`));
    expect(await cgroupFile(paths, 'memory', 'memory.limit_in_bytes', 'memory.max')).toBe(String(48 * 1024 * 1024));
    if (existsSync(join(paths.memory, version === 1 ? 'memory.memsw.limit_in_bytes' : 'memory.swap.max'))) {
      expect(await cgroupFile(paths, 'memory', 'memory.memsw.limit_in_bytes', 'memory.swap.max')).toBe(version === 1 ? String(48 * 1024 * 1024) : '0');
    }
    if (version === 1) {
      expect(await cgroupFile(paths, 'cpu', 'cpu.cfs_quota_us', '')).toBe('50000');
      expect(await cgroupFile(paths, 'cpu', 'cpu.cfs_period_us', '')).toBe('100000');
    } else {
      expect(await cgroupFile(paths, 'cpu', '', 'cpu.max')).toBe('50000 100000');
    }
    expect(await cgroupFile(paths, 'pids', 'pids.max', 'pids.max')).toBe('20');

    // the init and the command (forked after the start barrier) are in it, and nothing else
    const command = Number((await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8')).trim());
    expect(await cgroupPids(paths)).toEqual([pid, command].sort());

    // a restart gets a fresh cgroup with the same limits; destroy removes it, and the scope with it
    await f.driver.stop(spec);
    const again = await f.driver.start(spec);
    expect(await cgroupPids(paths)).toContain(again.pid);
    await f.driver.destroy(spec.name);
    for (const dir of Object.values(paths)) expect(existsSync(dir)).toBe(false);
    expect(await cgroupScopesLeft(f.driver)).toEqual([]);
  });

  test('a memory hog in a 64 MB jail is killed by the kernel and reported as out of memory; its neighbour runs on', async () => {
    const f = await fixture();
    const neighbour = await runningJail(f, { name: jailName('neighbour'), command: ['sleep', '1000'], env: PATH_ENV, resources: { memoryMB: 64 } });
    const hog = await runningJail(f, {
      name: jailName('hog'),
      // 200 MB in one string (its size an argument: perl would fold a constant one at compile
      // time, before the first print), then a pause that the kernel's kill cuts short
      command: ['/usr/bin/perl', '-e', '$| = 1; print "allocating\n"; $x = "x" x ($ARGV[0] * 1024 * 1024); print "survived\n"; sleep 30', '200'],
      env: PATH_ENV,
      // a whole core: at the default 0.1 the kernel's reclaim before the kill takes seconds
      resources: { memoryMB: 64, cpu: 1 },
    });
    const t = Date.now();
    const exit = await f.driver.wait(hog.spec.name, hog.pid, new AbortController().signal);
    const ms = Date.now() - t;
    console.log(`memory hog: killed and reported out of memory ${ms} ms after its start returned`);
    expect(exit).toEqual({ exitCode: 137, outOfMemory: true });
    expect(ms).toBeLessThan(10_000);
    const out = await consoleOf(f, hog.spec.name);
    expect(out).toContain('allocating');
    expect(out).not.toContain('survived');

    expect((await f.driver.inspect(neighbour.spec.name)).pid).toBe(neighbour.pid);
    expect((await execIn(f, neighbour.spec, ['echo', 'still here'])).stdout).toBe('still here\n');

    // a driver that did not start it (an agent after a restart) reads the same verdict
    const adopter = new LinuxDriver({ dataDir: f.dataDir });
    expect(await adopter.wait(hog.spec.name, hog.pid, new AbortController().signal)).toEqual({ exitCode: 137, outOfMemory: true });
  });

  test('a fork bomb stops at maxProcs; the jail and the host go on', async () => {
    const f = await fixture();
    // bounded on purpose (100 forks): without a working limit this must not hurt the host; perl
    // (unlike sh) goes on after a failed fork and counts them
    const { spec, pid } = await runningJail(f, {
      name: jailName('forker'),
      command: [
        '/usr/bin/perl',
        '-e',
        '$| = 1; for (1 .. 100) { my $p = fork(); if (!defined $p) { $failed++ } elsif ($p == 0) { sleep 1000; exit 0 } } print "forks failed: $failed\n"; sleep 1000',
      ],
      env: PATH_ENV,
      resources: { maxProcs: 16 },
    });
    const out = await consoleUntil(f, spec.name, 'forks failed');
    // init, perl and 14 children make 16: the other 86 forks were refused
    expect(out).toBe('forks failed: 86\n');
    const paths = await f.driver.cgroupPaths(spec.name);
    expect((await cgroupPids(paths)).length).toBe(16);
    expect(Number(await cgroupFile(paths, 'pids', 'pids.current', 'pids.current'))).toBe(16);
    expect((await f.driver.inspect(spec.name)).pid).toBe(pid);
    expect(await f.driver.stop(spec)).toEqual({ exitCode: 143 });
  });
  test("a jail's mounts live in its own namespace: the host's mount table is the same with jails running", async () => {
    const f = await fixture();
    const src = join(f.hostDir, 'src');
    await mkdir(src);
    await writeFile(join(src, 'in.txt'), 'inside\n');
    const hostMounts = async () => (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').filter(Boolean).length;
    const before = await hostMounts();
    const jails = await Promise.all(
      [1, 2, 3].map((i) =>
        runningJail(f, {
          name: jailName(`ns${i}`),
          command: ['sleep', '1000'],
          env: PATH_ENV,
          mounts: [
            { source: src, target: '/srv/src', readOnly: true },
            { source: src, target: '/tmp/deep/src', readOnly: false },
          ],
        }),
      ),
    );
    expect(await mountPointsUnder(f.dataDir)).toEqual([]);
    expect(await hostMounts()).toBe(before);
    for (const { spec } of jails) {
      // inside, every mount is there: the binds, the tmpfs /dev and /tmp, devpts, its proc
      expect((await execIn(f, spec, ['cat', '/srv/src/in.txt', '/tmp/deep/src/in.txt'])).stdout).toBe('inside\ninside\n');
      const inside = lines((await execIn(f, spec, ['cat', '/proc/self/mountinfo'])).stdout).map((l) => l.split(' ')[4]);
      expect(inside).toEqual(expect.arrayContaining(['/', '/usr', '/dev', '/dev/null', '/dev/pts', '/dev/shm', '/tmp', '/proc', '/srv/src', '/tmp/deep/src']));
      expect((await execIn(f, spec, ['ls', '/dev/pts/ptmx'])).exitCode).toBe(0);
    }
    // a missing source of a user mount is refused at mount; a start that cannot mount says why
    const broken = specOf({ name: jailName('nomount'), command: ['true'], env: PATH_ENV, mounts: [{ source: src, target: '/srv/x' }] });
    await f.driver.prepare(broken);
    await f.driver.mount(broken);
    await rm(join(f.dataDir, 'jails', broken.name, 'root', 'srv', 'x'), { recursive: true });
    await expect(f.driver.start(broken)).rejects.toMatchObject({ step: 'start', message: expect.stringMatching(/cannot bind .*srv\/x.*No such file/) });
    for (const { spec } of jails) await f.driver.destroy(spec.name);
    expect(await hostMounts()).toBe(before);
  });

  test('a jail whose init is SIGKILLed leaves no mount and no cgroup behind', async () => {
    const f = await fixture();
    const { spec, pid } = await runningJail(f, { name: jailName('killed'), command: ['sleep', '1000'], env: PATH_ENV, mounts: [{ source: f.hostDir, target: '/srv/host' }] });
    const paths = await f.driver.cgroupPaths(spec.name);
    expect(await cgroupPids(paths)).toContain(pid);
    const exited = new LinuxDriver({ dataDir: f.dataDir }).wait(spec.name, pid, new AbortController().signal);
    process.kill(pid, 'SIGKILL');
    expect(await exited).toEqual({ exitCode: 137, outOfMemory: false });
    expect(await mountPointsUnder(f.dataDir)).toEqual([]);
    for (const dir of Object.values(paths)) expect(existsSync(dir)).toBe(false);
    expect(await f.driver.inspect(spec.name)).toMatchObject({ pid: null });
    // and it starts again from its plan, in a fresh cgroup
    const again = await f.driver.start(spec);
    expect(await cgroupPids(paths)).toContain(again.pid);
    expect((await execIn(f, spec, ['ls', '/srv/host'])).exitCode).toBe(0);
  });
});
