// Records read from a KV bucket, parsed once where they enter, by one rule for every service: a
// value its contract refuses is logged (once per revision), counted, and skipped — its owner
// keeps what it knew before and never takes it for a deletion. Nothing here writes or deletes.
import type { z } from 'zod';
import { describeIssues } from '../../contracts/index.js';
import { followBucket, type BucketFollower } from './follow.js';
import type { Logger } from './logger.js';
import type { NatsConnection } from './nats.js';

const dec = new TextDecoder();

/** What one stored value is: the record, or why its contract refuses it. */
export type Decoded<T> = { ok: true; value: T } | { ok: false; why: string };

/** Parses one stored value by its contract: JSON first, then the schema; never throws. */
export function decodeRecord<S extends z.ZodTypeAny>(schema: S, value: Uint8Array): Decoded<z.output<S>> {
  let json: unknown;
  try {
    json = JSON.parse(dec.decode(value));
  } catch (err) {
    return { ok: false, why: `not JSON: ${(err as Error).message}` };
  }
  const r = schema.safeParse(json);
  return r.success ? { ok: true, value: r.data } : { ok: false, why: describeIssues(r.error) };
}

/** Unreadable records met by this process, per bucket (for metrics and tests). */
export const unreadableCounts = new Map<string, number>();

/** Logs and counts one unreadable record: the one way every service reports it. */
export function reportUnreadable(log: Logger, bucket: string, key: string, revision: number, why: string): void {
  unreadableCounts.set(bucket, (unreadableCounts.get(bucket) ?? 0) + 1);
  log.warn({ bucket, key, revision, reason: why }, 'unreadable record skipped: write a valid one, or remove the key');
}

/**
 * Follows `bucket` (its content, then every change) and hands each readable record, or a deletion
 * (`null`), to `each`. An unreadable value is reported and skipped.
 */
export function followRecords<S extends z.ZodTypeAny>(
  nc: NatsConnection,
  bucket: string,
  schema: S,
  log: Logger,
  each: (key: string, record: z.output<S> | null, revision: number) => void,
): BucketFollower {
  return followBucket(
    nc,
    bucket,
    (e) => {
      if (e.operation !== 'PUT') return each(e.key, null, e.revision);
      const d = decodeRecord(schema, e.value);
      if (d.ok) each(e.key, d.value, e.revision);
      else reportUnreadable(log, bucket, e.key, e.revision, d.why);
    },
    log,
  );
}
