// The scheduler lease: one key in a KV bucket whose TTL is the lease. The holder renews it
// (compare-and-set on its revision) three times per TTL; a standby polls and creates the key
// once it has expired. A holder that fails to renew stops leading at once, before its lease
// can have passed to anyone else.
import type { KV } from '@nats-io/kv';
import { encodeJson } from '../common/index.js';

const LEASE_KEY = 'scheduler';

export interface LeaseEvents {
  /** Now leading: reconcile. */
  onGained(): void;
  /** No longer leading: stop publishing at once. */
  onLost(): void;
}

export class LeaderLease {
  private revision = 0;
  /** The lease is ours until this moment (its last successful write plus the TTL, less a margin). */
  private validUntil = 0;
  private timer?: NodeJS.Timeout;
  private leading = false;
  private stopped = false;
  private ticking = false;

  constructor(
    private readonly kv: KV,
    private readonly id: string,
    private readonly ttlMs: number,
    private readonly events: LeaseEvents,
  ) {}

  /** Leading, and the lease surely not expired yet: a renewal that hangs cannot outlive it. */
  get isLeader() {
    return this.leading && Date.now() < this.validUntil;
  }

  start() {
    void this.tick();
    this.timer = setInterval(() => void this.tick(), Math.max(50, Math.floor(this.ttlMs / 3)));
  }

  /** Stops; a leader hands the lease back (deletes the key) so a standby takes over at once. */
  async stop() {
    this.stopped = true;
    clearInterval(this.timer);
    if (this.leading) {
      this.setLeading(false);
      await this.kv.delete(LEASE_KEY, { previousSeq: this.revision }).catch(() => undefined);
    }
  }

  private async tick() {
    if (this.ticking || this.stopped) return;
    this.ticking = true;
    const startedAt = Date.now();
    try {
      if (this.leading) {
        this.revision = await this.kv.update(LEASE_KEY, encodeJson({ id: this.id, at: new Date().toISOString() }), this.revision, this.ttlMs / 2);
        // a renewal that took longer than the lease may have arrived after it expired
        if (Date.now() - startedAt > this.ttlMs / 2) this.setLeading(false);
        else this.validUntil = startedAt + this.ttlMs - this.ttlMs / 4;
      } else {
        const cur = await this.kv.get(LEASE_KEY);
        if (cur && cur.operation === 'PUT') return;
        this.revision = await this.kv.create(LEASE_KEY, encodeJson({ id: this.id, at: new Date().toISOString() }));
        this.validUntil = startedAt + this.ttlMs - this.ttlMs / 4;
        if (!this.stopped) this.setLeading(true);
      }
    } catch {
      // lost a race for the key, or the broker is away: not (or no longer) the leader
      if (this.leading) this.setLeading(false);
    } finally {
      this.ticking = false;
    }
  }

  private setLeading(v: boolean) {
    if (this.leading === v) return;
    this.leading = v;
    if (v) this.events.onGained();
    else this.events.onLost();
  }
}
