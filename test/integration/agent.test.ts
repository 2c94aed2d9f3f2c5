// The agent against a real nats-server and the real linux driver: commands in, jails on the
// kernel, state events out; idempotent redelivery, generations, re-adoption after a restart.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { jetstream } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { WIRE_VERSION, subjects, type Command, type JailSpec, type StateEvent } from '../../contracts/index.js';
import { Agent } from '../../services/agent/index.js';
import { LinuxDriver } from '../../services/agent/drivers/linux.js';
import { ensureTopology, startNatsServer, type NatsServerHandle } from '../../services/common/index.js';
import { mountsUnder } from '../support/cluster.js';

const asRoot = process.getuid?.() === 0;
const d = asRoot ? describe : describe.skip;
const HOST = 'itest-1';

d('agent with a real nats-server and the linux driver', () => {
  let dir: string;
  let nats: NatsServerHandle;
  let nc: NatsConnection;
  let agent: Agent;
  const events: StateEvent[] = [];
  let revision = 0;
  const log = pino({ level: 'silent' });
  const newAgent = (backoff = { baseMs: 100, maxMs: 1000 }) =>
    new Agent({ host: HOST, dataDir: join(dir, 'agent'), servers: [nats.url], driver: new LinuxDriver({ dataDir: join(dir, 'agent') }), logger: log, heartbeatMs: 200, backoff });
  const spec = (name: string, over: Partial<JailSpec> = {}): JailSpec => ({ name, command: ['/bin/sleep', '3600'], env: {}, mounts: [], network: 'inherit', restart: 'never', stopTimeoutMs: 2000, placement: { labels: {} }, resources: { cpu: 0.1, memoryMB: 64, maxProcs: 128 }, failover: { reschedule: true }, ...over });
  type Draft =
    | { op: 'ensure'; jail: string; generation: number; desired: 'running' | 'stopped'; spec: JailSpec; revision?: number }
    | { op: 'destroy'; jail: string; generation: number; revision?: number };
  const send = async (cmd: Draft) => {
    const full = { v: WIRE_VERSION, issuedAt: new Date().toISOString(), ...cmd, revision: cmd.revision ?? ++revision } as Command;
    await jetstream(nc).publish(subjects.cmd(HOST), new TextEncoder().encode(JSON.stringify(full)));
  };
  const until = async <T>(what: string, f: () => T | undefined | false, ms = 20_000): Promise<T> => {
    const end = Date.now() + ms;
    for (;;) {
      const v = f();
      if (v) return v;
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}; events: ${JSON.stringify(events.slice(-5))}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const latest = (jail: string) => events.filter((e) => e.jail === jail).at(-1);
  const alive = (pid: number) => {
    try {
      return readFileSync(`/proc/${pid}/stat`, 'utf8').includes('jailinit');
    } catch {
      return false;
    }
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'jailfleet-agent-'));
    nats = await startNatsServer({ dir: join(dir, 'nats') });
    nc = await connect({ servers: nats.url });
    await ensureTopology(nc);
    nc.subscribe(subjects.evtAll, {
      callback: (_e, m) => {
        events.push(JSON.parse(new TextDecoder().decode(m.data)) as StateEvent);
      },
    });
    agent = newAgent();
    await agent.start();
  }, 30_000);

  afterAll(async () => {
    await agent?.stop({ teardown: true });
    await nc?.close();
    await nats?.stop();
    const left = mountsUnder(dir);
    if (left.length === 0) rmSync(dir, { recursive: true, force: true });
    expect(left).toEqual([]);
  }, 60_000);

  it('runs a jail on an ensure command and reports every stable state in order with rising seq', async () => {
    await send({ op: 'ensure', jail: 'a', generation: 1, desired: 'running', spec: spec('a') });
    const running = await until('a running', () => latest('a')?.state === 'running' && latest('a'));
    expect(running).toMatchObject({ host: HOST, generation: 1, state: 'running', error: null });
    expect(alive(running.pid!)).toBe(true);
    const mine = events.filter((e) => e.jail === 'a');
    // pending is only the actor's initial state: the first event is the root being ready
    expect(mine.map((e) => e.state)).toEqual(['prepared', 'mounted', 'running']);
    expect(mine.map((e) => e.seq)).toEqual([1, 2, 3]);
  });

  it('does nothing twice when a command is delivered again', async () => {
    const before = latest('a')!;
    await send({ op: 'ensure', jail: 'a', generation: 1, desired: 'running', spec: spec('a'), revision: revision });
    await send({ op: 'ensure', jail: 'a', generation: 1, desired: 'running', spec: spec('a') });
    await new Promise((r) => setTimeout(r, 800));
    expect(latest('a')).toEqual(before);
  });

  it('replaces an older generation and ignores a stale one', async () => {
    const old = latest('a')!;
    await send({ op: 'ensure', jail: 'a', generation: 2, desired: 'running', spec: spec('a', { env: { GEN: '2' } }) });
    const fresh = await until('gen 2 running', () => latest('a')?.generation === 2 && latest('a')?.state === 'running' && latest('a'));
    expect(fresh.pid).not.toBe(old.pid);
    expect(alive(old.pid!)).toBe(false);
    expect(events.some((e) => e.jail === 'a' && e.generation === 1 && e.state === 'destroyed')).toBe(true);
    await send({ op: 'ensure', jail: 'a', generation: 1, desired: 'stopped', spec: spec('a') });
    await new Promise((r) => setTimeout(r, 800));
    expect(latest('a')).toMatchObject({ generation: 2, state: 'running', pid: fresh.pid });
  });

  it('answers exec inside the jail with its env only', async () => {
    const r = await nc.request(subjects.exec(HOST), new TextEncoder().encode(JSON.stringify({ v: 1, jail: 'a', command: ['/usr/bin/env'] })), { timeout: 10_000 });
    const body = JSON.parse(new TextDecoder().decode(r.data));
    expect(body).toMatchObject({ ok: true, result: { exitCode: 0, timedOut: false, truncated: false } });
    expect(body.result.stdout).toBe('GEN=2\n');
    const code = await nc.request(subjects.exec(HOST), new TextEncoder().encode(JSON.stringify({ v: 1, jail: 'a', command: ['/bin/sh', '-c', 'exit 5'] })), { timeout: 10_000 });
    expect(JSON.parse(new TextDecoder().decode(code.data))).toMatchObject({ ok: true, result: { exitCode: 5 } });
    const missing = await nc.request(subjects.exec(HOST), new TextEncoder().encode(JSON.stringify({ v: 1, jail: 'nope', command: ['/bin/true'] })), { timeout: 10_000 });
    expect(JSON.parse(new TextDecoder().decode(missing.data))).toMatchObject({ ok: false, error: { code: 'not_found' } });
  });

  it('re-adopts its running jails after a restart: same pid, no new start', async () => {
    const before = latest('a')!;
    const count = events.length;
    await agent.stop();
    expect(alive(before.pid!)).toBe(true);
    agent = newAgent();
    await agent.start();
    await new Promise((r) => setTimeout(r, 1000));
    expect(alive(before.pid!)).toBe(true);
    // no new lifecycle events: the jail did not go through start again
    expect(events.slice(count).filter((e) => e.jail === 'a')).toEqual([]);
    // and the re-adopted jail is still under control: stop works and reports the exit
    await send({ op: 'ensure', jail: 'a', generation: 2, desired: 'stopped', spec: spec('a', { env: { GEN: '2' } }) });
    const stopped = await until('a stopped', () => latest('a')?.state === 'stopped' && latest('a'));
    expect(stopped.pid).toBeNull();
    expect(alive(before.pid!)).toBe(false);
  });

  it('notices a jail that exits on its own and restarts it by policy', async () => {
    await send({ op: 'ensure', jail: 'flaky', generation: 1, desired: 'running', spec: spec('flaky', { command: ['/bin/sh', '-c', 'sleep 0.3; exit 3'], restart: 'on-failure' }) });
    const restarted = await until('flaky restarted', () => events.find((e) => e.jail === 'flaky' && e.state === 'running' && e.restarts >= 1));
    expect(events.some((e) => e.jail === 'flaky' && e.state === 'stopped' && e.exitCode === 3)).toBe(true);
    expect(restarted.restarts).toBeGreaterThanOrEqual(1);
    await send({ op: 'destroy', jail: 'flaky', generation: 1 });
    await until('flaky destroyed', () => latest('flaky')?.state === 'destroyed');
    expect(mountsUnder(join(dir, 'agent', 'jails', 'flaky'))).toEqual([]);
  });

  it('does not run a finished job again when its command is replayed', async () => {
    const job = spec('job', { command: ['/bin/true'], restart: 'never' });
    await send({ op: 'ensure', jail: 'job', generation: 1, desired: 'running', spec: job });
    const rev = revision;
    await until('job stopped', () => latest('job')?.state === 'stopped');
    const count = events.filter((e) => e.jail === 'job').length;
    // a restarted scheduler republishes what it knows, past the broker's duplicate window
    await send({ op: 'ensure', jail: 'job', generation: 1, desired: 'running', spec: job, revision: rev });
    await new Promise((r) => setTimeout(r, 1000));
    expect(events.filter((e) => e.jail === 'job')).toHaveLength(count);
    await send({ op: 'destroy', jail: 'job', generation: 1 });
    await until('job destroyed', () => latest('job')?.state === 'destroyed');
  });

  it('does not bring a destroyed jail back when an older command is redelivered after the destroy', async () => {
    await send({ op: 'ensure', jail: 'gone', generation: 1, desired: 'running', spec: spec('gone') });
    const rev = revision;
    await until('gone running', () => latest('gone')?.state === 'running');
    await send({ op: 'destroy', jail: 'gone', generation: 1 });
    await until('gone destroyed', () => latest('gone')?.state === 'destroyed');
    const count = events.filter((e) => e.jail === 'gone').length;
    // a nak'd ensure comes back after the destroy (redelivery does not keep order)
    await send({ op: 'ensure', jail: 'gone', generation: 1, desired: 'running', spec: spec('gone'), revision: rev });
    await new Promise((r) => setTimeout(r, 1000));
    expect(events.filter((e) => e.jail === 'gone')).toHaveLength(count);
    // a newer generation is a new jail and runs
    await send({ op: 'ensure', jail: 'gone', generation: 2, desired: 'running', spec: spec('gone') });
    await until('gone generation 2 running', () => latest('gone')?.state === 'running' && latest('gone')?.generation === 2);
    await send({ op: 'destroy', jail: 'gone', generation: 2 });
    await until('gone destroyed again', () => latest('gone')?.state === 'destroyed');
  });

  it('remembers a stop given during a restart backoff across an agent restart', async () => {
    // a slow backoff, so the jail sits in `stopped` with a restart pending
    await agent.stop();
    agent = newAgent({ baseMs: 3000, maxMs: 3000 });
    await agent.start();
    const looping = spec('looping', { command: ['/bin/sh', '-c', 'exit 1'], restart: 'always' });
    await send({ op: 'ensure', jail: 'looping', generation: 1, desired: 'running', spec: looping });
    await until('looping stopped', () => latest('looping')?.state === 'stopped');
    await send({ op: 'ensure', jail: 'looping', generation: 1, desired: 'stopped', spec: looping });
    await new Promise((r) => setTimeout(r, 300));
    await agent.stop();
    agent = newAgent({ baseMs: 100, maxMs: 100 });
    await agent.start();
    await new Promise((r) => setTimeout(r, 4000));
    expect(events.filter((e) => e.jail === 'looping' && e.state === 'running')).toHaveLength(1);
    await send({ op: 'destroy', jail: 'looping', generation: 1 });
    await until('looping destroyed', () => latest('looping')?.state === 'destroyed');
  }, 30_000);

  describe('a jail in restart backoff when the agent restarts is started again at its saved deadline', () => {
    const crashing = (name: string) => spec(name, { command: ['/bin/sh', '-c', 'exit 1'], restart: 'always' });
    /** Runs `name` under an agent with a 3 s backoff until it sits in that backoff; its stopped event. */
    const intoBackoff = async (name: string) => {
      await agent.stop();
      agent = newAgent({ baseMs: 3000, maxMs: 3000 });
      await agent.start();
      await send({ op: 'ensure', jail: name, generation: 1, desired: 'running', spec: crashing(name) });
      return until(`${name} in backoff`, () => events.find((e) => e.jail === name && e.state === 'stopped' && e.restarts === 1));
    };
    /** The next agent's own backoff is 20 s: a start before then is the saved deadline's. */
    const restartAgentWithSlowBackoff = async () => {
      await agent.stop();
      agent = newAgent({ baseMs: 20_000, maxMs: 20_000 });
      await agent.start();
    };
    const startedAgain = (name: string) =>
      until(`${name} started again`, () => events.find((e) => e.jail === name && e.state === 'running' && e.restarts === 1), 15_000);
    const destroy = async (name: string) => {
      await send({ op: 'destroy', jail: name, generation: 1 });
      await until(`${name} destroyed`, () => latest(name)?.state === 'destroyed');
    };

    it('at about the deadline when it is still ahead', async () => {
      const stopped = await intoBackoff('crashing');
      await restartAgentWithSlowBackoff();
      const again = await startedAgain('crashing');
      // the deadline is 3 s after the exit, which came just before the stopped event
      const waited = Date.parse(again.at) - Date.parse(stopped.at);
      expect(waited).toBeGreaterThanOrEqual(2000);
      expect(waited).toBeLessThan(8000);
      await destroy('crashing');
    }, 40_000);

    it('at once when the deadline passed while no agent ran', async () => {
      await intoBackoff('overdue');
      await agent.stop();
      await new Promise((r) => setTimeout(r, 3500));
      const restartedAt = Date.now();
      agent = newAgent({ baseMs: 20_000, maxMs: 20_000 });
      await agent.start();
      const again = await startedAgain('overdue');
      expect(Date.parse(again.at) - restartedAt).toBeLessThan(5000);
      await destroy('overdue');
      // the tests below run with the usual quick backoff
      await agent.stop();
      agent = newAgent();
      await agent.start();
    }, 40_000);
  });

  it('reports a failing step with the step and the reason', async () => {
    await send({ op: 'ensure', jail: 'badmount', generation: 1, desired: 'running', spec: spec('badmount', { mounts: [{ source: '/nonexistent-jailfleet-src', target: '/x', readOnly: true }] }) });
    const failed = await until('badmount failed', () => latest('badmount')?.state === 'failed' && latest('badmount'));
    expect(failed.error).toMatchObject({ step: 'mount' });
    expect(failed.error!.message).toMatch(/nonexistent-jailfleet-src/);
    await send({ op: 'destroy', jail: 'badmount', generation: 1 });
    await until('badmount destroyed', () => latest('badmount')?.state === 'destroyed');
  });

  it('drops malformed and hostile commands and keeps serving', async () => {
    const js = jetstream(nc);
    const bad = ['', '{', '[]', '{"v":1,"op":"ensure","jail":"../x","generation":1,"revision":1,"desired":"running","spec":{},"issuedAt":"x"}', JSON.stringify({ v: 1, op: 'rm-rf', jail: 'a' }), 'A'.repeat(1 << 20)];
    for (const b of bad) await js.publish(subjects.cmd(HOST), new TextEncoder().encode(b));
    await send({ op: 'ensure', jail: 'after', generation: 1, desired: 'running', spec: spec('after') });
    await until('after running', () => latest('after')?.state === 'running');
    await send({ op: 'destroy', jail: 'after', generation: 1 });
    await until('after destroyed', () => latest('after')?.state === 'destroyed');
  });
});
