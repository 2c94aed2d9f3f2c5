// The one way to serialise work per name: tasks of one key run one at a time, in the order they
// were given; different keys run at once, at most `concurrency` tasks in all (the waiting ones by
// priority, then in order). A repeated request ("reconcile this again") can be coalesced into one
// run. A task's failure is its caller's: it never stops the tasks queued after it.
// It never retries, never times out and never drops a task: that is for its callers to decide.

interface Task {
  run: () => Promise<unknown>;
  priority: number;
  /** Joinable by runCoalesced while it waits. */
  coalesced: boolean;
  started: boolean;
  settled: Promise<unknown>;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

export interface KeyedQueueOptions {
  /** Tasks running at once over every key (default: no limit). */
  concurrency?: number;
}

export class KeyedQueue {
  /** Per key, its tasks in order: the first one is running or waiting for a slot. */
  private readonly keys = new Map<string, Task[]>();
  /** First tasks of their key waiting for a slot: highest priority first, then in arrival order. */
  private readonly ready: Task[] = [];
  private readonly keyOf = new Map<Task, string>();
  private active = 0;
  private readonly limit: number;
  private idleWaiters: (() => void)[] = [];

  constructor(opts: KeyedQueueOptions = {}) {
    this.limit = opts.concurrency ?? Number.POSITIVE_INFINITY;
    if (!(this.limit >= 1)) throw new RangeError(`concurrency must be at least 1 (got ${opts.concurrency})`);
  }

  /** Runs `task` after every task given before for `key`; settles as the task does. */
  run<T>(key: string, task: () => Promise<T>, opts: { priority?: number } = {}): Promise<T> {
    return this.push(key, task, opts.priority ?? 0, false).settled as Promise<T>;
  }

  /**
   * Runs `task` for `key` once the run in progress (if any) is over; while such a run waits to
   * start, every further call joins it (and its `task` replaces the one waiting): asked ten times
   * during a run, it runs once more after it, not ten times. Every joined caller gets its outcome.
   */
  runCoalesced(key: string, task: () => Promise<void>): Promise<void> {
    const waiting = this.keys.get(key)?.find((t) => t.coalesced && !t.started);
    if (waiting) {
      waiting.run = task;
      return waiting.settled as Promise<void>;
    }
    return this.push(key, task, 0, true).settled as Promise<void>;
  }

  /** Whether `key` has a task running or waiting. */
  has(key: string): boolean {
    return this.keys.has(key);
  }

  /** Keys with a task running or waiting. */
  get size(): number {
    return this.keys.size;
  }

  /** Resolves once no task runs or waits (at once if none does); tasks given meanwhile count too. */
  idle(): Promise<void> {
    if (this.keys.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private push(key: string, run: () => Promise<unknown>, priority: number, coalesced: boolean): Task {
    let resolve!: (v: unknown) => void;
    let reject!: (e: unknown) => void;
    const settled = new Promise<unknown>((res, rej) => ((resolve = res), (reject = rej)));
    const task: Task = { run, priority, coalesced, started: false, settled, resolve, reject };
    this.keyOf.set(task, key);
    const queue = this.keys.get(key);
    if (queue) queue.push(task);
    else {
      this.keys.set(key, [task]);
      this.offer(task);
    }
    return task;
  }

  /** The first task of its key: started now if a slot is free (none waits then), else it waits its turn. */
  private offer(task: Task) {
    if (this.active < this.limit) return this.start(task);
    this.wait(task);
  }

  /** After every waiting task of the same or a higher priority. */
  private wait(task: Task) {
    let i = this.ready.length;
    while (i > 0 && this.ready[i - 1]!.priority < task.priority) i--;
    this.ready.splice(i, 0, task);
  }

  private start(task: Task) {
    this.active++;
    task.started = true;
    // on a later tick: a task never runs inside its caller's call to run(). The queue's books are
    // done before the caller hears the outcome, so it sees the key free (or its next task going).
    void Promise.resolve()
      .then(() => task.run())
      .then(
        (value) => (this.finish(task), task.resolve(value)),
        (err) => (this.finish(task), task.reject(err)),
      );
  }

  private finish(task: Task) {
    this.active--;
    const key = this.keyOf.get(task)!;
    this.keyOf.delete(task);
    const queue = this.keys.get(key)!;
    queue.shift();
    // the key's next task queues behind those already waiting for a slot, so no key starves another
    if (queue.length > 0) this.wait(queue[0]!);
    else this.keys.delete(key);
    while (this.active < this.limit && this.ready.length > 0) this.start(this.ready.shift()!);
    if (this.keys.size === 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }
}
