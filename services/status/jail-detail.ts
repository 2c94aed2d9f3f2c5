// One jail as the dashboard's jail page shows it: its row, its desired record (the spec), its
// placement, its recent events (from which the placement history is read) and the end of its
// console log, asked of its agent the way `jailfleet logs` asks. Read-only: it never writes a
// record, and a part it cannot read is reported in the reply, never a failure of the whole.
import { jetstream, DeliverPolicy } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import {
  BUCKET_DESIRED,
  BUCKET_PLACEMENT,
  EVT_STREAM,
  WIRE_VERSION,
  desiredRecordSchema,
  logsResultSchema,
  placementRecordSchema,
  stateEventSchema,
  subjects,
  type DesiredRecord,
  type PlacementRecord,
  type PsRow,
  type StateEvent,
} from '../../contracts/index.js';
import { decodeRecord, request, type NatsConnection } from '../common/index.js';

/** Most events a jail page shows (the newest). */
export const DETAIL_EVENTS = 200;
/** Lines of the console's end a jail page shows. */
export const DETAIL_LOG_LINES = 100;
const LOG_TIMEOUT_MS = 3000;

/** One stretch of the jail on one host at one generation, read from its events. */
export interface PlacementStretch {
  generation: number;
  host: string;
  from: string;
  to: string | null;
  lastState: string;
}

export interface JailDetail {
  row: PsRow | null;
  desired: DesiredRecord | null;
  placement: PlacementRecord | null;
  events: StateEvent[];
  history: PlacementStretch[];
  log: { text: string; truncated: boolean; host: string } | { error: string } | null;
}

/**
 * The placement history: one stretch per generation and host, in the order they began; a stretch
 * ends when its copy was destroyed (an old copy's end may come after the next one began: a move)
 * or, when its host never said, where the next one began.
 */
export function placementHistory(events: StateEvent[]): PlacementStretch[] {
  const byCopy = new Map<string, PlacementStretch>();
  for (const e of events) {
    const key = `${e.generation}/${e.host}`;
    const s = byCopy.get(key);
    if (!s) byCopy.set(key, { generation: e.generation, host: e.host, from: e.at, to: e.state === 'destroyed' ? e.at : null, lastState: e.state });
    else {
      s.lastState = e.state;
      if (e.state === 'destroyed') s.to = e.at;
    }
  }
  const out = [...byCopy.values()];
  for (let i = 0; i < out.length - 1; i++) out[i]!.to ??= out[i + 1]!.from;
  return out;
}

export class JailDetailReader {
  private buckets?: Promise<{ desired: KV; placement: KV }>;

  constructor(private readonly nc: NatsConnection) {}

  async read(name: string, row: PsRow | null): Promise<JailDetail> {
    const [records, events] = await Promise.all([this.records(name), this.events(name)]);
    return { row, ...records, events, history: placementHistory(events), log: row?.host ? await this.log(row.host, name) : null };
  }

  private async records(name: string): Promise<{ desired: DesiredRecord | null; placement: PlacementRecord | null }> {
    this.buckets ??= (async () => {
      const kvm = new Kvm(this.nc);
      return { desired: await kvm.open(BUCKET_DESIRED), placement: await kvm.open(BUCKET_PLACEMENT) };
    })();
    const b = await this.buckets.catch((err: unknown) => {
      this.buckets = undefined;
      throw err;
    });
    const [d, p] = await Promise.all([b.desired.get(name), b.placement.get(name)]);
    const decoded = <T>(e: typeof d, parse: (v: Uint8Array) => { ok: true; value: T } | { ok: false }) => {
      if (!e || e.operation !== 'PUT') return null;
      const r = parse(e.value);
      return r.ok ? r.value : null;
    };
    return { desired: decoded(d, (v) => decodeRecord(desiredRecordSchema, v)), placement: decoded(p, (v) => decodeRecord(placementRecordSchema, v)) };
  }

  /** The jail's newest events, oldest first, from the event stream (one subject per host it ran on). */
  private async events(name: string): Promise<StateEvent[]> {
    const consumer = await jetstream(this.nc).consumers.get(EVT_STREAM, { deliver_policy: DeliverPolicy.All, filter_subjects: subjects.evtOfJail(name) });
    let pending = (await consumer.info()).num_pending;
    const out: StateEvent[] = [];
    while (pending > 0) {
      const batch = await consumer.fetch({ max_messages: Math.min(pending, 1000), expires: 2000 });
      let got = 0;
      for await (const m of batch) {
        got++;
        pending = m.info.pending;
        const e = stateEventSchema.safeParse(m.json());
        if (e.success) out.push(e.data);
        if (out.length > DETAIL_EVENTS * 2) out.splice(0, out.length - DETAIL_EVENTS);
      }
      if (got === 0) break;
    }
    await consumer.delete().catch(() => undefined);
    return out.slice(-DETAIL_EVENTS);
  }

  /** The end of the jail's console, from its agent; why not, when the agent cannot say. */
  private async log(host: string, jail: string): Promise<JailDetail['log']> {
    try {
      const r = await request(this.nc, subjects.logs(host), { v: WIRE_VERSION, jail, lines: DETAIL_LOG_LINES }, logsResultSchema, { timeoutMs: LOG_TIMEOUT_MS });
      return { ...r, host };
    } catch (err) {
      return { error: `the agent of ${host} did not give the log: ${(err as Error).message}` };
    }
  }
}
