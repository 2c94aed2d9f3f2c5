// Jails that cannot escape: root inside a jail tries each way out the issue lists, through
// `jailfleet exec` (a session: jailsession, with the jail's capabilities and seccomp filter) and
// through the jail's own command, and each attempt must fail. Real nats-server, real agent, real
// jails; the attempts that have no busybox/coreutils command run test/e2e/jail-probe.c.
// No attempt may harm the host even if it went through: clocks are set to what they read,
// knobs written with the value they hold, device nodes made only in the jail's /tmp, hostnames
// checked and put back, and a host binary is only ever opened, never written.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { execa } from 'execa';
import { TestCluster, jailProcesses, repoRoot } from '../support/cluster.js';

const asRoot = process.getuid?.() === 0;
const d = asRoot ? describe : describe.skip;
if (!asRoot) console.warn('end-to-end tests need root (namespaces, mounts): skipped');

const probePath = join(repoRoot, 'dist', 'test', 'e2e', 'jail-probe');
const PROBE = '/probe/jail-probe';

/** The host pids of the children of `pid` (its first thread's children file). */
const childrenOf = (pid: number) =>
  readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);

const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

d('a jail cannot escape', () => {
  let c: TestCluster;
  /** The host pid of the victim jail's command (another jail's process, for the attacker). */
  let victimPid: number;
  const hostName = hostname();

  const exec = (jail: string, argv: string[]) => c.cli(['exec', jail, '--', ...argv]);
  const probe = (attempt: string, ...args: string[]) => exec('attacker', [PROBE, attempt, ...args]);
  const refused = (errno: string) => ({ exitCode: 1, stdout: `refused: ${errno}`, stderr: '' });

  beforeAll(async () => {
    expect(existsSync(probePath)).toBe(true); // built by scripts/setup.mjs
    // the probe's directory is the one mount source this host allows
    c = await TestCluster.start({ hosts: ['host-1'], agentArgs: ['--cpu', '64', '--memory-mb', '65536', '--allow-mount-source', dirname(probePath)] });
    await c.until('the host up', async () => (await c.json<{ status: string }[]>(['hosts'])).some((h) => h.status === 'up'));
    const mount = `${dirname(probePath)}:/probe:ro`;
    // the attacker's own command tries a raw socket and a user namespace before it sleeps
    const attackerCommand = ['/bin/sh', '-c', `${PROBE} raw-socket; ${PROBE} unshare-user; grep Seccomp: /proc/self/status; exec sleep 3600`];
    for (const [name, extra, command] of [
      ['victim', [], ['/bin/sleep', '3600']],
      ['attacker', ['--network', 'none'], attackerCommand],
    ] as const) {
      const r = await c.cli(['run', name, '--mount', mount, ...extra, '--', ...command]);
      expect(r).toMatchObject({ exitCode: 0, stderr: '' });
    }
    await c.until('both jails running', async () => {
      const rows = await c.json<{ name: string; state: string }[]>(['ps']);
      return rows.filter((r) => r.state === 'running').length === 2;
    });
    const victim = jailProcesses(c.dir).find((p) => p.jail === 'victim')!;
    const init = childrenOf(victim.pid)[0]!;
    victimPid = await c.until('the victim\'s command', async () => childrenOf(init)[0]);
  }, 90_000);

  afterAll(async () => {
    await c?.stop();
  }, 120_000);

  it('the jail\'s own command cannot make a raw socket (network none) nor a user namespace, and runs under the filter', async () => {
    const log = await c.until('the attacker\'s probes in its log', async () => {
      const r = await c.cli(['logs', 'attacker']);
      return r.stdout.includes('Seccomp:') && r.stdout;
    });
    expect(log.split('\n').map((l) => l.trim())).toEqual(['refused: EPERM', 'refused: EPERM', 'Seccomp:\t2'].map((l) => l.trim()));
  });

  it('exec runs under the same filter as the jail, whatever runs it', async () => {
    expect(await exec('attacker', ['grep', 'Seccomp:', '/proc/self/status'])).toMatchObject({ exitCode: 0, stdout: 'Seccomp:\t2' });
    expect(await exec('victim', ['grep', 'Seccomp:', '/proc/self/status'])).toMatchObject({ exitCode: 0, stdout: 'Seccomp:\t2' });
  });

  it('the seed\'s chroot escape fails: mkdir x; chroot x; cd ../../..; chroot .', async () => {
    expect(await probe('chroot-escape', '/tmp/x')).toEqual(refused('EPERM'));
    const r = await exec('attacker', ['/bin/sh', '-c', 'mkdir -p /tmp/y && chroot /tmp/y /bin/true']);
    expect(r.exitCode).not.toBe(0);
  });

  it('no device node of a disk', async () => {
    expect(await probe('mknod-disk', '/tmp/disk')).toEqual(refused('EPERM'));
    expect((await exec('attacker', ['mknod', '/tmp/sda', 'b', '8', '0'])).exitCode).not.toBe(0);
    expect((await exec('attacker', ['test', '-e', '/tmp/sda'])).exitCode).toBe(1);
  });

  it('no mount: proc, tmpfs, cgroup with a release_agent', async () => {
    expect(await exec('attacker', ['mkdir', '-p', '/tmp/m'])).toMatchObject({ exitCode: 0 });
    expect(await probe('mount-proc', '/tmp/m')).toEqual(refused('EPERM'));
    expect(await probe('mount-tmpfs', '/tmp/m')).toEqual(refused('EPERM'));
    expect(await probe('mount-cgroup', '/tmp/m')).toEqual(refused('EPERM'));
    expect((await exec('attacker', ['grep', '-c', ' /tmp/m ', '/proc/self/mountinfo'])).stdout).toBe('0');
  });

  it('no user namespace: unshare -U then mount fails at the unshare', async () => {
    const r = await exec('attacker', ['unshare', '-U', '-r', 'mount', '-t', 'tmpfs', 'x', '/tmp']);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(/unshare failed: Operation not permitted/);
    expect(await probe('unshare-user')).toEqual(refused('EPERM'));
    expect(await probe('clone-user')).toEqual(refused('EPERM'));
  });

  it('a process outside the jail is neither seen nor signalled', async () => {
    const pids = (await exec('attacker', ['/bin/sh', '-c', 'ls -d /proc/[0-9]*'])).stdout.split('\n');
    // the init, the command (sleep), the session's shell and its ls: nothing of the host
    expect(pids.length).toBeLessThanOrEqual(4);
    for (const pid of [victimPid, process.pid, c.agents.get('host-1')!.pid!]) {
      expect(await probe('kill', String(pid))).toEqual(refused('ESRCH'));
    }
  });

  it('ptrace and process_vm_readv of another jail\'s process (out of sight anyway) and of the jail\'s own are refused', async () => {
    // the filter refuses before the kernel looks the pid up; without it the pid is not in the jail's namespace (ESRCH)
    expect(await probe('ptrace', String(victimPid))).toEqual(refused('EPERM'));
    expect(await probe('vm-read', String(victimPid))).toEqual(refused('EPERM'));
    expect(await probe('ptrace', '2')).toEqual(refused('EPERM'));
    expect(await probe('vm-read', '2')).toEqual(refused('EPERM'));
  });

  it('open_by_handle_at, bpf, perf_event_open, keyctl, userfaultfd and module loading are refused', async () => {
    for (const attempt of ['open-by-handle', 'bpf', 'perf', 'keyctl', 'userfaultfd', 'init-module']) {
      expect({ attempt, r: await probe(attempt) }).toEqual({ attempt, r: refused('EPERM') });
    }
  });

  it('no write under /proc/sys, to /proc/sysrq-trigger or under /sys', async () => {
    // each write puts back the value the host has (or "h", sysrq's help): harmless if it ever went through
    const overcommit = readFileSync('/proc/sys/vm/overcommit_memory', 'utf8').trim();
    const sysctl = await exec('attacker', ['/bin/sh', '-c', `echo ${overcommit} > /proc/sys/vm/overcommit_memory`]);
    expect(sysctl).toMatchObject({ exitCode: expect.any(Number), stderr: expect.stringMatching(/Read-only file system/) });
    expect(sysctl.exitCode).not.toBe(0);
    if (existsSync('/proc/sysrq-trigger')) {
      const sysrq = await exec('attacker', ['/bin/sh', '-c', 'echo h > /proc/sysrq-trigger']);
      expect(sysrq.exitCode).not.toBe(0);
      expect(sysrq.stderr).toMatch(/Read-only file system/);
    }
    const helper = existsSync('/sys/kernel/uevent_helper') ? readFileSync('/sys/kernel/uevent_helper', 'utf8').trim() : '';
    const sys = await exec('attacker', ['/bin/sh', '-c', `echo "${helper}" > /sys/kernel/uevent_helper`]);
    expect(sys.exitCode).not.toBe(0);
    expect(readFileSync('/proc/sys/vm/overcommit_memory', 'utf8').trim()).toBe(overcommit);
  });

  it('the host\'s clock and hostname stay as they are', async () => {
    try {
      expect(await probe('settime')).toEqual(refused('EPERM'));
      expect(await probe('sethostname', 'jailfleet-escaped')).toEqual(refused('EPERM'));
      expect((await exec('attacker', ['hostname', 'jailfleet-escaped'])).exitCode).not.toBe(0);
      expect((await exec('attacker', ['hostname'])).stdout).toBe('attacker');
      expect(hostname()).toBe(hostName);
    } finally {
      if (hostname() !== hostName) await execa('hostname', [hostName]);
    }
  });

  it('the agent\'s data directory and the init\'s environment are out of reach', async () => {
    expect((await exec('attacker', ['test', '-e', c.dir])).exitCode).toBe(1);
    expect((await exec('attacker', ['test', '-e', realpathSync(c.dir)])).exitCode).toBe(1);
    expect((await exec('attacker', ['cat', '/proc/1/environ'])).stderr).toMatch(/Permission denied/);
    expect((await exec('attacker', ['readlink', '/proc/1/cwd'])).exitCode).not.toBe(0);
    const fds = await exec('attacker', ['/bin/sh', '-c', 'for f in /proc/1/fd/*; do readlink "$f"; done']);
    expect(fds.stdout).not.toContain(c.dir);
  });

  it('no host binary can be opened for writing through /proc/<pid>/exe while execs run', async () => {
    const hostTools = ['setpriv', 'nsenter'].map((t) => ['/usr/bin', '/bin'].map((d2) => join(d2, t)).find(existsSync)!);
    const binaries = [...hostTools, process.execPath, join(repoRoot, 'dist', 'native', 'jailinit'), join(repoRoot, 'dist', 'native', 'jailsession')];
    const before = binaries.map(sha256);
    // inside: open every visible /proc/<pid>/exe read-write (never truncating, never writing), again and again
    const racer = c.cli(['exec', 'attacker', '--', '/bin/sh', '-c',
      'end=$(($(date +%s) + 6)); while [ $(date +%s) -lt $end ]; do for p in /proc/[0-9]*; do if (exec 3<>"$p/exe") 2>/dev/null; then echo "OPENED $p $(readlink $p/exe)"; fi; done; done; echo raced'], { timeoutMs: 60_000 });
    // outside: execs come and go meanwhile, each one a host helper entering the jail
    for (let i = 0; i < 15; i++) expect((await exec('attacker', ['/bin/true'])).exitCode).toBe(0);
    const r = await racer;
    expect(r.stdout).toBe('raced');
    expect(binaries.map(sha256)).toEqual(before);
  }, 60_000);
});
