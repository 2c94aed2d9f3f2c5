// JSON on the wire: encode, and decode-then-parse by a contract. Kept apart from the connection
// code so that light clients (the CLI) load no more than they need.
import type { z } from 'zod';
import { InvalidInput, describeIssues } from '../../contracts/errors.js';
import { DEFAULT_NATS_URL } from './defaults.js';

/** Server URLs from a comma-separated list (flag or JAILFLEET_NATS_URL). */
export function natsServers(flag?: string): string[] {
  const raw = flag ?? process.env.JAILFLEET_NATS_URL ?? DEFAULT_NATS_URL;
  return raw.split(',').map((s) => s.trim()).filter(Boolean);
}

const enc = new TextEncoder();
const dec = new TextDecoder();
export const encodeJson = (value: unknown) => enc.encode(JSON.stringify(value));

/** Decodes a payload as JSON and parses it with its contract, or throws InvalidInput. */
export function decodeWith<S extends z.ZodTypeAny>(schema: S, data: Uint8Array): z.output<S> {
  if (data.length > 8 * 1024 * 1024) throw new InvalidInput('message is larger than 8 MiB');
  let json: unknown;
  try {
    json = JSON.parse(dec.decode(data));
  } catch {
    throw new InvalidInput('message is not valid JSON');
  }
  const r = schema.safeParse(json);
  if (!r.success) throw new InvalidInput(describeIssues(r.error));
  return r.data;
}
