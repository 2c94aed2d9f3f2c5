// Heartbeats, and the one rule of which hosts are up. HostLiveness is the rule, pure (the clock is
// passed in); HeartbeatFeed subscribes to jailfleet.hb.*, admits only heartbeats that fit the
// contract and come from the host they name, and tells its owner when a host is heard, comes up
// or goes down. Every service that judges a host (scheduler, status) judges it here.
// The feed never decides what a host's state means for its jails: that is its owner's call.
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import { heartbeatSchema, subjectTokens, subjects, type Heartbeat } from '../../contracts/index.js';
import { decodeWith } from './codec.js';
import { DEFAULT_HOST_TTL_MS } from './defaults.js';
import type { Logger } from './logger.js';

/**
 * Up: heard within the TTL (`now - lastSeen <= ttl`). Down: silent for longer than the TTL, or
 * never heard in the TTL after `startedAt` (a process that has just started has not heard every
 * live host yet: until one TTL has passed, a host it has not heard is neither up nor down).
 */
export class HostLiveness {
  private readonly lastSeen = new Map<string, number>();
  constructor(
    readonly ttlMs: number,
    /** When the owner began listening. */
    readonly startedAt = 0,
  ) {}

  /** Notes a heartbeat of `host` at `now`; true when the host comes up (first heard, or back after a lapse). */
  seen(host: string, now: number): boolean {
    const wasUp = this.isUp(host, now);
    this.lastSeen.set(host, now);
    return !wasUp;
  }

  isUp(host: string, now: number): boolean {
    const t = this.lastSeen.get(host);
    return t !== undefined && now - t <= this.ttlMs;
  }

  isDown(host: string, now: number): boolean {
    return now - (this.lastSeen.get(host) ?? this.startedAt) > this.ttlMs;
  }

  /** When `host` was last heard (undefined: never). */
  lastSeenOf(host: string): number | undefined {
    return this.lastSeen.get(host);
  }

  /** Every host heard, by name. */
  hosts(now: number): { name: string; up: boolean; lastSeen: number }[] {
    return [...this.lastSeen.entries()]
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([name, t]) => ({ name, up: now - t <= this.ttlMs, lastSeen: t }));
  }
}

export interface HeartbeatFeedOptions {
  log: Logger;
  /** A host is down after this long without a heartbeat (default DEFAULT_HOST_TTL_MS). */
  ttlMs?: number;
  /** Every admitted heartbeat, after liveness has noted it. */
  onHeard?: (hb: Heartbeat, now: number) => void;
  /** A host is heard for the first time, or again after it was down (called after onHeard). */
  onUp?: (host: string, hb: Heartbeat) => void;
  /** A host heard before has been silent for longer than the TTL. */
  onDown?: (host: string) => void;
  /** The clock (tests pass a fake one). */
  now?: () => number;
}

/** At most one warning about malformed heartbeats per this long: a broken agent beats every second. */
const WARN_EVERY_MS = 10_000;

export class HeartbeatFeed {
  readonly liveness: HostLiveness;
  private readonly now: () => number;
  private readonly log: Logger;
  private sub?: Subscription;
  private timer?: NodeJS.Timeout;
  /** Hosts known down since the last check, so each going down is told once. */
  private down = new Set<string>();
  private lastWarning = Number.NEGATIVE_INFINITY;
  private unwarned = 0;

  constructor(private readonly opts: HeartbeatFeedOptions) {
    this.now = opts.now ?? Date.now;
    this.log = opts.log;
    this.liveness = new HostLiveness(opts.ttlMs ?? DEFAULT_HOST_TTL_MS, this.now());
  }

  /** Subscribes, and looks for silent hosts every quarter TTL (50 to 250 ms). */
  start(nc: NatsConnection): void {
    this.sub = nc.subscribe(subjects.hbAll, {
      callback: (err, msg) => {
        if (!err) this.receive(msg.subject, msg.data);
      },
    });
    if (this.opts.onDown) this.timer = setInterval(() => this.check(), Math.max(50, Math.min(250, this.liveness.ttlMs / 4)));
  }

  stop(): void {
    clearInterval(this.timer);
    this.sub?.unsubscribe();
  }

  /** One message from jailfleet.hb.<host>: the admitted heartbeat, or null (dropped, with a warning now and then). */
  receive(subject: string, data: Uint8Array): Heartbeat | null {
    let hb: Heartbeat;
    try {
      hb = decodeWith(heartbeatSchema, data);
      // a host speaks only for itself: its credentials confine it to its own subjects
      if (hb.host !== subjectTokens(subject).host) throw new Error(`heartbeat of ${hb.host} on ${subject}`);
    } catch (e) {
      this.warn(subject, (e as Error).message);
      return null;
    }
    const now = this.now();
    const cameUp = this.liveness.seen(hb.host, now);
    if (cameUp) this.down.delete(hb.host);
    this.opts.onHeard?.(hb, now);
    if (cameUp) this.opts.onUp?.(hb.host, hb);
    return hb;
  }

  /** Hosts that went down since the last check; each is told to onDown once. */
  check(): string[] {
    const now = this.now();
    const down = new Set(this.liveness.hosts(now).filter((h) => this.liveness.isDown(h.name, now)).map((h) => h.name));
    const wentDown = [...down].filter((h) => !this.down.has(h));
    this.down = down;
    for (const h of wentDown) this.opts.onDown?.(h);
    return wentDown;
  }

  private warn(subject: string, reason: string) {
    const now = this.now();
    if (now - this.lastWarning < WARN_EVERY_MS) {
      this.unwarned++;
      return;
    }
    this.log.warn({ subject, reason, ...(this.unwarned > 0 && { droppedSinceLastWarning: this.unwarned }) }, 'malformed heartbeat dropped');
    this.lastWarning = now;
    this.unwarned = 0;
  }
}
