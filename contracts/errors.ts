// Errors a caller may handle, one class each, and the one-line rendering of a zod failure
// that names the field and the rule. No I/O here.
import type { z } from 'zod';
import type { ErrorCode } from './api.js';

/** Renders zod issues as `field.path: rule; other.field: rule`. */
export function describeIssues(error: z.ZodError, prefix = ''): string {
  // an unknown key first: it is usually a typo, and the "missing field" issue that comes with it
  // (`comand` for `command`) reads better after it
  const ordered = [...error.issues].sort((a, b) => Number(b.code === 'unrecognized_keys') - Number(a.code === 'unrecognized_keys'));
  return ordered
    .slice(0, 5)
    .map((i) => {
      const path = [prefix, ...i.path.map(String)].filter((p) => p !== '').join('.');
      // a record key's own rule is nested inside zod's generic "Invalid key in record"
      const inner = i.code === 'invalid_key' ? i.issues[0]?.message : undefined;
      return `${path || '(root)'}: ${inner ?? i.message}`;
    })
    .join('; ');
}

/** A message or file was refused by its contract. */
export class InvalidInput extends Error {
  readonly code: ErrorCode = 'invalid';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'InvalidInput';
  }
  static fromZod(error: z.ZodError, prefix = ''): InvalidInput {
    return new InvalidInput(describeIssues(error, prefix), { cause: error });
  }
}

export class JailNotFound extends Error {
  readonly code: ErrorCode = 'not_found';
  constructor(readonly jail: string) {
    super(`no jail named "${jail}"`);
    this.name = 'JailNotFound';
  }
}

/** Parses `data` with `schema` or throws InvalidInput naming the field and the rule. */
export function parseOrThrow<S extends z.ZodTypeAny>(schema: S, data: unknown, prefix = ''): z.output<S> {
  const r = schema.safeParse(data);
  if (!r.success) throw InvalidInput.fromZod(r.error, prefix);
  return r.data;
}
