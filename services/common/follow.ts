// Following JetStream through broker failures. When a server of a cluster dies, creating a
// consumer fails for ten to twenty seconds while its streams elect new leaders (nats-server
// 2.9), and a KV watch (a push consumer) could not be created again at all in our trials. So:
// every start-up step retries until a deadline, and buckets are followed with an ordered pull
// consumer that is opened again whenever it fails or ends.
import { jetstream, jetstreamManager, DeliverPolicy, type ConsumerMessages, type JsMsg } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import type { Logger } from './logger.js';

/** Runs `step` until it succeeds; between tries a growing pause (at most 2 s); throws after `deadlineMs`. */
export async function retrying<T>(what: string, step: () => Promise<T>, opts: { log?: Logger; deadlineMs?: number; closed?: () => boolean } = {}): Promise<T> {
  const deadline = Date.now() + (opts.deadlineMs ?? 120_000);
  for (let attempt = 0; ; attempt++) {
    try {
      return await step();
    } catch (err) {
      if (Date.now() > deadline || opts.closed?.()) throw new Error(`${what}: ${(err as Error).message}`, { cause: err });
      if (attempt === 2) opts.log?.warn({ err: (err as Error).message }, `${what}: still failing, retrying`);
      await new Promise((r) => setTimeout(r, Math.min(2000, 100 * 2 ** attempt)));
    }
  }
}

/**
 * A consumer that has stopped delivering while its stream has moved on (seen after a server of a
 * cluster died: no error, no end, nothing more) is stopped, so its owner opens it again.
 * `behind()` says whether the stream holds something the consumer has not delivered.
 */
export function stallWatchdog(opts: { every?: number; lastDelivery: () => number; behind: () => Promise<boolean>; restart: () => void; log: Logger; what: string }) {
  const every = opts.every ?? 3000;
  const timer = setInterval(() => {
    if (Date.now() - opts.lastDelivery() < every) return;
    opts.behind().then(
      (behind) => {
        if (!behind || Date.now() - opts.lastDelivery() < every) return;
        opts.log.warn(`${opts.what}: stalled behind its stream, opening it again`);
        opts.restart();
      },
      () => undefined,
    );
  }, every);
  timer.unref();
  return () => clearInterval(timer);
}

/** The last sequence a stream holds, or 0 when it cannot be asked now. */
export async function streamLastSeq(nc: NatsConnection, stream: string): Promise<number> {
  const jsm = await jetstreamManager(nc, { timeout: 2000 });
  return (await jsm.streams.info(stream)).state.last_seq;
}

/** A consumer being consumed, and how to tell that its stream holds what it has not delivered. */
export interface ConsumerSource {
  messages: ConsumerMessages;
  behind(): Promise<boolean>;
}

export interface KeptConsumer {
  /** Stops consuming (closes the current consumer). */
  stop(): Promise<void>;
  /** Settles once the loop has ended after stop() (or the connection closed). */
  done: Promise<void>;
}

/**
 * Consumes what `open()` makes, message by message, for as long as the caller wants: when the
 * consumer fails, ends, or stalls behind its stream, `open()` is called again (after a growing
 * pause, at most 2 s). `open()` decides where the new consumer starts.
 */
export function keepConsuming(nc: NatsConnection, what: string, log: Logger, open: () => Promise<ConsumerSource>, each: (m: JsMsg) => void): KeptConsumer {
  let stopped = false;
  let current: ConsumerMessages | undefined;
  let behind: () => Promise<boolean> = async () => false;
  let lastDelivery = Date.now();
  const stopWatchdog = stallWatchdog({ what, log, lastDelivery: () => lastDelivery, behind: () => behind(), restart: () => current?.stop() });
  const done = (async () => {
    for (let round = 0; !stopped && !nc.isClosed(); round++) {
      try {
        const source = await open();
        current = source.messages;
        behind = source.behind;
        if (stopped) await current.close();
        for await (const m of current) {
          lastDelivery = Date.now();
          each(m);
        }
      } catch (err) {
        if (!stopped && round % 5 === 0) log.warn({ err: (err as Error).message }, `${what} failed: opening it again`);
      }
      if (!stopped) await new Promise((r) => setTimeout(r, Math.min(2000, 100 * 2 ** Math.min(round, 5))));
    }
    stopWatchdog();
  })();
  return {
    done,
    async stop() {
      stopped = true;
      stopWatchdog();
      await current?.close().catch(() => undefined);
    },
  };
}

/** One change of a KV bucket, as a watch reports it. */
export interface BucketEntry {
  key: string;
  /** The bucket stream's sequence of this change (the KV revision). */
  revision: number;
  operation: 'PUT' | 'DEL' | 'PURGE';
  value: Uint8Array;
  json<T = unknown>(): T;
}

export interface BucketFollower {
  /** Resolves once the bucket's content at the start has been delivered. */
  synced: Promise<void>;
  stop(): void;
}

const dec = new TextDecoder();

/**
 * Delivers the last value of every key of `bucket`, then every change, to `each`, for as long
 * as the process wants it: the consumer is opened again (from the next revision) when it fails.
 */
export function followBucket(nc: NatsConnection, bucket: string, each: (e: BucketEntry) => void, log: Logger): BucketFollower {
  const stream = `KV_${bucket}`;
  const prefix = `$KV.${bucket}.`;
  let lastRevision = 0;
  let synced!: () => void;
  const syncedP = new Promise<void>((r) => (synced = r));
  const kept = keepConsuming(
    nc,
    `bucket watch ${bucket}`,
    log,
    async () => {
      const consumer = await jetstream(nc).consumers.get(
        stream,
        lastRevision > 0
          ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: lastRevision + 1, filter_subjects: `${prefix}>` }
          : { deliver_policy: DeliverPolicy.LastPerSubject, filter_subjects: `${prefix}>` },
      );
      if (lastRevision === 0 && (await consumer.info(true)).num_pending === 0) synced();
      return { messages: await consumer.consume(), behind: async () => (await streamLastSeq(nc, stream)) > lastRevision };
    },
    (m) => {
      lastRevision = m.seq;
      const op = m.headers?.get('KV-Operation');
      const value = m.data;
      each({
        key: m.subject.slice(prefix.length),
        revision: m.seq,
        operation: op === 'DEL' || op === 'PURGE' ? op : 'PUT',
        value,
        json: <T>() => JSON.parse(dec.decode(value)) as T,
      });
      if (m.info.pending === 0) synced();
    },
  );
  return {
    synced: syncedP,
    stop() {
      void kept.stop();
    },
  };
}
