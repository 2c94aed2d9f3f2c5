// Persists each jail's last stable state (the actor's snapshot record, its spec, generation and
// event seq) so that a restarted agent re-adopts its jails instead of starting them again.
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { jailErrorSchema, jailSpecSchema, jailStateSchema, nameSchema } from '../../contracts/index.js';

const storedJailSchema = z.object({
  v: z.literal(1),
  name: nameSchema,
  spec: jailSpecSchema,
  generation: z.number().int().min(1),
  desired: z.enum(['running', 'stopped', 'destroyed']),
  seq: z.number().int().min(0),
  /** Desired-state revision of the last command applied: an older or equal one is a replay. */
  revision: z.number().int().min(0).default(0),
  record: z.object({
    state: jailStateSchema,
    pid: z.number().int().positive().nullable(),
    exitCode: z.number().int().nullable(),
    restarts: z.number().int().min(0),
    error: jailErrorSchema.nullable(),
    restartAt: z.number().nullable(),
  }),
});
export type StoredJail = z.output<typeof storedJailSchema>;

export class JailStore {
  constructor(private readonly dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  save(jail: StoredJail): void {
    const file = join(this.dir, `${jail.name}.json`);
    writeFileSync(`${file}.tmp`, JSON.stringify(jail));
    renameSync(`${file}.tmp`, file); // atomic: a crash leaves the old or the new record, never half
  }

  remove(name: string): void {
    rmSync(join(this.dir, `${name}.json`), { force: true });
  }

  /** Every readable record; unreadable ones are returned by name so the caller can clean them up. */
  loadAll(): { jails: StoredJail[]; broken: string[] } {
    const jails: StoredJail[] = [];
    const broken: string[] = [];
    for (const f of readdirSync(this.dir)) {
      if (!f.endsWith('.json')) continue;
      try {
        jails.push(storedJailSchema.parse(JSON.parse(readFileSync(join(this.dir, f), 'utf8'))));
      } catch {
        broken.push(f.slice(0, -'.json'.length));
      }
    }
    return { jails, broken };
  }
}
