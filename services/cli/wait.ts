// Waits for applied jails to run: follows their state events (subscribed before the request is
// sent, so none is missed) and asks the status service for those already settled or unplaced.
// A jail with a health check counts as running only once its check has passed (healthy).
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
  /**
   * Call with each applied jail's generation; resolves once all are running or failed. `before`
   * is `ps` from before the apply: a failed or unplaced row that has not changed since is the
   * old state (an unchanged spec keeps its generation), not the answer.
   */
  wait(
    targets: Map<string, number>,
    opts: { timeoutMs: number; before?: PsRow[]; onUpdate?: (o: JailOutcome) => void },
  ): Promise<JailOutcome[]>;
  close(): void;
}

/** `checked`: the jails that have a health check (they must be healthy, not only running). */
export function startWaiter(client: Client, names: string[], checked: ReadonlySet<string> = new Set()): Waiter {
  const wanted = new Set(names);
  /** Running, and healthy when it has a check. */
  const up = (name: string, state: string, health: string | undefined) => state === 'running' && (!checked.has(name) || health === 'healthy');
  const seen = new Map<string, { generation: number; host: string; state: string; health?: string; message: string | null }>();
  /** Jails seen running (per generation), even if they stopped again before we looked. */
  const ran = new Map<string, { generation: number; host: string }>();
  let notify = () => {};
  const sub = client.nc.subscribe(names.length === 1 ? subjects.evtOfJail(names[0]!) : subjects.evtAll, {
    callback: (err, msg) => {
      if (err) return;
      try {
        const e = decodeWith(stateEventSchema, msg.data);
        if (!wanted.has(e.jail)) return;
        const prev = seen.get(e.jail);
        if (prev && prev.generation > e.generation) return;
        seen.set(e.jail, { generation: e.generation, host: e.host, state: e.state, health: e.health, message: e.error ? `${e.error.step}: ${e.error.message}` : e.healthReason ?? null });
        if (up(e.jail, e.state, e.health)) ran.set(e.jail, { generation: e.generation, host: e.host });
        notify();
      } catch {
        /* not ours to judge: the status service logs malformed events */
      }
    },
  });
  return {
    async wait(targets, { timeoutMs, before, onUpdate }) {
      const old = new Map((before ?? []).map((r) => [r.name, r]));
      const stale = (r: PsRow) => {
        const o = old.get(r.name);
        return o !== undefined && r.state !== 'running' && o.generation === r.generation && o.since === r.since && o.state === r.state;
      };
      const done = new Map<string, JailOutcome>();
      const deadline = Date.now() + timeoutMs;
      const settle = (o: JailOutcome) => {
        if (done.has(o.name)) return;
        done.set(o.name, o);
        onUpdate?.(o);
      };
      const fromRow = (r: PsRow) => {
        const gen = targets.get(r.name);
        if (gen === undefined || r.generation < gen || stale(r)) return;
        if (up(r.name, r.state, r.health)) settle({ name: r.name, host: r.host, state: 'running', message: null });
        else if (r.state === 'failed') settle({ name: r.name, host: r.host, state: 'failed', message: r.error ? `${r.error.step}: ${r.error.message}` : 'failed' });
        else if (r.state === 'unplaced') settle({ name: r.name, host: null, state: 'unplaced', message: r.error?.message ?? 'not placed' });
      };
      const check = () => {
        for (const [name, r] of ran) {
          const gen = targets.get(name);
          if (gen !== undefined && r.generation >= gen) settle({ name, host: r.host, state: 'running', message: null });
        }
        for (const [name, s] of seen) {
          const gen = targets.get(name);
          if (gen === undefined || s.generation < gen) continue;
          if (up(name, s.state, s.health)) settle({ name, host: s.host, state: 'running', message: null });
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
            // never past the caller's deadline
            (await client.ps({}, Math.max(250, Math.min(2000, deadline - Date.now())))).jails.forEach(fromRow);
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
      for (const name of targets.keys()) {
        if (done.has(name)) continue;
        const s = seen.get(name);
        const unhealthy = checked.has(name) && s?.state === 'running';
        settle({
          name,
          host: unhealthy ? s.host : null,
          state: 'timeout',
          message: unhealthy ? `not healthy after ${timeoutMs / 1000} s (${s.health ?? 'starting'}${s.message ? `: ${s.message}` : ''})` : `not running after ${timeoutMs / 1000} s`,
        });
      }
      return [...targets.keys()].map((n) => done.get(n)!);
    },
    close() {
      sub.unsubscribe();
    },
  };
}
