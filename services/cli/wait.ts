// Waits for applied jails to run: follows their state events (subscribed before the request is
// sent, so none is missed) and asks the status service for those already settled or unplaced.
import { stateEventSchema, subjects, type PsRow } from '../../contracts/index.js';
import { decodeWith } from '../common/codec.js';
import type { Client } from './client.js';

export interface JailOutcome {
  name: string;
  host: string | null;
  state: 'running' | 'failed' | 'unplaced' | 'timeout';
  message: string | null;
}

export interface Waiter {
  /** Call with each applied jail's generation; resolves once all are running or failed. */
  wait(targets: Map<string, number>, opts: { timeoutMs: number; onUpdate?: (o: JailOutcome) => void }): Promise<JailOutcome[]>;
  close(): void;
}

export function startWaiter(client: Client, names: string[]): Waiter {
  const wanted = new Set(names);
  const seen = new Map<string, { generation: number; host: string; state: string; message: string | null }>();
  let notify = () => {};
  const sub = client.nc.subscribe(names.length === 1 ? subjects.evtOfJail(names[0]!) : subjects.evtAll, {
    callback: (err, msg) => {
      if (err) return;
      try {
        const e = decodeWith(stateEventSchema, msg.data);
        if (!wanted.has(e.jail)) return;
        const prev = seen.get(e.jail);
        if (prev && prev.generation > e.generation) return;
        seen.set(e.jail, { generation: e.generation, host: e.host, state: e.state, message: e.error ? `${e.error.step}: ${e.error.message}` : null });
        notify();
      } catch {
        /* not ours to judge: the status service logs malformed events */
      }
    },
  });
  return {
    async wait(targets, { timeoutMs, onUpdate }) {
      const done = new Map<string, JailOutcome>();
      const deadline = Date.now() + timeoutMs;
      const settle = (o: JailOutcome) => {
        if (done.has(o.name)) return;
        done.set(o.name, o);
        onUpdate?.(o);
      };
      const fromRow = (r: PsRow) => {
        const gen = targets.get(r.name);
        if (gen === undefined || r.generation < gen) return;
        if (r.state === 'running') settle({ name: r.name, host: r.host, state: 'running', message: null });
        else if (r.state === 'failed') settle({ name: r.name, host: r.host, state: 'failed', message: r.error ? `${r.error.step}: ${r.error.message}` : 'failed' });
        else if (r.state === 'unplaced') settle({ name: r.name, host: null, state: 'unplaced', message: r.error?.message ?? 'not placed' });
      };
      const check = () => {
        for (const [name, s] of seen) {
          const gen = targets.get(name);
          if (gen === undefined || s.generation < gen) continue;
          if (s.state === 'running') settle({ name, host: s.host, state: 'running', message: null });
          if (s.state === 'failed') settle({ name, host: s.host, state: 'failed', message: s.message });
        }
      };
      let lastPoll = 0;
      while (done.size < targets.size) {
        check();
        if (done.size >= targets.size) break;
        if (Date.now() > deadline) break;
        if (Date.now() - lastPoll > 1000) {
          lastPoll = Date.now();
          try {
            (await client.ps()).jails.forEach(fromRow);
          } catch {
            /* the status service may be starting; events still count */
          }
          continue;
        }
        await new Promise<void>((r) => {
          const t = setTimeout(r, 250);
          notify = () => (clearTimeout(t), r());
        });
      }
      for (const name of targets.keys()) if (!done.has(name)) settle({ name, host: null, state: 'timeout', message: `not running after ${timeoutMs / 1000} s` });
      return [...targets.keys()].map((n) => done.get(n)!);
    },
    close() {
      sub.unsubscribe();
    },
  };
}
