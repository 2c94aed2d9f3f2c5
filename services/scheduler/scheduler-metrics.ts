// The scheduler's Prometheus metrics: what the reconciler does (placements, failovers, moves, how
// long a pass takes) as it happens, and whether this scheduler leads and how many jails wait
// unplaced read when scraped. Counters count what this process did: a standby counts nothing, a
// new leader starts from zero (Prometheus' rate() takes a counter's reset in its stride). It must
// never change what the scheduler decides.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { serviceRegistry } from '../common/metrics.js';

/** What the reconciler reports as it acts (a port: the in-process tests run without it). */
export interface ReconcilerMetrics {
  /** A jail's placement was written naming a host. */
  placed(): void;
  /** A jail of a dead host got a new generation to be placed elsewhere. */
  failover(): void;
  /** A drain's move of one jail ended: moved, or abandoned (the jail stays put). */
  moved(outcome: 'moved' | 'abandoned'): void;
  /** One reconcile pass (every dirty jail decided and its actions carried out) took `seconds`. */
  passDone(seconds: number): void;
}

export class SchedulerMetrics implements ReconcilerMetrics {
  readonly registry: Registry = serviceRegistry();
  private readonly placements: Counter;
  private readonly failovers: Counter;
  private readonly moves: Counter<'outcome'>;
  private readonly passes: Histogram;

  constructor(source: { leading: () => boolean; unplaced: () => number }) {
    const registers = [this.registry];
    this.placements = new Counter({ name: 'jailfleet_scheduler_placements_total', help: 'Placements written that name a host (new jails, failovers).', registers });
    this.failovers = new Counter({ name: 'jailfleet_scheduler_failovers_total', help: 'Jails of a dead host given a new generation to run elsewhere.', registers });
    this.moves = new Counter({
      name: 'jailfleet_scheduler_moves_total',
      help: "Drain moves that ended, by outcome (moved, or abandoned: the jail stays where it is).",
      labelNames: ['outcome'],
      registers,
    });
    for (const outcome of ['moved', 'abandoned']) this.moves.inc({ outcome }, 0);
    this.passes = new Histogram({
      name: 'jailfleet_scheduler_reconcile_duration_seconds',
      help: 'Time of one reconcile pass: every jail changed since the last one decided and its actions carried out.',
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    new Gauge({
      name: 'jailfleet_scheduler_leader',
      help: '1 while this scheduler holds the leader lease (only the leader places and commands), else 0.',
      registers,
      collect() {
        this.set(source.leading() ? 1 : 0);
      },
    });
    new Gauge({
      name: 'jailfleet_scheduler_unplaced_jails',
      help: 'Jails whose placement names no host: no host fits them now.',
      registers,
      collect() {
        this.set(source.unplaced());
      },
    });
  }

  placed(): void {
    this.placements.inc();
  }
  failover(): void {
    this.failovers.inc();
  }
  moved(outcome: 'moved' | 'abandoned'): void {
    this.moves.inc({ outcome });
  }
  passDone(seconds: number): void {
    this.passes.observe(seconds);
  }
}
