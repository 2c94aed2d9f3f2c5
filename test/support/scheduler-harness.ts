// The scheduler in-process: its reconciler and API on the in-memory store, a simulated clock for
// liveness, and simulated agents that answer commands the way real ones do (an `ensure` to run
// makes a running copy, reported by event and heartbeat; a `destroy` removes copies of that
// generation or older; a copy of a jail with a health check starts `starting` and turns healthy
// after the host's `healthyAfterMs`, or never when it is null). Nomad's scheduler/testing.go
// Harness plays the same part.
import pino from 'pino';
import { WIRE_VERSION, type Command, type Heartbeat, type StateEvent } from '../../contracts/index.js';
import { HeartbeatFeed } from '../../services/common/heartbeat-feed.js';
import { JailNetwork } from '../../services/common/jail-network.js';
import { SchedulerApi } from '../../services/scheduler/api.js';
import { MemoryStore } from '../../services/scheduler/memory-store.js';
import { Reconciler } from '../../services/scheduler/reconciler.js';
import { isReadable } from '../../services/scheduler/store.js';

const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));

export interface SimHost {
  name: string;
  alive: boolean;
  /** Copies this host runs: jail → generation. */
  copies: Map<string, number>;
  capacity: { cpu: number; memoryMB: number };
  /** Simulated agents ignore commands (a slow or hung copy) while this is true. */
  mute: boolean;
  /** Copies with a health check: where it stands and since when (simulated clock). */
  health: Map<string, { state: 'starting' | 'healthy'; since: number }>;
  /** How long a copy with a check takes to become healthy here; null: never. */
  healthyAfterMs: number | null;
}

export class SchedulerHarness {
  readonly store = new MemoryStore();
  readonly hosts = new Map<string, SimHost>();
  readonly commands: { host: string; command: Command; at: number }[] = [];
  readonly schedulers: { rec: Reconciler; api: SchedulerApi; feed: HeartbeatFeed; leading: boolean }[] = [];
  now = 0;
  private readonly followers = new Map<string, Set<(e: StateEvent) => void>>();
  private seq = 0;

  constructor(hostNames: string[] = [], private readonly opts: { capacity?: { cpu: number; memoryMB: number }; moveTimeoutMs?: number; jailCidr?: string } = {}) {
    for (const name of hostNames) this.addHost(name, opts.capacity);
    this.addScheduler(true);
  }

  /** The scheduler that leads now. */
  get leader() {
    return this.schedulers.find((s) => s.leading)!;
  }

  addScheduler(leading: boolean) {
    const slot = { leading } as { rec: Reconciler; api: SchedulerApi; feed: HeartbeatFeed; leading: boolean };
    // the feed the wiring would own: the same liveness rule, fed the same bytes, no NATS
    slot.feed = new HeartbeatFeed({
      log: pino({ level: 'silent' }),
      ttlMs: 3000,
      now: () => this.now,
      onHeard: (hb) => slot.rec.onHeartbeat(hb),
      onUp: (host) => slot.rec.hostUp(host),
      onDown: (host) => slot.rec.hostWentDown(host),
    });
    slot.rec = new Reconciler({
      liveness: slot.feed.liveness,
      store: this.store,
      log: pino({ level: process.env.HARNESS_LOG ?? 'silent' }),
      leading: () => slot.leading,
      now: () => this.now,
      strategy: 'binpack',
      moveTimeoutMs: this.opts.moveTimeoutMs ?? 1000,
      ...(this.opts.jailCidr ? { jailNetwork: JailNetwork.parse(this.opts.jailCidr) } : {}),
      commands: { publish: async (host, command) => this.deliver(slot, host, command) },
      events: {
        follow: (host, jail, each) => {
          const k = `${host}/${jail}`;
          if (!this.followers.has(k)) this.followers.set(k, new Set());
          this.followers.get(k)!.add(each);
          return () => this.followers.get(k)!.delete(each);
        },
      },
    });
    slot.api = new SchedulerApi(this.store, slot.rec, undefined, this.opts.jailCidr ? JailNetwork.parse(this.opts.jailCidr) : undefined);
    this.schedulers.push(slot);
    for (const h of this.hosts.values()) if (h.alive) this.beat(slot, h);
    return slot;
  }

  addHost(name: string, capacity = { cpu: 64, memoryMB: 65536 }) {
    const h: SimHost = { name, alive: true, copies: new Map(), capacity, mute: false, health: new Map(), healthyAfterMs: 0 };
    this.hosts.set(name, h);
    for (const s of this.schedulers) this.beat(s, h);
    return h;
  }

  private beat(s: { feed: HeartbeatFeed }, h: SimHost) {
    s.feed.receive(`jailfleet.hb.${h.name}`, enc(this.heartbeat(h)));
  }

  private heartbeat(h: SimHost): Heartbeat {
    const at = new Date(this.now).toISOString();
    return {
      v: WIRE_VERSION,
      host: h.name,
      at,
      startedAt: at,
      driver: 'linux',
      capacity: h.capacity,
      labels: {},
      allocated: { cpu: 0, memoryMB: 0 },
      jails: [...h.copies].map(([name, generation]) => ({ name, generation, state: 'running' as const, pid: 1, ...(h.health.has(name) && { health: h.health.get(name)!.state }) })),
    };
  }

  /** Moves the clock on: live hosts beat every second on the way, dead ones stay silent. */
  async advance(ms: number) {
    for (let t = 0; t < ms; t += 1000) {
      this.now += Math.min(1000, ms - t);
      for (const h of this.hosts.values()) if (h.alive) this.checkHealth(h);
      for (const h of this.hosts.values()) if (h.alive) for (const s of this.schedulers) this.beat(s, h);
      for (const s of this.schedulers) s.feed.check();
      // the wiring's periodic pass runs every 2 s
      if (Math.floor(this.now / 2000) !== Math.floor((this.now - 1000) / 2000)) for (const s of this.schedulers) s.rec.resync();
    }
    await this.settle();
  }

  /** Past the start-up warm-up (one TTL), every scheduler resynced. */
  async warm() {
    await this.advance(3100);
    for (const s of this.schedulers) s.rec.resync();
    await this.settle();
  }

  async settle() {
    for (let i = 0; i < 5; i++) {
      await new Promise((r) => setImmediate(r));
      for (const s of this.schedulers) await s.rec.idle();
    }
  }

  kill(host: string) {
    this.hosts.get(host)!.alive = false;
  }

  /** The host is back; its agent fences what the placements no longer give it, as a real one does. */
  revive(host: string) {
    const h = this.hosts.get(host)!;
    h.alive = true;
    for (const [jail, generation] of h.copies) {
      const p = this.placement(jail);
      if (!p || p.host !== host || p.generation > generation) h.copies.delete(jail);
    }
  }

  /** Hands the lease from whoever leads to `to` (the old leader stops acting at once). */
  handOver(to: { rec: Reconciler; leading: boolean }) {
    for (const s of this.schedulers) s.leading = false;
    to.leading = true;
    to.rec.gainedLead();
  }

  async call(verb: 'apply' | 'stop' | 'start' | 'rm' | 'drain' | 'undrain', body: Record<string, unknown>, via = this.leader ?? this.schedulers[0]!) {
    const r = await via.api.handle(verb, { v: WIRE_VERSION, ...body });
    await this.settle();
    return r;
  }

  apply(...specs: ({ name: string } & Record<string, unknown>)[]) {
    return this.call('apply', { fleet: { jails: specs.map((s) => ({ command: ['/bin/sleep', '3600'], ...s })) } });
  }

  private async deliver(from: { leading: boolean }, host: string, command: Command) {
    if (!from.leading) throw new Error('not the leader: command not published');
    this.commands.push({ host, command, at: this.now });
    const h = this.hosts.get(host);
    if (!h || !h.alive || h.mute) return;
    if (command.op === 'destroy') {
      if ((h.copies.get(command.jail) ?? Infinity) <= command.generation) {
        h.copies.delete(command.jail);
        h.health.delete(command.jail);
      }
      return;
    }
    h.health.delete(command.jail);
    if (command.desired === 'running') {
      h.copies.set(command.jail, command.generation);
      if (command.spec.health) h.health.set(command.jail, { state: 'starting', since: this.now });
      this.emit(host, command.jail, command.generation, 'running', h.health.get(command.jail)?.state);
      // a check that passes at once (the default) is healthy right after it runs
      if (h.healthyAfterMs === 0) this.checkHealth(h);
    } else {
      h.copies.delete(command.jail);
      this.emit(host, command.jail, command.generation, 'stopped');
    }
  }

  /** Copies whose check passes by now turn healthy, with an event. */
  private checkHealth(h: SimHost) {
    for (const [jail, s] of h.health) {
      if (s.state !== 'starting' || h.healthyAfterMs === null || this.now - s.since < h.healthyAfterMs) continue;
      s.state = 'healthy';
      this.emit(h.name, jail, h.copies.get(jail)!, 'running', 'healthy');
    }
  }

  /** Whether `host` runs a healthy copy of `jail` (a jail without a check: any copy). */
  healthyOn(jail: string, host: string): boolean {
    const h = this.hosts.get(host)!;
    return h.alive && h.copies.has(jail) && (!h.health.has(jail) || h.health.get(jail)!.state === 'healthy');
  }

  private emit(host: string, jail: string, generation: number, state: 'running' | 'stopped', health?: 'starting' | 'healthy') {
    const e: StateEvent = { v: WIRE_VERSION, host, jail, generation, seq: ++this.seq, state, pid: 1, exitCode: null, restarts: 0, error: null, ...(health && { health }), at: new Date(this.now).toISOString() };
    queueMicrotask(() => this.followers.get(`${host}/${jail}`)?.forEach((f) => f(e)));
  }

  // --- what the records say ---

  desired(name: string) {
    const d = this.store.desired.get(name);
    return isReadable(d) ? d.value : undefined;
  }

  placement(name: string) {
    const p = this.store.placements.get(name);
    return isReadable(p) ? p.value : undefined;
  }

  /** Hosts that run a copy of `jail` now. */
  runningOn(jail: string): string[] {
    return [...this.hosts.values()].filter((h) => h.alive && h.copies.has(jail)).map((h) => h.name);
  }

  /** The address the last `ensure` sent for the jail pinned into its spec (vnet), or null. */
  sentAddress(jail: string): string | null {
    const last = [...this.commands].reverse().find((c) => c.command.jail === jail && c.command.op === 'ensure');
    const net = last?.command.op === 'ensure' ? last.command.spec.network : undefined;
    return typeof net === 'object' ? (net.address ?? null) : null;
  }

  /** The addresses bucket: address → holder. */
  addresses(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const e of this.store.addresses.entries()) if (isReadable(e)) out[e.key] = e.value.jail;
    return out;
  }

  commandsFor(jail: string) {
    return this.commands.filter((c) => c.command.jail === jail).map((c) => `${c.command.op}${c.command.op === 'ensure' ? `:${c.command.desired}` : ''} g${c.command.generation} → ${c.host}`);
  }
}
