// The move protocol of a drain, as pure steps: make-before-break, every step a compare-and-set in
// KV so that a new leader can pick a move up where the old one stopped.
//   1. check:   the jail is still on the draining host, at its desired generation, not pinned;
//   2. touch:   the desired record is re-written (same generation) so this attempt's commands carry
//               a revision of their own (a retried move must not be taken for a replayed command);
//   3. copy:    `ensure` generation+1 goes to the new host; wait until that copy runs (and, when the
//               jail has a health check, until it is healthy: the old copy serves meanwhile);
//   4. confirm: the desired generation goes up, only if nothing changed since step 2 (an apply or
//               stop made meanwhile wins: the move is abandoned and reconcile carries it out);
//   5. switch:  the placement moves (the old host's agent fences its copy) and the old host is
//               told to destroy it.
// Abandoned: the new copy is told to go (at a revision of its own) and the jail stays put.
// A stopped jail moves by its placement alone. Each function says what to do; the reconciler does it.
import { WIRE_VERSION, type Command, type DesiredRecord, type JailSpec, type PlacementRecord } from '../../contracts/index.js';
import { destroyCommand, ensureCommand, type JailView } from './decide.js';
import { isReadable } from './store.js';

type JailViewRecords = Pick<JailView, 'desired' | 'placement'>;

/** Why a move did not happen, and not before when to try again (`reason: null`: a race, retried quietly). */
export type MoveOutcome = { reason: string | null; retryMs: number } | null;

/** What a move works from, read once at its start. */
export interface MoveBasis {
  jail: string;
  from: string;
  desired: DesiredRecord;
  desiredRevision: number;
  placementRevision: number;
  /** The jail's address (vnet), carried to its new placement and pinned into the new copy's spec. */
  address?: string;
}

const iso = (now: number) => new Date(now).toISOString();

/** Step 1: whether the jail should move now; `done: null` when it no longer needs to. */
export function checkMove(jail: string, from: string, view: JailViewRecords): { go: MoveBasis } | { done: MoveOutcome } {
  const d = view.desired;
  const p = view.placement;
  if (!isReadable(d) || d.value.desired === 'removed' || !isReadable(p) || p.value.host !== from) return { done: null };
  if (p.value.generation !== d.value.generation) return { done: { reason: null, retryMs: 500 } }; // reconcile settles it first
  if (d.value.spec.placement.host) return { done: { reason: `pinned to host "${from}" (placement.host): remove the pin to let it move`, retryMs: 10_000 } };
  return { go: { jail, from, desired: d.value, desiredRevision: d.revision, placementRevision: p.revision, ...(p.value.address ? { address: p.value.address } : {}) } };
}

/** When no host takes it: why, retried in 2 s. */
export const noHost = (reason: string): MoveOutcome => ({ reason, retryMs: 2000 });

/** The new placement: the new host at the next generation. */
export const movedPlacement = (to: string, b: MoveBasis): PlacementRecord => ({ v: WIRE_VERSION, host: to, generation: b.desired.generation + 1, reason: null, ...(b.address ? { address: b.address } : {}) });

/** Step 2: the touched desired record (nothing but its time changes). */
export const touched = (b: MoveBasis, now: number): DesiredRecord => ({ ...b.desired, updatedAt: iso(now) });

/** Step 3: the new copy's command, at the touched revision. */
export const newCopyCommand = (b: MoveBasis, touchRevision: number, now: number): Command =>
  ensureCommand(b.jail, { ...b.desired, desired: 'running' }, touchRevision, now, b.desired.generation + 1, b.address);

/**
 * Step 4: the desired record with the raised generation, if the record is still the one this move
 * touched; otherwise why the move is abandoned.
 */
export function confirmMove(b: MoveBasis, current: JailViewRecords['desired'], touchRevision: number, now: number): { record: DesiredRecord; revision: number } | { abandon: string } {
  if (!isReadable(current) || current.revision !== touchRevision) return { abandon: 'was changed meanwhile' };
  return { record: { ...current.value, generation: b.desired.generation + 1, updatedAt: iso(now) }, revision: touchRevision };
}

/** Step 5: the old copy goes, at the revision of the confirmed record. */
export const oldCopyCommand = (b: MoveBasis, revision: number, now: number): Command => destroyCommand(b.jail, b.desired.generation, revision, now);

/** Abandoned: the new copy goes, at a revision above the one it was started with. */
export const dropNewCopy = (b: MoveBasis, revision: number, now: number): Command => destroyCommand(b.jail, b.desired.generation + 1, revision, now);

/** An abandoned move is tried again in 30 s. */
export const abandoned = (why: string): MoveOutcome => ({ reason: why, retryMs: 30_000 });

/**
 * The verdict on a new copy from its state event (or a heartbeat's row): ready, failed (why), or
 * nothing yet. Ready is running, and healthy when the jail has a check (`checked`): a copy that
 * runs but does not answer yet must not take over from one that does.
 */
export function copyVerdict(
  event: { generation: number; state: string; error?: { step: string; message: string } | null; health?: string },
  generation: number,
  checked = false,
): true | string | undefined {
  if (event.generation !== generation) return undefined;
  if (event.state === 'running') return !checked || event.health === 'healthy' ? true : undefined;
  if (event.state === 'failed') return `failed (${event.error ? `${event.error.step}: ${event.error.message}` : 'no reason given'})`;
  return undefined;
}

/**
 * How long a move waits for its new copy: the move timeout, and for a jail with a check also its
 * grace period and the checks it may fail before it counts as unhealthy (a slow start is no failure).
 */
export function copyWaitMs(spec: Pick<JailSpec, 'health'>, moveTimeoutMs: number): number {
  const h = spec.health;
  return h ? moveTimeoutMs + h.graceMs + h.intervalMs * h.failures : moveTimeoutMs;
}
