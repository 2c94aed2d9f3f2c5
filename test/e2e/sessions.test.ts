// Working inside a jail, the admin's daily tools: `exec` streaming both ways (with a real
// terminal under -t, driven through tmux), `cp` in and out, `logs -f`. Real nats-server, real
// agent, real jails; only the `jailfleet` CLI is used. Each test uses jails of its own.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { TestCluster, cliPath, processArgvs } from '../support/cluster.js';
import { scratchDir } from '../support/scratch.js';

const asRoot = process.getuid?.() === 0;
const d = asRoot ? describe : describe.skip;
if (!asRoot) console.warn('end-to-end tests need root (namespaces, mounts): skipped');

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

d('an admin works inside a jail', () => {
  let c: TestCluster;
  let scratch: string;

  const run = async (name: string, command: string[] = ['/bin/sleep', '3600']) => {
    const r = await c.cli(['run', name, '--', ...command]);
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
  };
  const jailRoot = (name: string) => join(c.dir, 'hosts', 'host-1', 'jails', name, 'root');

  beforeAll(async () => {
    c = await TestCluster.start({ hosts: ['host-1'] });
    scratch = scratchDir('jf-sessions-');
    await c.until('the host up', async () => (await c.json<{ status: string }[]>(['hosts'])).some((h) => h.status === 'up'));
  }, 60_000);

  afterAll(async () => {
    rmSync(scratch, { recursive: true, force: true });
    await c?.stop();
  }, 120_000);

  it('exec streams output as the command writes it, and the command exit code is the CLI\'s', async () => {
    await run('streamer');
    const p = execa(process.execPath, [cliPath, 'exec', 'streamer', '--', '/bin/sh', '-c', 'echo first; sleep 30; echo never'], { env: { JAILFLEET_NATS_URL: c.url }, reject: false });
    let out = '';
    p.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    await c.until('the first line, while the command still runs', async () => out.includes('first'), 10_000);
    // without a terminal, a SIGTERM of the CLI is the command's
    p.kill('SIGTERM');
    const r = await p;
    expect(r.exitCode).toBe(143);
    expect(out).toBe('first\n');
    // the sleep is gone with the session
    const left = await c.cli(['exec', 'streamer', '--', '/bin/sh', '-c', 'cat /proc/[0-9]*/cmdline | tr "\\0" " "']);
    expect(left.stdout).toContain('sleep 3600');
    expect(left.stdout).not.toContain('sleep 30');

    const r2 = await c.cli(['exec', 'streamer', '--', '/bin/sh', '-c', 'echo out; echo err >&2; exit 7']);
    expect(r2).toEqual({ exitCode: 7, stdout: 'out', stderr: 'err' });
  }, 60_000);

  it('exec -i streams stdin, 20 MB intact both ways, in the jail\'s cgroup', async () => {
    await run('piper');
    const input = randomBytes(20 * 1024 * 1024).toString('base64');
    const r = await c.cli(['exec', '-i', 'piper', '--', 'sha256sum'], { input });
    expect(r.stderr).toBe('');
    expect(r.stdout.split(' ')[0]).toBe(sha256(Buffer.from(input)));
    const cat = await execa(process.execPath, [cliPath, 'exec', '-i', 'piper', '--', 'cat'], { env: { JAILFLEET_NATS_URL: c.url }, input, stripFinalNewline: false, maxBuffer: 100 * 1024 * 1024 });
    expect(cat.stdout.length).toBe(input.length);
    expect(cat.stdout === input).toBe(true);
    const cg = await c.cli(['exec', 'piper', '--', 'cat', '/proc/self/cgroup']);
    expect(cg.stdout).toMatch(/\/jailfleet\/[^/]+\/piper$/m);
  }, 120_000);

  it('exec --timeout kills the command and says so; no limit without it', async () => {
    await run('timer');
    const r = await c.cli(['exec', '--timeout', '500', 'timer', '--', '/bin/sleep', '10']);
    expect(r.exitCode).toBe(124);
    expect(r.stderr).toBe('jailfleet: killed after 500 ms (--timeout)');
    const slow = await c.cli(['exec', 'timer', '--', '/bin/sh', '-c', 'sleep 2; echo done']);
    expect(slow).toEqual({ exitCode: 0, stdout: 'done', stderr: '' });
  }, 60_000);

  it('refuses an unknown jail, a stopped jail and a path that climbs out, each in one line', async () => {
    await run('stopper');
    expect(await c.cli(['exec', '-it', 'nobody', '--', '/bin/sh'])).toEqual({ exitCode: 1, stdout: '', stderr: 'jailfleet: no jail named "nobody"' });
    expect((await c.cli(['stop', 'stopper'])).exitCode).toBe(0);
    await c.until('stopper stopped', async () => (await c.json<{ name: string; state: string }[]>(['ps'])).some((j) => j.name === 'stopper' && j.state === 'stopped'));
    expect(await c.cli(['exec', 'stopper', '--', '/bin/true'])).toEqual({ exitCode: 1, stdout: '', stderr: 'jailfleet: jail "stopper" is stopped, not running' });
    expect(await c.cli(['cp', '/etc/hostname', 'stopper:/tmp/x'])).toEqual({ exitCode: 1, stdout: '', stderr: 'jailfleet: jail "stopper" is stopped, not running' });
    const climb = await c.cli(['cp', '/etc/hostname', 'stopper:/tmp/../../etc/passwd']);
    expect(climb).toEqual({ exitCode: 2, stdout: '', stderr: 'jailfleet: DST: stopper:/tmp/../../etc/passwd: ".." must not climb above the jail\'s root' });
    const relative = await c.cli(['cp', 'stopper:etc/passwd', join(scratch, 'x')]);
    expect(relative).toEqual({ exitCode: 2, stdout: '', stderr: 'jailfleet: SRC: stopper:etc/passwd: must be an absolute path inside the jail' });
    const both = await c.cli(['cp', join(scratch, 'a'), join(scratch, 'b')]);
    expect(both).toEqual({ exitCode: 2, stdout: '', stderr: 'jailfleet: cp: exactly one of SRC and DST must be NAME:/path in a jail' });
  }, 60_000);

  it('logs -f shows a line written after it started, and goes on across a restart, saying so', async () => {
    const script = 'echo "run begins"; while sleep 0.2; do if [ -f /tmp/go ]; then rm /tmp/go; echo "after go"; fi; done';
    const r = await c.cli(['run', 'talker', '--restart', 'always', '--', '/bin/sh', '-c', script]);
    expect(r.exitCode).toBe(0);
    const p = execa(process.execPath, [cliPath, 'logs', '-f', 'talker'], { env: { JAILFLEET_NATS_URL: c.url }, reject: false });
    let out = '';
    let err = '';
    p.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    p.stderr!.on('data', (b: Buffer) => (err += b.toString()));
    await c.until('the first line', async () => out.includes('run begins'), 15_000);
    expect((await c.cli(['exec', 'talker', '--', 'touch', '/tmp/go'])).exitCode).toBe(0);
    await c.until('the line written after logs -f started', async () => out.includes('after go'), 15_000);
    // SIGTERM to the jail's init ends its command; the restart policy starts it again
    expect((await c.cli(['exec', 'talker', '--', 'kill', '-TERM', '1'])).exitCode).toBe(0);
    await c
      .until('the restart told and the new run followed', async () => /restarted \(pid \d+\)/.test(err) && out.split('run begins').length === 3, 30_000)
      .catch((e: Error) => {
        p.kill('SIGKILL');
        throw new Error(`${e.message}; stdout ${JSON.stringify(out)}, stderr ${JSON.stringify(err)}`);
      });
    expect(err).toMatch(/^jailfleet: talker (stopped; still following its console\njailfleet: talker )?restarted \(pid \d+\)\n$/);
    expect(out).toBe('run begins\nafter go\nrun begins\n');
    p.kill('SIGINT');
    const ended = await p;
    expect({ code: ended.exitCode, err }).toEqual({ code: 0, err: expect.any(String) });

    expect(await c.cli(['logs', '--tail', '1', 'talker'])).toEqual({ exitCode: 0, stdout: 'run begins', stderr: '' });
    const events = await c.cli(['events', '--jail', 'talker']);
    expect(events.exitCode).toBe(0);
    const lines = events.stdout.split('\n');
    expect(lines.length).toBeGreaterThanOrEqual(4);
    for (const line of lines) expect(line).toMatch(/^\S+  host-1  talker  gen=\d+  \w+/);
    expect(await c.cli(['events', '--jail', 'nobody'])).toEqual({ exitCode: 0, stdout: '', stderr: '' });
  }, 90_000);

  it('logs --since shows what the jail wrote since then, to within a second, alone or with --tail and -f', async () => {
    await run('diarist', ['/bin/sh', '-c', 'echo early; while [ ! -f /tmp/go ]; do sleep 0.1; done; echo late one; echo late two; sleep 3600']);
    await c.until('the early line', async () => (await c.cli(['logs', 'diarist'])).stdout === 'early', 15_000);
    // more than the sampling period after the early line, before the late ones
    await new Promise((r) => setTimeout(r, 2500));
    const mark = new Date().toISOString();
    await new Promise((r) => setTimeout(r, 1500));
    expect((await c.cli(['exec', 'diarist', '--', 'touch', '/tmp/go'])).exitCode).toBe(0);
    await c.until('the late lines', async () => (await c.cli(['logs', 'diarist'])).stdout.endsWith('late two'), 15_000);
    expect(await c.cli(['logs', '--since', mark, 'diarist'])).toEqual({ exitCode: 0, stdout: 'late one\nlate two', stderr: '' });
    expect(await c.cli(['logs', '--since', '1h', 'diarist'])).toEqual({ exitCode: 0, stdout: 'early\nlate one\nlate two', stderr: '' });
    expect(await c.cli(['logs', '--since', '1h', '--tail', '1', 'diarist'])).toEqual({ exitCode: 0, stdout: 'late two', stderr: '' });
    // with -f: the lines since, then what comes
    const p = execa(process.execPath, [cliPath, 'logs', '-f', '--since', mark, 'diarist'], { env: { JAILFLEET_NATS_URL: c.url }, reject: false });
    let out = '';
    p.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    await c.until('the lines since the mark', async () => out === 'late one\nlate two\n', 15_000);
    p.kill('SIGINT');
    expect((await p).exitCode).toBe(0);
    const bad = await c.cli(['logs', '--since', 'yesterday', 'diarist']);
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toMatch(/^jailfleet: --since: must be a duration such as 90s, 10m, 1h30m or 2d, or a time such as 2026-12-02T08:00:00Z \(got "yesterday"\)$/);
  }, 90_000);

  it('cp of a 50 MB file and a tree into a jail and back keeps every byte and mode', async () => {
    await run('copier');
    const big = join(scratch, 'big.bin');
    writeFileSync(big, randomBytes(50 * 1024 * 1024));
    const into = await c.cli(['cp', big, 'copier:/tmp/big.bin']);
    expect(into).toEqual({ exitCode: 0, stdout: '', stderr: '' });
    const inJail = await c.cli(['exec', 'copier', '--', 'sha256sum', '/tmp/big.bin']);
    expect(inJail.stdout.split(' ')[0]).toBe(sha256(readFileSync(big)));
    const back = join(scratch, 'back.bin');
    expect(await c.cli(['cp', 'copier:/tmp/big.bin', back])).toEqual({ exitCode: 0, stdout: '', stderr: '' });
    expect(sha256(readFileSync(back))).toBe(sha256(readFileSync(big)));

    const tree = join(scratch, 'tree');
    mkdirSync(join(tree, 'sub'), { recursive: true });
    writeFileSync(join(tree, 'sub', 'secret'), 'only me\n', { mode: 0o600 });
    writeFileSync(join(tree, 'run.sh'), '#!/bin/sh\necho ran\n', { mode: 0o755 });
    expect((await c.cli(['cp', tree, 'copier:/tmp'])).exitCode).toBe(0);
    const listed = await c.cli(['exec', 'copier', '--', '/bin/sh', '-c', 'stat -c "%a %n" /tmp/tree /tmp/tree/sub /tmp/tree/sub/secret /tmp/tree/run.sh; /tmp/tree/run.sh']);
    expect(listed.stdout).toBe('755 /tmp/tree\n755 /tmp/tree/sub\n600 /tmp/tree/sub/secret\n755 /tmp/tree/run.sh\nran');
    const out = join(scratch, 'tree-back');
    expect((await c.cli(['cp', 'copier:/tmp/tree', out])).exitCode).toBe(0);
    expect(readFileSync(join(out, 'sub', 'secret'), 'utf8')).toBe('only me\n');
    expect(statSync(join(out, 'sub', 'secret')).mode & 0o777).toBe(0o600);
    expect(statSync(join(out, 'run.sh')).mode & 0o777).toBe(0o755);

    const limited = await c.cli(['cp', '--max-mb', '10', big, 'copier:/tmp/too-big.bin']);
    expect(limited.exitCode).toBe(1);
    expect(limited.stderr).toMatch(/^jailfleet: cp .*: .*larger than the limit of 10485760 bytes$/);
    // refused before a byte of it went in
    expect((await c.cli(['exec', 'copier', '--', 'test', '-e', '/tmp/too-big.bin'])).exitCode).toBe(1);
  }, 180_000);

  it('a cp into a jail that is killed halfway leaves the old file, not a partial one', async () => {
    await run('halfway');
    expect((await c.cli(['exec', 'halfway', '--', '/bin/sh', '-c', 'echo old > /tmp/victim'])).exitCode).toBe(0);
    const big = join(scratch, 'halfway.bin');
    writeFileSync(big, randomBytes(200 * 1024 * 1024));
    const p = execa(process.execPath, [cliPath, 'cp', big, 'halfway:/tmp/victim'], { env: { JAILFLEET_NATS_URL: c.url }, reject: false });
    const writing = () => processArgvs().some((x) => x.argv.some((a) => a.endsWith('/jailfs')) && x.argv.includes('unpack'));
    await c.until('the agent writing the file', async () => writing(), 20_000);
    p.kill('SIGKILL');
    await p;
    await c.until('the agent gave the write up', async () => !writing(), 60_000);
    const seen = await c.cli(['exec', 'halfway', '--', '/bin/sh', '-c', 'cat /tmp/victim; ls -a /tmp']);
    expect(seen.stdout.split('\n')[0]).toBe('old');
    expect(seen.stdout).not.toMatch(/jailfs/);
    rmSync(big);
  }, 120_000);

  it('cp into a directory the jail keeps swapping with a symlink to / never writes on the host (CVE-2018-15664)', async () => {
    const swap = 'while :; do rm -rf /tmp/swap; mkdir /tmp/swap; rm -rf /tmp/swap; ln -s / /tmp/swap; done';
    await run('swapper', ['/bin/sh', '-c', swap]);
    const marker = `jailfleet-cp-race-${process.pid}`;
    const file = join(scratch, marker);
    writeFileSync(file, 'raced\n');
    let ok = 0;
    for (let i = 0; i < 25; i++) {
      const r = await c.cli(['cp', file, `swapper:/tmp/swap/${marker}`]);
      if (r.exitCode === 0) ok++;
      else expect(r.stderr).toMatch(/^jailfleet: cp .*: /);
      expect(existsSync(`/${marker}`)).toBe(false);
    }
    expect(ok).toBeGreaterThan(0);
    // what did land, landed in the jail's own / (or its /tmp/swap while it was a directory)
    expect(existsSync(`/${marker}`)).toBe(false);
  }, 120_000);

  it('cp into a path whose parent is a symlink to / writes inside the jail, never on the host', async () => {
    await run('linker');
    expect((await c.cli(['exec', 'linker', '--', 'ln', '-s', '/', '/tmp/up'])).exitCode).toBe(0);
    expect((await c.cli(['exec', 'linker', '--', 'ln', '-s', '../../../../../../../../etc', '/tmp/etc-link'])).exitCode).toBe(0);
    const marker = `jailfleet-cp-escape-${process.pid}`;
    const file = join(scratch, marker);
    writeFileSync(file, 'inside\n');
    expect(await c.cli(['cp', file, `linker:/tmp/up/${marker}`])).toEqual({ exitCode: 0, stdout: '', stderr: '' });
    expect(await c.cli(['cp', file, `linker:/tmp/etc-link/${marker}`])).toEqual({ exitCode: 0, stdout: '', stderr: '' });
    expect(existsSync(`/${marker}`)).toBe(false);
    expect(existsSync(`/etc/${marker}`)).toBe(false);
    expect(readFileSync(join(jailRoot('linker'), 'etc', marker), 'utf8')).toBe('inside\n');
    const seen = await c.cli(['exec', 'linker', '--', 'cat', `/${marker}`]);
    expect(seen.stdout).toBe('inside');
    // and out: the symlink to / read from the jail is the jail's /, not the host's
    const hostname = join(scratch, 'hostname-out');
    expect((await c.cli(['cp', 'linker:/tmp/up/etc/hostname', hostname])).exitCode).toBe(0);
    expect(readFileSync(hostname, 'utf8')).toBe('linker\n');
  }, 60_000);
});

/** A tmux server of its own (its own socket, no user config), driven by argv only. */
class Tmux {
  readonly socket = `jf-test-${process.pid}-${Date.now()}`;
  tmux(args: string[]) {
    return execa('tmux', ['-L', this.socket, '-f', '/dev/null', ...args], { reject: false });
  }
  async screen(): Promise<string> {
    return String((await this.tmux(['capture-pane', '-p', '-t', 't'])).stdout);
  }
  async kill() {
    await this.tmux(['kill-server']);
    // the server leaves its socket file behind
    rmSync(join(`/tmp/tmux-${process.getuid?.() ?? 0}`, this.socket), { force: true });
  }
}

d('exec -it gives the jail a real terminal', () => {
  let c: TestCluster;
  let tmux: Tmux;

  beforeAll(async () => {
    c = await TestCluster.start({ hosts: ['host-1'] });
    tmux = new Tmux();
    await c.until('the host up', async () => (await c.json<{ status: string }[]>(['hosts'])).some((h) => h.status === 'up'));
  }, 60_000);

  afterAll(async () => {
    await tmux?.kill();
    await c?.stop();
  }, 120_000);

  it('console gives a login shell with a terminal in the jail', async () => {
    expect((await c.cli(['run', 'consoled', '--', '/bin/sleep', '3600'])).exitCode).toBe(0);
    // stdin is a pipe here: the terminal is the jail's all the same
    const r = await c.cli(['console', 'consoled'], { input: 'tty; echo "home=$HOME"; hostname; exit 4\n' });
    expect(r.exitCode).toBe(4);
    expect(r.stdout).toMatch(/^\/dev\/pts\/\d+\r?$/m);
    expect(r.stdout).toMatch(/^home=\/root\r?$/m);
    expect(r.stdout).toMatch(/^consoled\r?$/m);
  }, 60_000);

  it('tty, window size and its change, C-c reaching the jail, exit 3 as the CLI\'s code', async () => {
    expect((await c.cli(['run', 'shell', '--', '/bin/sleep', '3600'])).exitCode).toBe(0);
    // a host shell in the pane runs the CLI, so that what it leaves behind (exit code, terminal modes) shows
    const started = await tmux.tmux([
      'new-session', '-d', '-s', 't', '-x', '100', '-y', '30', '-e', `JAILFLEET_NATS_URL=${c.url}`, '/bin/sh',
    ]);
    expect(started.exitCode).toBe(0);
    // a failure shows the screen as it was
    const screenHas = (re: RegExp, what: string) =>
      c.until(what, async () => re.test(await tmux.screen()), 15_000).catch(async (err: Error) => {
        throw new Error(`${err.message}; the screen:\n${await tmux.screen()}`);
      });
    await screenHas(/^# ?$/m, 'the host shell');
    await tmux.tmux(['send-keys', '-t', 't', "PS1='host$ '; clear", 'Enter']);
    await screenHas(/^host\$ ?$/m, 'the host prompt');
    await tmux.tmux(['send-keys', '-t', 't', `${process.execPath} ${cliPath} exec -it shell -- /bin/sh`, 'Enter']);
    await screenHas(/^# ?$/m, 'the prompt');
    await tmux.tmux(['send-keys', '-t', 't', 'tty', 'Enter']);
    await screenHas(/^\/dev\/pts\/\d+$/m, 'a pts device');
    await tmux.tmux(['send-keys', '-t', 't', 'stty size', 'Enter']);
    await screenHas(/^30 100$/m, 'the window size');
    await tmux.tmux(['resize-window', '-t', 't', '-x', '120', '-y', '40']);
    await tmux.tmux(['send-keys', '-t', 't', 'clear; stty size', 'Enter']);
    await screenHas(/^40 120$/m, 'the new window size');
    console.log(`the screen after the resize:\n${await tmux.screen()}`);
    await tmux.tmux(['send-keys', '-t', 't', 'clear; sleep 100', 'Enter']);
    await c.until('sleep running in the jail', async () => (await c.cli(['exec', 'shell', '--', '/bin/sh', '-c', 'cat /proc/[0-9]*/cmdline | tr "\\0" " "'])).stdout.includes('sleep 100'));
    await tmux.tmux(['send-keys', '-t', 't', 'C-c']);
    await c.until('sleep gone', async () => !(await c.cli(['exec', 'shell', '--', '/bin/sh', '-c', 'cat /proc/[0-9]*/cmdline | tr "\\0" " "'])).stdout.includes('sleep 100'));
    await tmux.tmux(['send-keys', '-t', 't', 'echo "shell $((40+2)) alive"', 'Enter']);
    await screenHas(/^shell 42 alive$/m, 'the shell alive after C-c');
    console.log(`the screen before exit:\n${await tmux.screen()}`);
    await tmux.tmux(['send-keys', '-t', 't', 'clear; exit 3', 'Enter']);
    await screenHas(/^host\$ ?$/m, 'the host prompt again');
    await tmux.tmux(['send-keys', '-t', 't', 'echo "code=$?"; stty -a | grep -o -- "-*icanon"', 'Enter']);
    await screenHas(/^code=3\n(-?)icanon/m, 'the exit code');
    console.log(`the screen after exit:\n${await tmux.screen()}`);
    // raw mode ends with the session: the host's terminal is canonical again
    expect(await tmux.screen()).toMatch(/^code=3\nicanon$/m);
  }, 90_000);
});
