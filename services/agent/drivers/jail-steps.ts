// The drivers' step discipline: one mutating step per jail at a time (in this process, by the
// shared KeyedQueue), the jail's name checked before any path or argv is built from it, every
// failure a DriverStepFailed.
import { NAME_RULE, nameSchema } from '../../../contracts/index.js';
import { KeyedQueue } from '../../common/keyed-queue.js';
import { DriverStepFailed } from './driver.js';

export type Step = DriverStepFailed['step'];

/** Throws unless `name` is a valid jail name (a plain Error for inspect, which is not a step). */
export function checkJailName(step: Step | 'inspect', name: string): void {
  if (nameSchema.safeParse(name).success) return;
  const message = `invalid jail name ${JSON.stringify(name)}: must be ${NAME_RULE}`;
  if (step === 'inspect') throw new Error(message);
  throw new DriverStepFailed(step, message);
}

export class JailSteps {
  private readonly queue = new KeyedQueue();

  /** Runs `fn` after the jail's previous step; wraps any failure as `<step> of jail <name> failed`. */
  run<T>(step: Step, name: string, fn: () => Promise<T>): Promise<T> {
    return this.queue.run(name, async () => {
      checkJailName(step, name);
      try {
        return await fn();
      } catch (err) {
        if (err instanceof DriverStepFailed) throw err;
        const message = err instanceof Error ? err.message : String(err);
        throw new DriverStepFailed(step, `${step} of jail ${name} failed: ${message}`, [], '', { cause: err });
      }
    });
  }
}
