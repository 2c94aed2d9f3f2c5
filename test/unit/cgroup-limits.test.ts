// The pure part of a linux jail's limits: which cgroup hierarchy a host offers (from its
// /proc/self/mountinfo), which files get which values, and how an out-of-memory kill is read.
// The kernel side is tested in test/integration/linux-driver.test.ts.
import { describe, expect, test } from '@jest/globals';
import { resourcesSchema } from '../../contracts/index.js';
import { cgroupLimitWrites, cpuQuotaUs, detectCgroupLayout, oomKillsIn, usageOf } from '../../services/agent/drivers/cgroup-limits.js';

const ROOT = '22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw';
const SYSFS = '20 22 0:20 / /sys rw,nosuid,nodev,noexec,relatime shared:6 - sysfs sysfs rw';

/** This machine's table: the v1 controllers, one per hierarchy, and an empty cgroup2 beside them. */
const V1_SEPARATE = [
  ROOT,
  SYSFS,
  '30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755',
  '31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu',
  '32 30 0:29 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct',
  '34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory',
  '38 30 0:35 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids',
  '39 30 0:36 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd',
  '40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw',
].join('\n');

/** systemd's hybrid layout (Debian 10, Ubuntu 20.04): cpu and cpuacct share a hierarchy. */
const HYBRID = [
  ROOT,
  SYSFS,
  '25 20 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755',
  '26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate',
  '27 25 0:25 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd',
  '30 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct',
  '31 25 0:29 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory',
  '33 25 0:31 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,pids',
].join('\n');

/** The unified layout (Debian 11+, Fedora 31+), with an optional field before the separator. */
const V2 = [ROOT, SYSFS, '26 20 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot'].join(
  '\n',
);

describe('detectCgroupLayout reads the hierarchies from /proc/self/mountinfo', () => {
  test('v1 with one hierarchy per controller (this machine): v1, the empty cgroup2 beside it ignored, cpuacct apart from cpu', () => {
    expect(detectCgroupLayout(V1_SEPARATE)).toEqual({
      version: 1,
      mountPoints: { memory: '/sys/fs/cgroup/memory', cpu: '/sys/fs/cgroup/cpu', pids: '/sys/fs/cgroup/pids' },
      cpuacct: '/sys/fs/cgroup/cpuacct',
    });
  });

  test('hybrid: the controllers live in v1, cpu in its shared cpu,cpuacct hierarchy', () => {
    expect(detectCgroupLayout(HYBRID)).toEqual({
      version: 1,
      mountPoints: { memory: '/sys/fs/cgroup/memory', cpu: '/sys/fs/cgroup/cpu,cpuacct', pids: '/sys/fs/cgroup/pids' },
    });
  });

  test('unified: v2 at its mount point', () => {
    expect(detectCgroupLayout(V2)).toEqual({ version: 2, mountPoint: '/sys/fs/cgroup' });
  });

  test('a named v1 hierarchy without controllers (name=systemd) does not make a v2 host v1', () => {
    const withNamed = `${V2}\n27 26 0:25 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd`;
    expect(detectCgroupLayout(withNamed)).toEqual({ version: 2, mountPoint: '/sys/fs/cgroup' });
  });

  test('the first mount of a hierarchy wins; escaped mount points are decoded', () => {
    const twice = [V2.replace('/sys/fs/cgroup rw', '/sys/fs/my\\040cgroups rw'), '99 22 0:24 / /mnt/again rw - cgroup2 cgroup2 rw'].join('\n');
    expect(detectCgroupLayout(twice)).toEqual({ version: 2, mountPoint: '/sys/fs/my cgroups' });
  });

  test('v1 without a controller, or no cgroups at all: no layout, and why', () => {
    const noPids = V1_SEPARATE.split('\n').filter((l) => !l.includes('rw,pids')).join('\n');
    expect(detectCgroupLayout(noPids)).toEqual({ version: null, why: 'cgroup v1 is mounted without the pids controller' });
    expect(detectCgroupLayout([ROOT, SYSFS].join('\n'))).toEqual({ version: null, why: expect.stringMatching(/^no cgroup hierarchy is mounted/) });
    expect(detectCgroupLayout('')).toMatchObject({ version: null });
  });
});

describe('the values a jail cgroup gets', () => {
  const r = (over: object) => resourcesSchema.parse(over);

  test('cpu cores become a CFS quota per 100 ms period, never below the kernel minimum of 1 ms', () => {
    expect(cpuQuotaUs(0.5)).toBe(50_000);
    expect(cpuQuotaUs(2)).toBe(200_000);
    expect(cpuQuotaUs(0.1)).toBe(10_000);
    expect(cpuQuotaUs(0.01)).toBe(1_000);
    expect(cpuQuotaUs(0.001)).toBe(1_000);
    expect(cpuQuotaUs(0.333)).toBe(33_300);
  });

  test('v1: memory and memory+swap at the limit (memory first), cpu period and quota, pids', () => {
    expect(cgroupLimitWrites(1, r({ cpu: 0.5, memoryMB: 64, maxProcs: 32 }))).toEqual([
      { controller: 'memory', file: 'memory.limit_in_bytes', value: '67108864' },
      { controller: 'memory', file: 'memory.memsw.limit_in_bytes', value: '67108864', ifPresent: true },
      { controller: 'cpu', file: 'cpu.cfs_period_us', value: '100000' },
      { controller: 'cpu', file: 'cpu.cfs_quota_us', value: '50000' },
      { controller: 'pids', file: 'pids.max', value: '32' },
    ]);
  });

  test('v2: memory.max, no swap, cpu.max as "quota period", pids.max', () => {
    expect(cgroupLimitWrites(2, r({ cpu: 1.5, memoryMB: 1024, maxProcs: 1000 }))).toEqual([
      { controller: 'memory', file: 'memory.max', value: String(1024 * 1024 * 1024) },
      { controller: 'memory', file: 'memory.swap.max', value: '0', ifPresent: true },
      { controller: 'cpu', file: 'cpu.max', value: '150000 100000' },
      { controller: 'pids', file: 'pids.max', value: '1000' },
    ]);
  });

  test('the spec defaults (0.1 cores, 64 MB, 128 processes) are what a jail without resources gets', () => {
    expect(cgroupLimitWrites(2, r({})).map((w) => w.value)).toEqual(['67108864', '0', '10000 100000', '128']);
  });
});

describe('oomKillsIn reads the kernel kill counter', () => {
  test('v1 memory.oom_control and v2 memory.events', () => {
    expect(oomKillsIn('oom_kill_disable 0\nunder_oom 0\noom_kill 2\n')).toBe(2);
    expect(oomKillsIn('low 0\nhigh 0\nmax 17\noom 1\noom_kill 1\noom_group_kill 0\n')).toBe(1);
    expect(oomKillsIn('low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n')).toBe(0);
  });

  test('a kernel without the counter (v1 before linux 4.13): unknown, not zero', () => {
    expect(oomKillsIn('oom_kill_disable 0\nunder_oom 0\n')).toBeNull();
    expect(oomKillsIn('oom_group_kill 3\n')).toBeNull();
  });
});

describe('usageOf reads what a jail uses (the metrics and the ps usage column)', () => {
  test('v2: usage_usec of cpu.stat in seconds, memory.current in bytes', () => {
    const stat = 'usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 0\n';
    expect(usageOf(2, stat, '1048576\n')).toEqual({ cpuSeconds: 2.5, memoryBytes: 1048576 });
  });

  test('v1: cpuacct.usage in nanoseconds, memory.usage_in_bytes', () => {
    expect(usageOf(1, '1500000000\n', '4096\n')).toEqual({ cpuSeconds: 1.5, memoryBytes: 4096 });
  });

  test('text the kernel does not write: unknown, never a made-up zero', () => {
    expect(usageOf(2, 'user_usec 1\n', '1\n')).toBeNull();
    expect(usageOf(1, '12\n', 'max\n')).toBeNull();
  });
});
