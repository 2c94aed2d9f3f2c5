// The freebsd driver, tested by the exact argv it hands its command runner. Nothing here runs
// FreeBSD, so the runner is a small fake of the host's tools (jls, jail, mount, pgrep, zfs ...)
// that records every argv and answers the way their manual pages say; the transcripts below are
// what a FreeBSD 14 host would be asked to run. Files (the generated /etc, the pid file) are real,
// in a temporary data directory. The default execa runner is tested against real processes.
import { afterEach, beforeEach, describe, expect, test } from '@jest/globals';
import { mkdirSync, writeFileSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readFile, realpath, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jailSpecSchema, type JailSpec, type JailSpecInput } from '../../contracts/index.js';
import { DriverStepFailed, SavedSpecInvalid } from '../../services/agent/drivers/driver.js';
import { readSavedSpec } from '../../services/agent/drivers/driver-base.js';
import { HealthChecks } from '../../services/agent/health-checks.js';
import pino from 'pino';
import {
  FreebsdDriver,
  execaRunner,
  parseJlsJson,
  rctlLimitsOf,
  rctlRules,
  type CommandRunner,
} from '../../services/agent/drivers/freebsd.js';

type Reply = { exitCode?: number; stdout?: string; stderr?: string; timedOut?: boolean; truncated?: boolean };
type RunOpts = Parameters<CommandRunner>[1];

/** A FreeBSD host reduced to what the driver asks of it; every argv is recorded. */
class FakeFreebsdHost {
  readonly calls: string[][] = [];
  readonly opts: RunOpts[] = [];
  /** fstab(5) lines, as `mount -p` prints them. */
  readonly mounts: string[] = [];
  readonly jails = new Map<string, { jid: number; path: string; hostname: string }>();
  readonly procs = new Map<string, number[]>();
  readonly datasets = new Set<string>();
  rulesets = [1, 2, 3, 4, 5];
  /** Processes that ignore SIGTERM. */
  ignoreTerm = false;
  nextPid = 4242;
  private nextJid = 7;
  /** Answers tried before the host's own, for one test. */
  readonly overrides: Array<(argv: string[]) => Reply | undefined> = [];

  readonly run: CommandRunner = async (argv, opts) => {
    this.calls.push([...argv]);
    this.opts.push(opts);
    for (const o of this.overrides) {
      const r = o(argv);
      if (r) return { exitCode: 0, stdout: '', stderr: '', ...r };
    }
    return { exitCode: 0, stdout: '', stderr: '', ...this.answer(argv) };
  };

  jlsJson(names: string[]): string {
    const jail = names.map((name) => {
      const j = this.jails.get(name)!;
      return { jid: j.jid, hostname: j.hostname, path: j.path, name, state: 'ACTIVE', cpusetid: 3, ipv4_addrs: [] };
    });
    return JSON.stringify({ __version: '2', 'jail-information': { jail } });
  }

  private unmountLine(node: string): boolean {
    const i = this.mounts.findIndex((l) => l.split('\t')[1] === node);
    if (i < 0) return false;
    this.mounts.splice(i, 1);
    return true;
  }

  private answer(argv: string[]): Reply {
    const [cmd, ...args] = argv;
    const key = argv.join(' ');
    switch (cmd) {
      case 'jls': {
        if (args.includes('-j')) {
          const name = args[args.indexOf('-j') + 1];
          if (!this.jails.has(name)) return { exitCode: 1, stderr: `jls: jail "${name}" not found\n` };
          return { stdout: this.jlsJson([name]) };
        }
        return { stdout: this.jlsJson([...this.jails.keys()]) };
      }
      case 'mount': {
        if (key === 'mount -p') return { stdout: this.mounts.map((l) => `${l}\n`).join('') };
        const node = args[args.length - 1];
        const type = args[args.indexOf('-t') + 1];
        this.mounts.push(`${type}\t${node}\t${type}\trw\t0 0`);
        return {};
      }
      case 'mount_nullfs': {
        const [source, node] = args.slice(-2);
        this.mounts.push(`${source}\t${node}\tnullfs\t${args[0] === '-o' ? 'ro' : 'rw'}\t0 0`);
        return {};
      }
      case 'umount': {
        const node = args[args.length - 1];
        return this.unmountLine(node) ? {} : { exitCode: 1, stderr: `umount: ${node}: not a file system root directory\n` };
      }
      case 'devfs':
        return key === 'devfs rule showsets' ? { stdout: this.rulesets.map((n) => `${n}\n`).join('') } : {};
      case 'pwd_mkdb':
      case 'rctl':
      case 'cp':
        return {};
      case 'jail': {
        if (args[0] === '-c') {
          const param = (k: string) => args.find((a) => a.startsWith(`${k}=`))!.slice(k.length + 1);
          this.jails.set(param('name'), { jid: this.nextJid++, path: param('path'), hostname: param('host.hostname') });
          return { stdout: `${param('name')}: created\n` };
        }
        if (args[0] === '-R') {
          this.jails.delete(args[1]);
          this.procs.delete(args[1]);
          return { stdout: `${args[1]}: removed\n` };
        }
        break;
      }
      case 'daemon': {
        // daemon(8) -p: "write the ID of the created process into the child_pidfile".
        const pidFile = args[args.indexOf('-p') + 1];
        const child = args.slice(args.indexOf('--') + 1);
        const jail = child[child.indexOf('root') + 1];
        const pid = this.nextPid++;
        writeFileSync(pidFile, `${pid}\n`);
        this.procs.set(jail, [...(this.procs.get(jail) ?? []), pid]);
        return {};
      }
      case 'pgrep': {
        const pids = this.procs.get(args[1]) ?? [];
        return pids.length ? { stdout: pids.map((p) => `${p}\n`).join('') } : { exitCode: 1 };
      }
      case 'jexec': {
        if (args[1] === '/bin/kill') {
          const had = (this.procs.get(args[0]) ?? []).length > 0;
          if (!this.ignoreTerm) this.procs.set(args[0], []);
          return had ? {} : { exitCode: 1, stderr: 'kill: -1: No such process\n' };
        }
        return { stdout: 'hello from the jail\n' };
      }
      case 'zfs': {
        const sub = args[0];
        const target = args[args.length - 1];
        if (sub === 'list') {
          return this.datasets.has(target)
            ? { stdout: `${target}\n` }
            : { exitCode: 1, stderr: `cannot open '${target}': dataset does not exist\n` };
        }
        if (sub === 'snapshot') this.datasets.add(target);
        if (sub === 'clone' || (sub === 'create' && args[2].startsWith('mountpoint='))) {
          // zfs-create(8)/zfs-clone(8): the new file system is mounted at its mountpoint property
          const mountpoint = args[2].slice('mountpoint='.length);
          this.datasets.add(target);
          this.zfsMountpointOf.set(target, mountpoint);
          mkdirSync(mountpoint, { recursive: true });
          this.mounts.push(`${target}\t${mountpoint}\tzfs\trw,nfsv4acls\t0 0`);
        } else if (sub === 'create') this.datasets.add(target);
        if (sub === 'mount') this.mounts.push(`${target}\t${this.zfsMountpoint(target)}\tzfs\trw\t0 0`);
        if (sub === 'destroy') {
          // -r takes the children (snapshots included); without it a dataset with children fails
          const children = [...this.datasets].filter((d) => d.startsWith(`${target}@`) || d.startsWith(`${target}/`));
          if (children.length && args[1] !== '-r') return { exitCode: 1, stderr: `cannot destroy '${target}': filesystem has children\n` };
          for (const d of [target, ...children]) this.datasets.delete(d);
          this.unmountLine(this.zfsMountpoint(target));
        }
        return {};
      }
    }
    throw new Error(`the fake FreeBSD host does not know: ${key}`);
  }

  zfsMountpointOf = new Map<string, string>();
  private zfsMountpoint(dataset: string): string {
    return this.zfsMountpointOf.get(dataset) ?? `/${dataset}`;
  }
}

let tmp: string;
let data: string;
let dir: string;
let root: string;
let srcRo: string;
let srcRw: string;
let host: FakeFreebsdHost;

beforeEach(async () => {
  tmp = await realpath(await mkdtemp(join(tmpdir(), 'jailfleet-freebsd-')));
  data = join(tmp, 'data');
  dir = join(data, 'jails', 'web');
  root = join(dir, 'root');
  srcRo = join(tmp, 'src-ro');
  srcRw = join(tmp, 'src-rw');
  await mkdir(srcRo);
  await mkdir(srcRw);
  host = new FakeFreebsdHost();
});

afterEach(async () => {
  await rm(tmp, { recursive: true, force: true });
});

const driverFor = (extra: { zfsDataset?: string; base?: string; dataDir?: string } = {}) =>
  new FreebsdDriver({ dataDir: data, run: host.run, ...extra });

function sampleSpec(overrides: Partial<JailSpecInput> = {}): JailSpec {
  return jailSpecSchema.parse({
    name: 'web',
    command: ['/usr/local/bin/server', '--port', '8080'],
    hostname: 'web.example',
    env: { A: '1', GREETING: 'hello world' },
    mounts: [
      { source: srcRo, target: '/data' },
      { source: srcRw, target: '/srv/rw', readOnly: false },
    ],
    stopTimeoutMs: 5000,
    ...overrides,
  });
}

/** The calls made by `fn`, and only those. */
async function transcript(fn: () => Promise<unknown>): Promise<string[][]> {
  const from = host.calls.length;
  await fn();
  return host.calls.slice(from);
}

/**
 * The parameters every jail is created with, written out here apart from the driver (jail(8)):
 * every allow.* that lets root reach the host off, statfs limited to the jail's own mounts,
 * securelevel 2, no child jails.
 */
const CONFINED = [
  'allow.set_hostname=false', 'allow.sysvipc=false', 'allow.raw_sockets=false', 'allow.chflags=false',
  'allow.mount=false', 'allow.mlock=false', 'allow.quotas=false', 'allow.socket_af=false',
  'enforce_statfs=2', 'securelevel=2', 'children.max=0',
];
const jls = (name: string) => ['jls', '--libxo', 'json', '-v', '-j', name];
const BASE = ['bin', 'sbin', 'lib', 'libexec', 'usr'];

async function runningJail(driver: FreebsdDriver, spec: JailSpec) {
  await driver.prepare(spec);
  await driver.mount(spec);
  return driver.start(spec);
}

describe('prepare builds a thin root: read-only nullfs base and a generated /etc', () => {
  test('the exact commands, then the files it wrote', async () => {
    const spec = sampleSpec();
    expect(await transcript(() => driverFor().prepare(spec))).toEqual([
      jls('web'),
      ['mount', '-p'],
      ...BASE.map((d) => ['mount_nullfs', '-o', 'ro', `/${d}`, join(root, d)]),
      ['pwd_mkdb', '-p', '-d', join(root, 'etc'), join(root, 'etc', 'master.passwd')],
    ]);

    const etc = join(root, 'etc');
    expect(await readFile(join(etc, 'master.passwd'), 'utf8')).toMatch(/^root:\*:0:0::0:0:root:\/root:\/bin\/sh\n/);
    expect((await stat(join(etc, 'master.passwd'))).mode & 0o777).toBe(0o600);
    expect(await readFile(join(etc, 'passwd'), 'utf8')).toMatch(/^root:\*:0:0:root:\/root:\/bin\/sh\n/);
    expect(await readFile(join(etc, 'group'), 'utf8')).toContain('wheel:*:0:root\n');
    expect(await readFile(join(etc, 'hosts'), 'utf8')).toContain('127.0.0.1\tweb.example\n');
    expect(await readFile(join(etc, 'hostname'), 'utf8')).toBe('web.example\n');
    for (const d of ['dev', 'tmp', 'root', 'var/run', 'var/log']) expect((await lstat(join(root, d))).isDirectory()).toBe(true);
    expect((await stat(join(root, 'root'))).mode & 0o777).toBe(0o700);
    expect(JSON.parse(await readFile(join(dir, 'spec.json'), 'utf8'))).toEqual(spec);
    expect((await stat(join(dir, 'spec.json'))).mode & 0o777).toBe(0o600);
  });

  test('is idempotent: a second prepare mounts nothing again', async () => {
    const driver = driverFor();
    await driver.prepare(sampleSpec());
    expect(await transcript(() => driver.prepare(sampleSpec()))).toEqual([
      jls('web'),
      ['mount', '-p'],
      ['pwd_mkdb', '-p', '-d', join(root, 'etc'), join(root, 'etc', 'master.passwd')],
    ]);
  });

  test('never writes into the root of a running jail', async () => {
    const driver = driverFor();
    await runningJail(driver, sampleSpec());
    expect(await transcript(() => driver.prepare(sampleSpec()))).toEqual([jls('web')]);
  });

  test('a symlink a jail left in its etc is removed, not written through', async () => {
    const driver = driverFor();
    await driver.prepare(sampleSpec());
    const outside = join(tmp, 'host-passwd');
    await writeFile(outside, 'host secret\n');
    await rm(join(root, 'etc', 'passwd'));
    await symlink(outside, join(root, 'etc', 'passwd'));
    await driver.prepare(sampleSpec());
    expect(await readFile(outside, 'utf8')).toBe('host secret\n');
    expect((await lstat(join(root, 'etc', 'passwd'))).isFile()).toBe(true);
  });

  test('refuses a data directory that every jail would see through the base', async () => {
    const base = join(tmp, 'base');
    const driver = driverFor({ base, dataDir: join(base, 'usr', 'jailfleet') });
    await expect(driver.prepare(sampleSpec())).rejects.toMatchObject({ name: 'DriverStepFailed', step: 'prepare' });
    expect(host.calls).toEqual([jls('web')]);
  });

  test('with a zfs dataset: snapshot the base once, clone it at the root', async () => {
    const driver = driverFor({ zfsDataset: 'zroot/jailfleet' });
    const snap = 'zroot/jailfleet/base@jailfleet';
    expect(await transcript(() => driver.prepare(sampleSpec()))).toEqual([
      jls('web'),
      ['zfs', 'list', '-H', '-o', 'name', 'zroot/jailfleet/web'],
      ['zfs', 'list', '-H', '-o', 'name', '-t', 'snapshot', snap],
      ['zfs', 'snapshot', snap],
      ['zfs', 'clone', '-o', `mountpoint=${root}`, snap, 'zroot/jailfleet/web'],
      ['pwd_mkdb', '-p', '-d', join(root, 'etc'), join(root, 'etc', 'master.passwd')],
    ]);
    // Again: the clone exists and is mounted, so only the /etc is refreshed.
    expect(await transcript(() => driver.prepare(sampleSpec()))).toEqual([
      jls('web'),
      ['zfs', 'list', '-H', '-o', 'name', 'zroot/jailfleet/web'],
      ['mount', '-p'],
      ['pwd_mkdb', '-p', '-d', join(root, 'etc'), join(root, 'etc', 'master.passwd')],
    ]);
  });
});

describe('an image jail is a thin jail of its image: its base read-only by nullfs, its other directories its own', () => {
  const digest = `sha256:${'ab'.repeat(32)}`;
  /** An unpacked image (base.txz-like) in the test's directory, served as the agent's cache would. */
  async function imageCache() {
    const rootfs = join(tmp, 'images', 'ab', 'rootfs');
    for (const d of ['bin', 'lib', 'usr', 'etc', 'var/db']) await mkdir(join(rootfs, d), { recursive: true });
    await writeFile(join(rootfs, 'etc', 'rc.conf'), 'from the image\n');
    await symlink('usr/home', join(rootfs, 'home'));
    const asked: string[] = [];
    return {
      rootfs,
      asked,
      source: {
        resolve: async (ref: string, recorded: string | null) => (asked.push(`resolve ${ref} ${recorded}`), digest),
        ensure: async (d: string) => (asked.push(`ensure ${d}`), rootfs),
      },
    };
  }

  test('the exact commands: nullfs of the base dirs the image has, cp -Rp of the rest, once', async () => {
    const cache = await imageCache();
    const driver = new FreebsdDriver({ dataDir: data, run: host.run, images: cache.source });
    const spec = sampleSpec({ image: 'freebsd:14.1', mounts: [] });
    expect(await transcript(() => driver.prepare(spec))).toEqual([
      jls('web'),
      ['mount', '-p'],
      ...['bin', 'lib', 'usr'].map((d) => ['mount_nullfs', '-o', 'ro', join(cache.rootfs, d), join(root, d)]),
      ['cp', '-Rp', join(cache.rootfs, 'etc'), join(root, 'etc')],
      ['cp', '-Rp', join(cache.rootfs, 'home'), join(root, 'home')],
      ['cp', '-Rp', join(cache.rootfs, 'var'), join(root, 'var')],
    ]);
    expect(cache.asked).toEqual([`resolve freebsd:14.1 null`, `ensure ${digest}`]);
    expect(await readFile(join(dir, 'image'), 'utf8')).toBe(`${digest}\n`);
    // the fake cp copied nothing: the driver made etc itself and wrote the jail's own files there
    expect(await readFile(join(root, 'etc', 'hosts'), 'utf8')).toContain('127.0.0.1\tweb.example\n');
    await expect(lstat(join(root, 'etc', 'master.passwd'))).rejects.toThrow();

    // again (a restart): the recorded digest is kept, nothing mounted or copied again (the fake cp
    // made nothing; etc and var exist since the first prepare made its own files in them)
    cache.asked.length = 0;
    expect(await transcript(() => driver.prepare(spec))).toEqual([
      jls('web'),
      ['mount', '-p'],
      ['cp', '-Rp', join(cache.rootfs, 'home'), join(root, 'home')],
    ]);
    expect(cache.asked).toEqual([`resolve freebsd:14.1 ${digest}`, `ensure ${digest}`]);
    expect(await driver.inspect('web')).toMatchObject({ prepared: true });
    // mount takes the image's base as the root's mounts, then devfs and tmpfs as for any jail
    expect(await transcript(() => driver.mount(spec))).toEqual([
      ['mount', '-p'],
      ['devfs', 'rule', 'showsets'],
      ['mount', '-t', 'devfs', '-o', 'ruleset=4', 'devfs', join(root, 'dev')],
      ['devfs', '-m', join(root, 'dev'), 'rule', '-s', '4', 'applyset'],
      ['mount', '-t', 'tmpfs', '-o', 'mode=1777,nosuid', 'tmpfs', join(root, 'tmp')],
    ]);
  });

  test('with a zfs dataset: the image copied once into a dataset and snapshotted, each jail a clone of it', async () => {
    const cache = await imageCache();
    const driver = new FreebsdDriver({ dataDir: data, run: host.run, images: cache.source, zfsDataset: 'zroot/jailfleet' });
    const spec = sampleSpec({ image: 'freebsd:14.1', mounts: [] });
    const image = `zroot/jailfleet/_images/${'ab'.repeat(32)}`;
    const snap = `${image}@jailfleet`;
    const copy = join(data, 'zfs-images', 'ab'.repeat(32));
    expect(await transcript(() => driver.prepare(spec))).toEqual([
      jls('web'),
      ['zfs', 'list', '-H', '-o', 'name', 'zroot/jailfleet/web'],
      ['zfs', 'list', '-H', '-o', 'name', '-t', 'snapshot', snap],
      ['zfs', 'list', '-H', '-o', 'name', 'zroot/jailfleet/_images'],
      ['zfs', 'create', '-o', 'canmount=off', 'zroot/jailfleet/_images'],
      ['zfs', 'list', '-H', '-o', 'name', image],
      ['zfs', 'create', '-o', `mountpoint=${copy}`, image],
      ['cp', '-Rp', `${cache.rootfs}/`, copy],
      ['zfs', 'snapshot', snap],
      ['zfs', 'clone', '-o', `mountpoint=${root}`, snap, 'zroot/jailfleet/web'],
    ]);
    expect(cache.asked).toEqual([`resolve freebsd:14.1 null`, `ensure ${digest}`]);
    expect(await readFile(join(root, 'etc', 'hosts'), 'utf8')).toContain('127.0.0.1\tweb.example\n');
    expect(await driver.inspect('web')).toMatchObject({ prepared: true });

    // a second jail of the image: one clone, no copy, no fetch
    cache.asked.length = 0;
    const other = sampleSpec({ name: 'api', image: 'freebsd:14.1', mounts: [] });
    expect(await transcript(() => driver.prepare(other))).toEqual([
      jls('api'),
      ['zfs', 'list', '-H', '-o', 'name', 'zroot/jailfleet/api'],
      ['zfs', 'list', '-H', '-o', 'name', '-t', 'snapshot', snap],
      ['zfs', 'clone', '-o', `mountpoint=${join(data, 'jails', 'api', 'root')}`, snap, 'zroot/jailfleet/api'],
    ]);
    expect(cache.asked).toEqual([`resolve freebsd:14.1 null`]);

    // stop and start: the clone (the jail's writable layer) is kept, mounted again, never cloned anew
    await writeFile(join(root, 'written-by-the-jail'), 'kept');
    await driver.mount(spec);
    await driver.unmount(spec);
    expect(await transcript(() => driver.prepare(spec))).toEqual([
      jls('web'),
      ['zfs', 'list', '-H', '-o', 'name', 'zroot/jailfleet/web'],
      ['mount', '-p'],
      ['zfs', 'mount', 'zroot/jailfleet/web'],
    ]);
    expect(await readFile(join(root, 'written-by-the-jail'), 'utf8')).toBe('kept');

    // rm: unmounted, the clone destroyed; the image's snapshot stays for the other jail
    expect(await transcript(() => driver.destroy('web'))).toEqual([
      jls('web'),
      ['mount', '-p'],
      ['umount', root],
      ['zfs', 'list', '-H', '-o', 'name', 'zroot/jailfleet/web'],
      ['zfs', 'destroy', 'zroot/jailfleet/web'],
      ['rctl', '-r', 'jail:web'],
      ['mount', '-p'],
    ]);
    expect(host.datasets.has('zroot/jailfleet/web')).toBe(false);
    expect(host.datasets.has(snap)).toBe(true);
  });

  test('with a zfs dataset: an image copy interrupted before its snapshot is destroyed and made again', async () => {
    const cache = await imageCache();
    const driver = new FreebsdDriver({ dataDir: data, run: host.run, images: cache.source, zfsDataset: 'zroot/jailfleet' });
    const image = `zroot/jailfleet/_images/${'ab'.repeat(32)}`;
    host.datasets.add('zroot/jailfleet/_images');
    host.datasets.add(image);
    const calls = await transcript(() => driver.prepare(sampleSpec({ image: 'freebsd:14.1', mounts: [] })));
    expect(calls.slice(3, 7)).toEqual([
      ['zfs', 'list', '-H', '-o', 'name', 'zroot/jailfleet/_images'],
      ['zfs', 'list', '-H', '-o', 'name', image],
      ['zfs', 'destroy', '-r', image],
      ['zfs', 'create', '-o', `mountpoint=${join(data, 'zfs-images', 'ab'.repeat(32))}`, image],
    ]);
  });

  test('two jails of one image prepared at once share one copy', async () => {
    const cache = await imageCache();
    const driver = new FreebsdDriver({ dataDir: data, run: host.run, images: cache.source, zfsDataset: 'zroot/jailfleet' });
    const calls = await transcript(() => Promise.all(['web', 'api'].map((name) => driver.prepare(sampleSpec({ name, image: 'freebsd:14.1', mounts: [] })))));
    expect(calls.filter((a) => a[0] === 'cp' || a[1] === 'snapshot')).toHaveLength(2);
    expect(calls.filter((a) => a[1] === 'clone').map((a) => a[a.length - 1]).sort()).toEqual(['zroot/jailfleet/api', 'zroot/jailfleet/web']);
  });

  test('without an image cache, an image jail fails its prepare with why', async () => {
    await expect(driverFor().prepare(sampleSpec({ image: 'freebsd:14.1' }))).rejects.toMatchObject({ name: 'DriverStepFailed', step: 'prepare', message: expect.stringMatching(/no image cache/) });
  });
});

describe('host volumes are nullfs mounts like the spec\'s, read-only with -o ro', () => {
  test('the exact commands; a volume offered read-only is mounted read-only; one not offered fails the mount with why', async () => {
    const pg = join(tmp, 'pgdata');
    const conf = join(tmp, 'conf');
    await mkdir(pg);
    await mkdir(conf);
    const volumes = new Map([
      ['pgdata', { path: pg, readOnly: false }],
      ['conf', { path: conf, readOnly: true }],
    ]);
    const driver = new FreebsdDriver({ dataDir: data, run: host.run, volumes });
    const spec = sampleSpec({
      mounts: [],
      volumes: [
        { name: 'pgdata', target: '/var/db/postgres' },
        { name: 'conf', target: '/usr/local/etc/app', readOnly: true },
      ],
    });
    await driver.prepare(spec);
    const calls = await transcript(() => driver.mount(spec));
    expect(calls.filter((a) => a[0] === 'mount_nullfs')).toEqual([
      ['mount_nullfs', pg, join(root, 'var', 'db', 'postgres')],
      ['mount_nullfs', '-o', 'ro', conf, join(root, 'usr', 'local', 'etc', 'app')],
    ]);

    const writes = sampleSpec({ mounts: [], volumes: [{ name: 'conf', target: '/etc/app' }] });
    await expect(driver.mount(writes)).rejects.toMatchObject({ name: 'DriverStepFailed', step: 'mount', message: expect.stringMatching(/volume conf is offered read-only on this host, and the jail writes to it/) });
    const missing = sampleSpec({ mounts: [], volumes: [{ name: 'nope', target: '/srv' }] });
    await expect(driver.mount(missing)).rejects.toMatchObject({ step: 'mount', message: expect.stringMatching(/volume nope is not offered by this host/) });
  });
});

describe('mount makes /dev (devfs, ruleset 4), /tmp (tmpfs) and the spec mounts (nullfs)', () => {
  test('the exact commands, parents before children', async () => {
    const driver = driverFor();
    const spec = sampleSpec();
    await driver.prepare(spec);
    expect(await transcript(() => driver.mount(spec))).toEqual([
      ['mount', '-p'],
      ['devfs', 'rule', 'showsets'],
      ['mount', '-t', 'devfs', '-o', 'ruleset=4', 'devfs', join(root, 'dev')],
      ['devfs', '-m', join(root, 'dev'), 'rule', '-s', '4', 'applyset'],
      ['mount', '-t', 'tmpfs', '-o', 'mode=1777,nosuid', 'tmpfs', join(root, 'tmp')],
      ['mount_nullfs', '-o', 'ro', srcRo, join(root, 'data')],
      ['mount_nullfs', srcRw, join(root, 'srv', 'rw')],
    ]);
    // Again: nothing is mounted twice; the ruleset is applied again (idempotent).
    expect(await transcript(() => driver.mount(spec))).toEqual([
      ['mount', '-p'],
      ['devfs', 'rule', 'showsets'],
      ['devfs', '-m', join(root, 'dev'), 'rule', '-s', '4', 'applyset'],
    ]);
  });

  test('another devfs ruleset when configured', async () => {
    const driver = new FreebsdDriver({ dataDir: data, run: host.run, devfsRuleset: 5 });
    const spec = sampleSpec({ mounts: [] });
    await driver.prepare(spec);
    const calls = await transcript(() => driver.mount(spec));
    expect(calls).toContainEqual(['mount', '-t', 'devfs', '-o', 'ruleset=5', 'devfs', join(root, 'dev')]);
    expect(calls).toContainEqual(['devfs', '-m', join(root, 'dev'), 'rule', '-s', '5', 'applyset']);
  });

  test('refuses an unloaded devfs ruleset rather than an unrestricted /dev', async () => {
    const driver = driverFor();
    const spec = sampleSpec();
    await driver.prepare(spec);
    host.rulesets = [1, 2, 3];
    await expect(driver.mount(spec)).rejects.toMatchObject({ name: 'DriverStepFailed', step: 'mount' });
    expect(host.calls.some((c) => c.includes('devfs') && c[0] === 'mount')).toBe(false);
  });

  test('refuses a mount before the root is prepared', async () => {
    await expect(driverFor().mount(sampleSpec())).rejects.toMatchObject({ step: 'mount', message: expect.stringMatching(/not prepared/) });
  });

  test('refuses a source under the data directory', async () => {
    const driver = driverFor();
    const spec = sampleSpec({ mounts: [{ source: join(data, 'jails'), target: '/peek' }] });
    await driver.prepare(spec);
    const err = await driver.mount(spec).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DriverStepFailed);
    expect(err).toMatchObject({ step: 'mount', message: expect.stringMatching(/data directory/) });
    expect(host.calls.filter((c) => c[0] === 'mount_nullfs' && c.includes(join(data, 'jails')))).toEqual([]);
  });

  test('refuses a target that a symlink in the root sends out of it', async () => {
    const driver = driverFor();
    const spec = sampleSpec({ mounts: [{ source: srcRo, target: '/escape/x' }] });
    await driver.prepare(spec);
    const outside = join(tmp, 'outside');
    await mkdir(outside);
    await symlink(outside, join(root, 'escape'));
    await expect(driver.mount(spec)).rejects.toMatchObject({ step: 'mount', message: expect.stringMatching(/escapes the jail root/) });
    expect(host.calls.filter((c) => c[0] === 'mount_nullfs' && c.includes(srcRo))).toEqual([]);
  });
});

describe('start creates a persistent jail and runs the command detached with daemon(8)', () => {
  test('the exact commands; resolves with the host pid of the command', async () => {
    const driver = driverFor();
    const spec = sampleSpec();
    await driver.prepare(spec);
    await driver.mount(spec);
    let started: { pid: number } | undefined;
    expect(
      await transcript(async () => {
        started = await driver.start(spec);
      }),
    ).toEqual([
      jls('web'),
      ['mount', '-p'],
      ['jail', '-c', 'name=web', `path=${root}`, 'host.hostname=web.example', 'ip4=inherit', 'ip6=inherit', ...CONFINED, 'persist'],
      // the spec's default resources (0.1 cores, 64 MB, 128 processes), before the command runs
      ['rctl', '-r', 'jail:web'],
      ['rctl', '-a', 'jail:web:memoryuse:deny=67108864'],
      ['rctl', '-a', 'jail:web:pcpu:deny=10'],
      ['rctl', '-a', 'jail:web:maxproc:deny=128'],
      [
        'daemon', '-f', '-c', '-o', join(dir, 'console.log'), '-p', join(dir, 'pid'), '--',
        'jexec', '-l', '-U', 'root', 'web', '/usr/bin/env', '-i', 'A=1', 'GREETING=hello world',
        '/usr/local/bin/server', '--port', '8080',
      ],
      ['pgrep', '-j', 'web'],
    ]);
    expect(started).toEqual({ pid: 4242 });
  });

  test('is idempotent: a running jail is adopted, not started again', async () => {
    const driver = driverFor();
    const spec = sampleSpec();
    await runningJail(driver, spec);
    const fresh = driverFor(); // a restarted agent
    let again: { pid: number } | undefined;
    expect(
      await transcript(async () => {
        again = await fresh.start(spec);
      }),
    ).toEqual([jls('web'), ['pgrep', '-j', 'web']]);
    expect(again).toEqual({ pid: 4242 });
  });

  test('network none: no IPv4, no IPv6', async () => {
    const driver = driverFor();
    const spec = sampleSpec({ network: 'none', hostname: undefined });
    await driver.prepare(spec);
    await driver.mount(spec);
    const calls = await transcript(() => driver.start(spec));
    expect(calls[2]).toEqual(['jail', '-c', 'name=web', `path=${root}`, 'host.hostname=web', 'ip4=disable', 'ip6=disable', ...CONFINED, 'persist']);
  });

  test('network vnet is refused at start (not built for FreeBSD yet), never run as inherit', async () => {
    const driver = driverFor();
    const spec = sampleSpec({ network: { mode: 'vnet', address: '10.88.0.5' } });
    await driver.prepare(spec);
    await driver.mount(spec);
    const from = host.calls.length;
    await expect(driver.start(spec)).rejects.toThrow(/network mode vnet is not supported by the freebsd driver yet/);
    expect(host.calls.slice(from).filter((c) => c[0] === 'jail' || c[0] === 'daemon')).toEqual([]);
  });

  test('hostile arguments stay separate argv elements: there is no shell to parse them', async () => {
    const driver = driverFor();
    const hostile = ['/bin/echo', 'hi; rm -rf /', ';', 'rm', '-rf', '/', '$(reboot)', '`id`', "' \" \\"];
    const spec = sampleSpec({ command: hostile, env: { X: '$(id); rm -rf /' } });
    await driver.prepare(spec);
    await driver.mount(spec);
    const calls = await transcript(() => driver.start(spec));
    const daemon = calls.find((c) => c[0] === 'daemon')!;
    expect(daemon.slice(daemon.indexOf('-i') + 1)).toEqual(['X=$(id); rm -rf /', ...hostile]);
  });

  test.each([['PATH=/evil', 'sh'], ['-u', 'HOME', 'sh']])('a program name env(1) would not run as one (%j) is refused', async (...command) => {
    const driver = driverFor();
    const spec = sampleSpec({ command, env: {} });
    await expect(driver.start(spec)).rejects.toMatchObject({ name: 'DriverStepFailed', step: 'start' });
    await expect(driver.exec(spec, command, { timeoutMs: 10, maxOutputBytes: 10 })).rejects.toMatchObject({ step: 'exec' });
    expect(host.calls).toEqual([]);
  });

  test('a failing jail -c is a DriverStepFailed carrying step, argv and stderr', async () => {
    const driver = driverFor();
    const spec = sampleSpec();
    await driver.prepare(spec);
    await driver.mount(spec);
    const stderr = 'jail: web: mount.devfs: /dev: Operation not permitted\n';
    host.overrides.push((argv) => (argv[0] === 'jail' && argv[1] === '-c' ? { exitCode: 1, stderr } : undefined));
    const err = await driver.start(spec).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DriverStepFailed);
    expect(err).toMatchObject({
      name: 'DriverStepFailed',
      step: 'start',
      argv: ['jail', '-c', 'name=web', `path=${root}`, 'host.hostname=web.example', 'ip4=inherit', 'ip6=inherit', ...CONFINED, 'persist'],
      stderr,
    });
    const jailC = 'jail -c name=web path=' + root + ' host.hostname=web.example ip4=inherit ip6=inherit ' + CONFINED.join(' ') + ' persist';
    // the reason leaves out what a state event names already (the step and the jail); the message names all
    expect((err as DriverStepFailed).reason).toBe(`${jailC}: ${stderr.trim()}`);
    expect((err as Error).message).toBe(`start of jail web failed: ${jailC}: ${stderr.trim()}`);
    expect(host.calls.some((c) => c[0] === 'daemon')).toBe(false);
  });

  test("the spec's resources become rctl rules: cores × 100 percent, MB in bytes, processes", async () => {
    const driver = driverFor();
    const spec = sampleSpec({ resources: { cpu: 1.5, memoryMB: 512, maxProcs: 40 } });
    await driver.prepare(spec);
    await driver.mount(spec);
    const calls = await transcript(() => driver.start(spec));
    expect(calls.filter((c) => c[0] === 'rctl')).toEqual([
      ['rctl', '-r', 'jail:web'],
      ['rctl', '-a', 'jail:web:memoryuse:deny=536870912'],
      ['rctl', '-a', 'jail:web:pcpu:deny=150'],
      ['rctl', '-a', 'jail:web:maxproc:deny=40'],
    ]);
    expect(calls.findIndex((c) => c[0] === 'rctl')).toBeGreaterThan(calls.findIndex((c) => c[0] === 'jail'));
    expect(calls.findIndex((c) => c[0] === 'daemon')).toBe(calls.indexOf(calls.filter((c) => c[0] === 'rctl').pop()!) + 1);
    expect(rctlLimitsOf(sampleSpec({ resources: { cpu: 0.01 } }).resources)).toEqual({ memoryMB: 64, cpuPercent: 1, maxProcs: 128 });
    expect(rctlLimitsOf(sampleSpec({ resources: { cpu: 0.333 } }).resources).cpuPercent).toBe(33);
  });

  test('a host without RACCT fails the start before the command runs, saying so', async () => {
    const driver = driverFor();
    const spec = sampleSpec();
    await driver.prepare(spec);
    await driver.mount(spec);
    const stderr = 'rctl: RACCT/RCTL present, but disabled; enable using kern.racct.enable=1 tunable\n';
    host.overrides.push((argv) => (argv[0] === 'rctl' ? { exitCode: 1, stderr } : undefined));
    const err = await driver.start(spec).catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'DriverStepFailed', step: 'start', argv: ['rctl', '-a', 'jail:web:memoryuse:deny=67108864'], stderr });
    expect((err as Error).message).toContain('kern.racct.enable=1');
    expect(host.calls.some((c) => c[0] === 'daemon')).toBe(false);
  });

  test('refuses to start an unmounted jail', async () => {
    const driver = driverFor();
    await driver.prepare(sampleSpec());
    await expect(driver.start(sampleSpec())).rejects.toMatchObject({ step: 'start', message: expect.stringMatching(/not mounted/) });
  });
});

describe('stop: SIGTERM to every process of the jail, then jail -R', () => {
  test('the exact commands when the jail stops in time', async () => {
    const driver = driverFor();
    const spec = sampleSpec();
    await runningJail(driver, spec);
    let result: unknown;
    expect(
      await transcript(async () => {
        result = await driver.stop(spec);
      }),
    ).toEqual([jls('web'), ['jexec', 'web', '/bin/kill', '-TERM', '-1'], ['pgrep', '-j', 'web'], ['jail', '-R', 'web']]);
    expect(result).toEqual({ exitCode: null });
    await expect(lstat(join(dir, 'pid'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  test('a jail that ignores SIGTERM is removed after stopTimeoutMs', async () => {
    const driver = driverFor();
    const spec = sampleSpec({ stopTimeoutMs: 0 });
    await runningJail(driver, spec);
    host.ignoreTerm = true;
    expect(await transcript(() => driver.stop(spec))).toEqual([
      jls('web'),
      ['jexec', 'web', '/bin/kill', '-TERM', '-1'],
      ['pgrep', '-j', 'web'],
      ['jail', '-R', 'web'],
    ]);
    expect(host.jails.has('web')).toBe(false);
  });

  test('a dying jail (removed, references still going) counts as stopped', async () => {
    const driver = driverFor();
    host.overrides.push((argv) => (argv[0] === 'jls' ? { exitCode: 1, stderr: 'jls: jail "web" is dying\n' } : undefined));
    expect(await transcript(() => driver.stop(sampleSpec()))).toEqual([jls('web')]);
  });

  test('jls failing for another reason is an error, not "no jail"', async () => {
    const driver = driverFor();
    host.overrides.push((argv) => (argv[0] === 'jls' ? { exitCode: 1, stderr: 'jls: sysctl: Operation not permitted\n' } : undefined));
    await expect(driver.stop(sampleSpec())).rejects.toMatchObject({ step: 'stop', message: expect.stringMatching(/Operation not permitted/) });
  });

  test('is idempotent: stopping a stopped jail asks jls only', async () => {
    const driver = driverFor();
    expect(await transcript(() => driver.stop(sampleSpec()))).toEqual([jls('web')]);
  });
});

describe('unmount and destroy', () => {
  test('unmount releases every mount, in reverse order', async () => {
    const driver = driverFor();
    const spec = sampleSpec();
    await runningJail(driver, spec);
    await driver.stop(spec);
    expect(await transcript(() => driver.unmount(spec))).toEqual([
      ['mount', '-p'],
      ['umount', join(root, 'srv', 'rw')],
      ['umount', join(root, 'data')],
      ['umount', join(root, 'tmp')],
      ['umount', join(root, 'dev')],
      ...[...BASE].reverse().map((d) => ['umount', join(root, d)]),
    ]);
    expect(await transcript(() => driver.unmount(spec))).toEqual([['mount', '-p']]);
    expect((await lstat(join(root, 'etc', 'master.passwd'))).isFile()).toBe(true);
  });

  test('a busy mount is unmounted with -f', async () => {
    const driver = driverFor();
    const spec = sampleSpec({ mounts: [] });
    await driver.prepare(spec);
    let first = true;
    host.overrides.push((argv) => {
      if (argv[0] === 'umount' && argv[1] === join(root, 'usr') && first) {
        first = false;
        return { exitCode: 1, stderr: `umount: unmount of ${join(root, 'usr')} failed: Device busy\n` };
      }
      return undefined;
    });
    const calls = await transcript(() => driver.unmount(spec));
    expect(calls.slice(1, 3)).toEqual([['umount', join(root, 'usr')], ['umount', '-f', join(root, 'usr')]]);
  });

  test('destroy of a running jail: stop, unmount, drop rctl rules, remove the directory', async () => {
    const driver = driverFor();
    const spec = sampleSpec();
    await runningJail(driver, spec);
    expect(await transcript(() => driver.destroy('web'))).toEqual([
      jls('web'),
      ['jexec', 'web', '/bin/kill', '-TERM', '-1'],
      ['pgrep', '-j', 'web'],
      ['jail', '-R', 'web'],
      ['mount', '-p'],
      ['umount', join(root, 'srv', 'rw')],
      ['umount', join(root, 'data')],
      ['umount', join(root, 'tmp')],
      ['umount', join(root, 'dev')],
      ...[...BASE].reverse().map((d) => ['umount', join(root, d)]),
      ['rctl', '-r', 'jail:web'],
      ['mount', '-p'],
    ]);
    await expect(lstat(dir)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await transcript(() => driver.destroy('web'))).toEqual([jls('web'), ['mount', '-p'], ['rctl', '-r', 'jail:web'], ['mount', '-p']]);
  });

  test('destroy with zfs destroys the clone', async () => {
    const driver = driverFor({ zfsDataset: 'zroot/jailfleet' });
    host.datasets.add('zroot/jailfleet/base@jailfleet');
    await driver.prepare(sampleSpec({ mounts: [] }));
    expect(await transcript(() => driver.destroy('web'))).toEqual([
      jls('web'),
      ['mount', '-p'],
      ['umount', root],
      ['zfs', 'list', '-H', '-o', 'name', 'zroot/jailfleet/web'],
      ['zfs', 'destroy', 'zroot/jailfleet/web'],
      ['rctl', '-r', 'jail:web'],
      ['mount', '-p'],
    ]);
    expect(host.datasets.has('zroot/jailfleet/web')).toBe(false);
  });

  test('destroy survives a host without RCTL', async () => {
    const driver = driverFor();
    host.overrides.push((argv) => (argv[0] === 'rctl' ? { exitCode: 1, stderr: 'rctl: RACCT/RCTL present, but disabled\n' } : undefined));
    await expect(driver.destroy('web')).resolves.toBeUndefined();
  });

  test('a hand-edited spec.json is refused by its contract, naming the file and the field, and destroy still removes the jail', async () => {
    const warnings: unknown[] = [];
    const logger = { debug: () => undefined, info: () => undefined, warn: (obj: unknown) => void warnings.push(obj) };
    const driver = new FreebsdDriver({ dataDir: data, run: host.run, logger: logger as never });
    await driver.prepare(sampleSpec({ mounts: [] }));
    const file = join(dir, 'spec.json');
    await writeFile(file, JSON.stringify({ ...sampleSpec({ mounts: [] }), stopTimeoutMs: 'soon' }));
    const err = await readSavedSpec(file).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SavedSpecInvalid);
    expect(err).toMatchObject({ name: 'SavedSpecInvalid', file, field: 'stopTimeoutMs', message: expect.stringMatching(/spec\.json: stopTimeoutMs: /) });

    await expect(driver.destroy('web')).resolves.toBeUndefined();
    expect(warnings).toEqual([expect.objectContaining({ jail: 'web', file, field: 'stopTimeoutMs', err: expect.any(SavedSpecInvalid) })]);
    await expect(lstat(dir)).rejects.toMatchObject({ code: 'ENOENT' });

    await mkdir(dir, { recursive: true });
    await writeFile(file, '{"name": "web",');
    await expect(readSavedSpec(file)).rejects.toMatchObject({ name: 'SavedSpecInvalid', file, field: null, message: expect.stringMatching(/not valid JSON/) });
    await expect(readSavedSpec(join(dir, 'missing.json'))).resolves.toBeNull();
  });

  test('destroy never removes a directory that is still mounted', async () => {
    const driver = driverFor();
    await driver.prepare(sampleSpec({ mounts: [] }));
    host.overrides.push((argv) => (argv[0] === 'umount' ? { exitCode: 1, stderr: 'umount: Device busy\n' } : undefined));
    await expect(driver.destroy('web')).rejects.toMatchObject({ step: 'destroy' });
    expect((await lstat(join(root, 'etc'))).isDirectory()).toBe(true);
  });
});

describe('exec runs argv in the running jail with the spec env only', () => {
  test('the exact command, with timeout and output cap passed to the runner', async () => {
    const driver = driverFor();
    const spec = sampleSpec();
    await runningJail(driver, spec);
    let result: unknown;
    expect(
      await transcript(async () => {
        result = await driver.exec(spec, ['/bin/ls', '-l', '/; reboot'], { timeoutMs: 5000, maxOutputBytes: 1024 });
      }),
    ).toEqual([
      jls('web'),
      ['jexec', '-l', '-U', 'root', 'web', '/usr/bin/env', '-i', 'A=1', 'GREETING=hello world', '/bin/ls', '-l', '/; reboot'],
    ]);
    expect(host.opts[host.opts.length - 1]).toEqual({ timeoutMs: 5000, maxOutputBytes: 1024 });
    expect(result).toEqual({ exitCode: 0, stdout: 'hello from the jail\n', stderr: '', truncated: false, timedOut: false });
  });

  test('a timeout and a truncated output are reported', async () => {
    const driver = driverFor();
    const spec = sampleSpec();
    await runningJail(driver, spec);
    host.overrides.push((argv) =>
      argv[0] === 'jexec' && argv[1] === '-l' ? { exitCode: 137, stdout: 'partial', timedOut: true, truncated: true } : undefined,
    );
    await expect(driver.exec(spec, ['sleep', '100'], { timeoutMs: 10, maxOutputBytes: 7 })).resolves.toEqual({
      exitCode: 124,
      stdout: 'partial',
      stderr: '',
      truncated: true,
      timedOut: true,
    });
  });

  test('refuses a jail that is not running', async () => {
    await expect(driverFor().exec(sampleSpec(), ['true'], { timeoutMs: 1000, maxOutputBytes: 10 })).rejects.toMatchObject({
      step: 'exec',
      message: expect.stringMatching(/not running/),
    });
  });
});

describe('sessions (exec -i/-t, console) run through jexec, by exact argv', () => {
  const helper = '/usr/local/libexec/jailfleet/jailsession';

  test('a command with a terminal: the helper makes the pty, jexec -l -U root with env -i and TERM', async () => {
    const driver = driverFor();
    const spec = sampleSpec();
    await runningJail(driver, spec);
    let spawn: unknown;
    expect(
      await transcript(async () => {
        spawn = await driver.sessionSpawn(spec, { command: ['/bin/sh', '-c', 'tty; reboot'], login: false, tty: { rows: 30, cols: 100, term: 'xterm-256color' } });
      }),
    ).toEqual([jls('web')]);
    expect(spawn).toEqual({
      argv: [helper, '--tty', '30', '100', '--', 'jexec', '-l', '-U', 'root', 'web', '/usr/bin/env', '-i', 'A=1', 'GREETING=hello world', 'TERM=xterm-256color', '/bin/sh', '-c', 'tty; reboot'],
      env: { PATH: '/sbin:/bin:/usr/sbin:/usr/bin', LC_ALL: 'C' },
    });
  });

  test('without a terminal: plain pipes, no TERM', async () => {
    const driver = driverFor();
    const spec = sampleSpec();
    await runningJail(driver, spec);
    const spawn = await driver.sessionSpawn(spec, { command: ['cat'], login: false, tty: null });
    expect(spawn.argv).toEqual([helper, '--', 'jexec', '-l', '-U', 'root', 'web', '/usr/bin/env', '-i', 'A=1', 'GREETING=hello world', 'cat']);
  });

  test('the console: jexec -l -U root with no command (the user\'s login shell)', async () => {
    const driver = driverFor();
    const spec = sampleSpec();
    await runningJail(driver, spec);
    const spawn = await driver.sessionSpawn(spec, { command: ['/bin/sh'], login: true, tty: { rows: 24, cols: 80, term: 'xterm' } });
    expect(spawn.argv).toEqual([helper, '--tty', '24', '80', '--', 'jexec', '-l', '-U', 'root', 'web']);
  });

  test('an exec health check runs through jexec, by exact argv, and its exit code decides', async () => {
    const driver = driverFor();
    const spec = sampleSpec({ health: { exec: ['/usr/local/bin/check', '--quick', '; reboot'], intervalMs: 1000, timeoutMs: 500, failures: 1, graceMs: 0 } });
    await runningJail(driver, spec);
    const ran: { argv: string[]; env: Record<string, string>; timeoutMs: number }[] = [];
    const results: { kind: string; ok: boolean; reason: string | null }[] = [];
    let unhealthy: string | null = null;
    const checks = new HealthChecks({
      driver,
      log: pino({ level: 'silent' }),
      onChange: () => undefined,
      onUnhealthy: (_jail, reason) => (unhealthy = reason),
      onResult: (_jail, kind, ok, reason) => void results.push({ kind, ok, reason }),
      runCheckProcess: async (spawn, timeoutMs) => {
        ran.push({ argv: spawn.argv, env: spawn.env, timeoutMs });
        return ran.length === 1 ? { exitCode: 0, timedOut: false, output: '' } : { exitCode: 3, timedOut: false, output: 'db down\n' };
      },
    });
    try {
      const calls = await transcript(async () => {
        checks.watch(spec, 1234, null);
        for (const until = Date.now() + 5000; unhealthy === null && Date.now() < until; ) await new Promise((r) => setTimeout(r, 20));
      });
      // the driver asks jls whether the jail runs, once per check, and nothing else
      expect(calls).toEqual([jls('web'), jls('web')]);
    } finally {
      checks.stopAll();
    }
    const argv = [helper, '--', 'jexec', '-l', '-U', 'root', 'web', '/usr/bin/env', '-i', 'A=1', 'GREETING=hello world', '/usr/local/bin/check', '--quick', '; reboot'];
    expect(ran).toEqual([
      { argv, env: { PATH: '/sbin:/bin:/usr/sbin:/usr/bin', LC_ALL: 'C' }, timeoutMs: 500 },
      { argv, env: { PATH: '/sbin:/bin:/usr/sbin:/usr/bin', LC_ALL: 'C' }, timeoutMs: 500 },
    ]);
    expect(results).toEqual([
      { kind: 'exec', ok: true, reason: null },
      { kind: 'exec', ok: false, reason: '/usr/local/bin/check exited 3: db down' },
    ]);
    expect(unhealthy).toBe('health check failed 1 time in a row: /usr/local/bin/check exited 3: db down');
  });

  test('refuses a jail that is not running, for a session and for cp', async () => {
    await expect(driverFor().sessionSpawn(sampleSpec(), { command: ['true'], login: false, tty: null })).rejects.toMatchObject({ step: 'exec', message: expect.stringMatching(/not running/) });
    await expect(driverFor().copySpawn(sampleSpec(), 'unpack', '/tmp/x', 1024)).rejects.toMatchObject({ step: 'copy', message: expect.stringMatching(/not running/) });
  });

  test('cp: jailfs attaches to the jail by name (jail_attach), after jls says it runs', async () => {
    const driver = driverFor();
    const spec = sampleSpec();
    await runningJail(driver, spec);
    let into: unknown;
    expect(
      await transcript(async () => {
        into = await driver.copySpawn(spec, 'unpack', '/usr/local/etc/app.conf', 1_048_576);
      }),
    ).toEqual([jls('web')]);
    expect(into).toEqual({ argv: ['/usr/local/libexec/jailfleet/jailfs', 'unpack', 'web', '/usr/local/etc/app.conf', '1048576'], env: { PATH: '/sbin:/bin:/usr/sbin:/usr/bin', LC_ALL: 'C' } });
    expect((await driver.copySpawn(spec, 'pack', '/var/log', 5)).argv).toEqual(['/usr/local/libexec/jailfleet/jailfs', 'pack', 'web', '/var/log', '5']);
  });
});

describe('inspect, list and wait read the host', () => {
  test('inspect through the lifecycle', async () => {
    const driver = driverFor();
    const spec = sampleSpec();
    expect(await driver.inspect('web')).toEqual({ name: 'web', prepared: false, mounted: false, pid: null });
    await driver.prepare(spec);
    expect(await driver.inspect('web')).toEqual({ name: 'web', prepared: true, mounted: false, pid: null });
    await driver.mount(spec);
    await driver.start(spec);
    expect(await transcript(async () => expect(await driver.inspect('web')).toEqual({ name: 'web', prepared: true, mounted: true, pid: 4242 }))).toEqual([
      ['mount', '-p'],
      jls('web'),
      ['pgrep', '-j', 'web'],
    ]);
    await driver.stop(spec);
    expect(await driver.inspect('web')).toEqual({ name: 'web', prepared: true, mounted: true, pid: null });
  });

  test('a pid file naming a process outside the jail is not the jail', async () => {
    const driver = driverFor();
    const spec = sampleSpec();
    await runningJail(driver, spec);
    writeFileSync(join(dir, 'pid'), '1\n');
    expect((await driver.inspect('web')).pid).toBeNull();
  });

  test('list: the jail directories and our jails that jls still shows', async () => {
    const driver = driverFor();
    await driver.prepare(sampleSpec());
    host.jails.set('ghost', { jid: 20, path: join(data, 'jails', 'ghost', 'root'), hostname: 'ghost' });
    host.jails.set('other', { jid: 21, path: '/usr/jails/other', hostname: 'other' });
    expect(await driver.list()).toEqual(['ghost', 'web']);
    expect(host.calls[host.calls.length - 1]).toEqual(['jls', '--libxo', 'json', '-v']);
  });

  test('wait resolves when the pid leaves the jail, and on abort rejects with AbortError', async () => {
    const driver = driverFor();
    const spec = sampleSpec();
    const { pid } = await runningJail(driver, spec);
    const done = driver.wait('web', pid, new AbortController().signal);
    setTimeout(() => host.procs.set('web', []), 150);
    await expect(done).resolves.toEqual({ exitCode: null });

    host.procs.set('web', [pid]);
    const ac = new AbortController();
    const waiting = driver.wait('web', pid, ac.signal);
    setTimeout(() => ac.abort(), 50);
    await expect(waiting).rejects.toMatchObject({ name: 'AbortError' });
  });
});

describe('hostile jail names never reach a command', () => {
  test.each(['x; rm -rf /', '../etc', '-rf', 'Web', 'a b', ''])('%j is refused before any argv is built', async (name) => {
    const driver = driverFor();
    const spec = { ...sampleSpec(), name } as JailSpec;
    await expect(driver.destroy(name)).rejects.toMatchObject({ name: 'DriverStepFailed', step: 'destroy' });
    await expect(driver.prepare(spec)).rejects.toMatchObject({ name: 'DriverStepFailed', step: 'prepare' });
    await expect(driver.start(spec)).rejects.toMatchObject({ name: 'DriverStepFailed', step: 'start' });
    await expect(driver.exec(spec, ['true'], { timeoutMs: 10, maxOutputBytes: 10 })).rejects.toMatchObject({ step: 'exec' });
    await expect(driver.inspect(name)).rejects.toThrow(/invalid jail name/);
    expect(() => rctlRules(name, { maxProcs: 1 })).toThrow(/invalid jail name/);
    expect(host.calls).toEqual([]);
  });
});

describe('parseJlsJson reads jls --libxo json', () => {
  test('the -v shape, a jail without a name, and no jails', () => {
    const text = JSON.stringify({
      __version: '2',
      'jail-information': {
        jail: [
          { jid: 7, hostname: 'web.example', path: '/var/db/jailfleet/jails/web/root', name: 'web', state: 'ACTIVE', cpusetid: 3, ipv4_addrs: [] },
          { jid: '8', hostname: 'x', path: '/j/8', state: 'DYING' },
        ],
      },
    });
    expect(parseJlsJson(text)).toEqual([
      { jid: 7, name: 'web', hostname: 'web.example', path: '/var/db/jailfleet/jails/web/root', dying: false },
      { jid: 8, name: '8', hostname: 'x', path: '/j/8', dying: true },
    ]);
    expect(parseJlsJson('{"__version": "2", "jail-information": {"jail": []}}')).toEqual([]);
  });

  test('garbage is an error, not an empty list', () => {
    expect(() => parseJlsJson('jls: jail "x" not found')).toThrow(/no valid JSON/);
    expect(() => parseJlsJson('{"jails": []}')).toThrow(/unknown shape/);
  });
});

describe('rctlRules builds rctl(8) -a rules for a jail', () => {
  test('memory in bytes, cpu in percent of one core, processes', () => {
    expect(rctlRules('web', { memoryMB: 512, cpuPercent: 50, maxProcs: 100 })).toEqual([
      ['rctl', '-a', 'jail:web:memoryuse:deny=536870912'],
      ['rctl', '-a', 'jail:web:pcpu:deny=50'],
      ['rctl', '-a', 'jail:web:maxproc:deny=100'],
    ]);
    expect(rctlRules('web', {})).toEqual([]);
    expect(rctlRules('web', { maxProcs: 3 })).toEqual([['rctl', '-a', 'jail:web:maxproc:deny=3']]);
  });

  test('refuses amounts that are not positive integers', () => {
    expect(() => rctlRules('web', { memoryMB: 0 })).toThrow(/positive integer/);
    expect(() => rctlRules('web', { cpuPercent: 12.5 })).toThrow(/positive integer/);
    expect(() => rctlRules('web', { maxProcs: -1 })).toThrow(/positive integer/);
  });
});

describe('the default runner runs real processes from an argv array', () => {
  test('arguments reach the program verbatim (no shell)', async () => {
    await expect(execaRunner(['echo', 'a;b', '$(id)', '`id`'])).resolves.toMatchObject({ exitCode: 0, stdout: 'a;b $(id) `id`\n' });
  });

  test('exit codes, input, a missing program', async () => {
    await expect(execaRunner(['false'])).resolves.toMatchObject({ exitCode: 1 });
    await expect(execaRunner(['cat'], { input: 'from stdin' })).resolves.toMatchObject({ exitCode: 0, stdout: 'from stdin' });
    await expect(execaRunner(['jailfleet-no-such-program'])).resolves.toMatchObject({ exitCode: 127 });
  });

  test('a timeout kills the program; output is capped', async () => {
    await expect(execaRunner(['sleep', '5'], { timeoutMs: 100 })).resolves.toMatchObject({ exitCode: 124, timedOut: true });
    const r = await execaRunner(['head', '-c', '5000', '/dev/zero'], { maxOutputBytes: 100 });
    expect(r).toMatchObject({ exitCode: 0, truncated: true });
    expect(r.stdout.length).toBe(100);
  });
});
