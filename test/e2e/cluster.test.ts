// The user's story end to end: real nats-server, real `jailfleet serve` processes (scheduler,
// status, two agents), real jails in Linux namespaces, driven only through the `jailfleet` CLI.
// The cluster is shared by the file; each test runs jails of its own names and never relies on
// what another test left, so any one of them runs alone (`jest -t NAME`).
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { TestCluster, cliPath } from '../support/cluster.js';
import { CMD_STREAM, agentConsumerName, type PsRow } from '../../contracts/index.js';
import { scratchDir } from '../support/scratch.js';

const asRoot = process.getuid?.() === 0;
const d = asRoot ? describe : describe.skip;
if (!asRoot) console.warn('end-to-end tests need root (namespaces, mounts): skipped');


/** Whether the kernel still has process `pid`. */
const alive = (pid: number) => existsSync(`/proc/${pid}`);

/** A fleet file of sleepers named `names`. */
function sleepers(names: string[]): string {
  const file = join(scratchDir('jf-fleet-'), 'fleet.yaml');
  writeFileSync(file, `jails:\n${names.map((n) => `  - name: ${n}\n    command: [/bin/sleep, "3600"]\n    restart: always\n`).join('')}`);
  return file;
}

d('a cluster of two hosts runs jails for a user', () => {
  let c: TestCluster;
  const ps = () => c.json<PsRow[]>(['ps']);
  const rowsOf = async (names: string[]) => (await ps()).filter((r) => names.includes(r.name));

  beforeAll(async () => {
    // spread: this story is about jails landing on every host (binpack, the default, is test/e2e/consolidation.test.ts)
    c = await TestCluster.start({ hosts: ['host-1', 'host-2'], schedulerArgs: ['--strategy', 'spread'] });
    await c.until('both hosts up', async () => {
      const hosts = await c.json<{ host: string; status: string }[]>(['hosts']);
      return hosts.filter((h) => h.status === 'up').length === 2;
    });
  }, 60_000);

  afterAll(async () => {
    await c?.stop();
  }, 120_000);

  it('applies ten jails from a fleet file and spreads them across both hosts', async () => {
    const names = Array.from({ length: 10 }, (_, i) => `svc-${i}`);
    const fleet = sleepers(names);
    const r = await c.cli(['apply', '-f', fleet, '--wait']);
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain('10 of 10 jails running');
    const rows = await rowsOf(names);
    expect(rows).toHaveLength(10);
    const perHost = new Map<string, number>();
    for (const row of rows) {
      expect(row.state).toBe('running');
      expect(row.pid).toBeGreaterThan(0);
      expect(row.generation).toBe(1);
      perHost.set(row.host!, (perHost.get(row.host!) ?? 0) + 1);
    }
    expect(perHost.get('host-1')).toBe(5);
    expect(perHost.get('host-2')).toBe(5);
    // the pids are real processes on this machine
    for (const row of rows) expect(readFileSync(`/proc/${row.pid}/stat`, 'utf8')).toContain('jailinit');
    // applying the same file again changes nothing
    const again = await c.cli(['apply', '-f', fleet]);
    expect(again.exitCode).toBe(0);
    expect(again.stdout).toContain('svc-0: generation 1 (unchanged)');
    const hosts = await c.json<{ host: string; jails: number; status: string }[]>(['hosts']);
    expect(hosts.map((h) => [h.host, h.status])).toEqual([
      ['host-1', 'up'],
      ['host-2', 'up'],
    ]);
  });

  it('runs a pinned jail, execs in it, and keeps its environment clean', async () => {
    const r = await c.cli(['run', 'web', '--host', 'host-2', '--env', 'GREETING=hello world', '--hostname', 'web.example', '--', '/bin/sleep', '3600']);
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    expect(r.stdout.trim()).toBe('web running on host-2');
    const ex = await c.cli(['exec', 'web', '--', '/bin/sh', '-c', 'echo "$GREETING"; hostname; env | sort | tr "\\n" " "; exit 7']);
    expect(ex.exitCode).toBe(7);
    const [greeting, hostname, env] = ex.stdout.split('\n');
    expect(greeting).toBe('hello world');
    expect(hostname).toBe('web.example');
    expect(env).not.toMatch(/JAILFLEET_NATS_URL|HOME=\/root/);
    expect((await c.cli(['rm', 'web'])).exitCode).toBe(0);
  });

  it("shows a jail's console with logs", async () => {
    const r = await c.cli(['run', 'talker', '--', '/bin/sh', '-c', 'for i in 1 2 3; do echo "line $i"; done; echo oops >&2; exec sleep 3600']);
    expect(r.exitCode).toBe(0);
    await c.until('output written', async () => (await c.cli(['logs', 'talker'])).stdout.includes('oops'));
    // (the harness strips the last newline, as a shell's $(...) would)
    expect((await c.cli(['logs', 'talker'])).stdout).toBe('line 1\nline 2\nline 3\noops');
    expect((await c.cli(['logs', 'talker', '-n', '2'])).stdout).toBe('line 3\noops');
    const bad = await c.cli(['logs', 'talker', '-n', 'lots']);
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toBe('jailfleet: --lines: must be a whole number (got "lots")');
    const none = await c.cli(['logs', 'nobody']);
    expect(none.exitCode).toBe(1);
    expect(none.stderr).toBe('jailfleet: no jail named "nobody"');
    expect((await c.cli(['rm', 'talker'])).exitCode).toBe(0);
  });

  it('stops, starts and removes a jail', async () => {
    const r = await c.cli(['run', 'cycle', '--host', 'host-2', '--', '/bin/sleep', '3600']);
    expect({ exitCode: r.exitCode, stderr: r.stderr }).toEqual({ exitCode: 0, stderr: '' });
    const first = (await rowsOf(['cycle']))[0]!;
    expect(alive(first.pid!)).toBe(true);
    expect((await c.cli(['stop', 'cycle'])).exitCode).toBe(0);
    const stopped = await c.until('cycle stopped', async () => (await ps()).find((j) => j.name === 'cycle' && j.state === 'stopped'));
    expect(stopped.pid).toBeNull();
    // stopped means the kernel no longer runs it
    await c.until('the first process gone', async () => !alive(first.pid!));
    expect((await c.cli(['start', 'cycle'])).exitCode).toBe(0);
    const back = await c.until('cycle running again', async () => (await ps()).find((j) => j.name === 'cycle' && j.state === 'running'));
    expect(back.host).toBe('host-2');
    expect(back.generation).toBe(1);
    expect(back.pid).not.toBe(first.pid);
    expect(alive(back.pid!)).toBe(true);
    expect((await c.cli(['rm', 'cycle'])).exitCode).toBe(0);
    await c.until('cycle gone', async () => !(await ps()).some((j) => j.name === 'cycle'));
    await c.until('cycle process gone', async () => !alive(back.pid!));
    const gone = await c.cli(['stop', 'cycle']);
    expect(gone.exitCode).not.toBe(0);
    expect(gone.stderr).toBe('jailfleet: no jail named "cycle"');
  });

  it('reports the exit code of a jail whose command ends', async () => {
    const r = await c.cli(['run', 'oneshot', '--restart', 'never', '--', '/bin/sh', '-c', 'exit 4']);
    // it ran: the run command reports it running (a jail passes through running before its exit
    // is seen, and run counts a jail seen running even if it stopped since), then it stops
    expect({ exitCode: r.exitCode, stderr: r.stderr }).toEqual({ exitCode: 0, stderr: '' });
    expect(r.stdout.trim()).toMatch(/^oneshot running on host-[12]$/);
    const row = await c.until('oneshot stopped', async () => (await ps()).find((j) => j.name === 'oneshot' && j.state === 'stopped'));
    expect(row).toMatchObject({ pid: null, exitCode: 4, restarts: 0 });
    const events = await c.cli(['events', '--json']);
    const mine = events.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
      .filter((e) => e.jail === 'oneshot');
    expect(mine.map((e) => e.state)).toContain('running');
    expect(mine.at(-1)).toMatchObject({ state: 'stopped', exitCode: 4 });
    expect((await c.cli(['rm', 'oneshot'])).exitCode).toBe(0);

    // a program that does not exist in the jail fails the start step, and run says so
    const ghost = await c.cli(['run', 'ghost', '--restart', 'never', '--', '/no/such/program']);
    expect(ghost.exitCode).toBe(1);
    expect(ghost.stderr).toBe('jailfleet: ghost failed: start: cannot run /no/such/program: No such file or directory');
    const row2 = (await ps()).find((j) => j.name === 'ghost');
    expect(row2).toMatchObject({ state: 'failed', error: { step: 'start', message: 'cannot run /no/such/program: No such file or directory' } });
    expect((await c.cli(['rm', 'ghost'])).exitCode).toBe(0);
  });

  it('refuses a bad spec naming the field and the rule, and disturbs nothing', async () => {
    const calm = ['calm-0', 'calm-1'];
    expect((await c.cli(['apply', '-f', sleepers(calm), '--wait'])).exitCode).toBe(0);
    const before = await rowsOf(calm);
    expect(before.map((j) => j.state)).toEqual(['running', 'running']);
    const dir = scratchDir('jf-bad-');
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'jails:\n  - name: ok-one\n    command: [/bin/true]\n  - name: evil\n    command: [/bin/true]\n    mounts:\n      - { source: /etc/../root, target: /x }\n');
    const r = await c.cli(['apply', '-f', bad]);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(/^jailfleet: .*jails\.1\.mounts\.0\.source: must not contain "\." or "\.\." segments/);
    const names = await c.cli(['run', 'Bad_Name', '--', '/bin/true']);
    expect(names.exitCode).not.toBe(0);
    expect(names.stderr).toMatch(/^jailfleet: NAME: must be lowercase letters/);
    const typo = join(dir, 'typo.json');
    writeFileSync(typo, JSON.stringify({ jails: [{ name: 'x', comand: ['/bin/true'] }] }));
    const t = await c.cli(['apply', '-f', typo]);
    expect(t.exitCode).toBe(2);
    // the unknown key (the typo) is named first
    expect(t.stderr).toMatch(/^jailfleet: .*invalid spec: jails\.0: Unrecognized key: "comand"; jails\.0\.command: /);
    const comma = join(dir, 'comma.json');
    writeFileSync(comma, '{"jails":[{"name":"x","command":["/bin/true"]},]}\n');
    const cm = await c.cli(['apply', '-f', comma]);
    expect(cm.exitCode).toBe(2);
    // one line, although JSON.parse quotes the file's last line break
    expect(cm.stderr).toMatch(/^jailfleet: .*comma\.json: not valid JSON: [^\n]*$/);
    const empty = join(dir, 'empty.yaml');
    writeFileSync(empty, '\n');
    expect((await c.cli(['apply', '-f', empty])).stderr).toBe(`jailfleet: ${empty}: file is empty (expected { jails: [spec, ...] })`);
    expect((await c.cli(['apply', '-f', join(dir, 'missing.yaml')])).stderr).toBe(`jailfleet: cannot read ${join(dir, 'missing.yaml')}: no such file`);
    const st = await c.cli(['ps', '--state', 'runing']);
    expect(st.exitCode).toBe(2);
    expect(st.stderr).toMatch(/^jailfleet: option '--state <state>' argument 'runing' is invalid/);
    const to = await c.cli(['run', 'x', '--stop-timeout', 'abc', '--', '/bin/true']);
    expect(to.stderr).toBe('jailfleet: --stop-timeout: must be a whole number of milliseconds (got "abc")');
    const flagBad = await c.cli(['run', 'x', '--network', 'bridge', '--', '/bin/true']);
    expect(flagBad.exitCode).not.toBe(0);
    expect(flagBad.stderr).toMatch(/^jailfleet: .*--network/);
    const after = await ps();
    // nothing disturbed: the same rows (usage aside, a reading that moves by itself)
    const stable = (rows: PsRow[]) => rows.map(({ usage: _usage, ...row }) => row);
    expect(stable(after.filter((j) => calm.includes(j.name)))).toEqual(stable(before));
    for (const j of before) expect(alive(j.pid!)).toBe(true);
    expect(after.filter((j) => ['ok-one', 'evil', 'x'].includes(j.name))).toEqual([]);
    for (const n of calm) expect((await c.cli(['rm', n])).exitCode).toBe(0);
  });

  it('says why a jail pinned to an unknown host cannot run, and follows events live', async () => {
    const r = await c.cli(['run', 'nowhere', '--host', 'nope', '--timeout', '20000', '--', '/bin/true']);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toBe('jailfleet: nowhere unplaced: pinned host "nope" is unknown (0 of 2 hosts match)');
    const row = (await ps()).find((j) => j.name === 'nowhere');
    expect(row).toMatchObject({ state: 'unplaced', host: null, error: { step: 'place' } });
    expect((await c.cli(['rm', 'nowhere'])).exitCode).toBe(0);
    await c.until('nowhere gone', async () => !(await ps()).some((j) => j.name === 'nowhere'));

    // events --follow prints the history first, then a jail's events as they happen, until interrupted
    expect((await c.cli(['run', 'earlier', '--', '/bin/sleep', '3600'])).exitCode).toBe(0);
    const follow = execa(process.execPath, [cliPath, 'events', '--follow', '--json'], { env: { JAILFLEET_NATS_URL: c.url }, reject: false });
    let seen = '';
    follow.stdout!.on('data', (b: Buffer) => (seen += b.toString()));
    await c.until('history printed', async () => seen.includes('"jail":"earlier"'));
    expect(seen).not.toContain('"jail":"live"');
    expect((await c.cli(['run', 'live', '--', '/bin/sleep', '3600'])).exitCode).toBe(0);
    await c.until('live event followed', async () => seen.includes('"jail":"live","generation":1,"seq":3,"state":"running"'));
    follow.kill('SIGINT');
    const done = await follow;
    expect(done.exitCode).toBe(0);
    for (const n of ['earlier', 'live']) expect((await c.cli(['rm', n])).exitCode).toBe(0);
  });

  it('drops garbage published on a command subject and keeps the agent running', async () => {
    expect((await c.cli(['run', 'steady', '--host', 'host-1', '--', '/bin/sleep', '3600'])).exitCode).toBe(0);
    const [before] = await rowsOf(['steady']);
    const nc = await connect({ servers: c.url });
    try {
      // among them a destroy of `steady` in a wire version the agent does not speak
      const payloads = ['not json', '{"v":1,"op":"ensure"}', JSON.stringify({ v: 99, op: 'destroy', jail: 'steady', generation: 1, revision: 99, issuedAt: new Date().toISOString() }), 'x'.repeat(512 * 1024), '{"v":1,"op":"destroy","jail":"../../etc","generation":1,"revision":1,"issuedAt":"2026-01-01T00:00:00Z"}'];
      const seqs: number[] = [];
      for (const p of payloads) {
        // the stream's acknowledgement says where each one landed
        const ack = await nc.request('jailfleet.cmd.host-1', new TextEncoder().encode(p), { timeout: 5000 }).catch(() => undefined);
        const seq = ack ? (JSON.parse(new TextDecoder().decode(ack.data)) as { seq?: number }).seq : undefined;
        if (seq) seqs.push(seq);
      }
      expect(seqs.length).toBeGreaterThanOrEqual(4);
      // garbage on the heartbeat and API subjects too
      nc.publish('jailfleet.hb.host-1', new TextEncoder().encode('{"v":1}'));
      const api = await nc.request('jailfleet.api.apply', new TextEncoder().encode('{"v":1,"fleet":{"jails":[{"name":"a;rm -rf /"}]}}'), { timeout: 5000 });
      expect(JSON.parse(new TextDecoder().decode(api.data))).toMatchObject({ ok: false, error: { code: 'invalid' } });
      // the agent took every one off its queue for good: acknowledged or terminated, none waiting
      // for a redelivery (a command it choked on would stay pending)
      const jsm = await jetstreamManager(nc);
      const consumer = await c.until('the garbage consumed', async () => {
        const info = await jsm.consumers.info(CMD_STREAM, agentConsumerName('host-1'));
        return info.ack_floor.stream_seq >= Math.max(...seqs) && info.num_ack_pending === 0 ? info : undefined;
      });
      expect(consumer.num_pending).toBe(0);
    } finally {
      await nc.close();
    }
    expect(c.agents.get('host-1')!.exitCode).toBeNull();
    // nothing was destroyed: `steady` runs as before, the same process
    expect((await rowsOf(['steady']))[0]).toMatchObject({ state: 'running', host: 'host-1', pid: before!.pid, generation: 1, restarts: 0 });
    expect(alive(before!.pid!)).toBe(true);
    // the agent still works: a new jail on host-1 runs
    const r = await c.cli(['run', 'after-garbage', '--host', 'host-1', '--', '/bin/sleep', '3600']);
    expect({ exitCode: r.exitCode, stdout: r.stdout.trim() }).toEqual({ exitCode: 0, stdout: 'after-garbage running on host-1' });
    for (const n of ['steady', 'after-garbage']) expect((await c.cli(['rm', n])).exitCode).toBe(0);
  });
});
