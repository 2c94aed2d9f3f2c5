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

/**
 * A failure whose code goes on the wire (contracts/api.ts ERROR_CODES): one class per code, and
 * a server maps what it throws to a code, and a client the code back to the class, only through
 * errorToCode and codeToError below.
 */
export abstract class CodedError extends Error {
  abstract readonly code: ErrorCode;
}

/** A message or file was refused by its contract. */
export class InvalidInput extends CodedError {
  readonly code = 'invalid' as const;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'InvalidInput';
  }
  static fromZod(error: z.ZodError, prefix = ''): InvalidInput {
    return new InvalidInput(describeIssues(error, prefix), { cause: error });
  }
}

/** What a request names (a jail, a host) does not exist. */
export class NotFound extends CodedError {
  readonly code = 'not_found' as const;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'NotFound';
  }
}

export class JailNotFound extends NotFound {
  constructor(readonly jail: string) {
    super(`no jail named "${jail}"`);
    this.name = 'JailNotFound';
  }
}

/** The request clashes with the state it found (changed meanwhile, or not in a state that allows it). */
export class Conflict extends CodedError {
  readonly code = 'conflict' as const;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'Conflict';
  }
}

/** Nobody can answer now (no service listens, the connection is gone); asking again later may work. */
export class Unavailable extends CodedError {
  readonly code = 'unavailable' as const;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'Unavailable';
  }
}

/** No answer came in time; the request may or may not have been carried out. */
export class TimedOut extends CodedError {
  readonly code = 'timeout' as const;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TimedOut';
  }
}

/** Anything else: a bug or a failure of the host; the server logs it. */
export class InternalError extends CodedError {
  readonly code = 'internal' as const;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'InternalError';
  }
}

/** The wire code of anything thrown: its class's code, `internal` for whatever is not a CodedError. */
export function errorToCode(err: unknown): ErrorCode {
  return err instanceof CodedError ? err.code : 'internal';
}

const ERROR_CLASSES: Record<ErrorCode, new (message: string, options?: { cause?: unknown }) => CodedError> = {
  invalid: InvalidInput,
  not_found: NotFound,
  conflict: Conflict,
  unavailable: Unavailable,
  timeout: TimedOut,
  internal: InternalError,
};

/** The class of a code read from the wire, carrying the server's message. */
export function codeToError(code: ErrorCode, message: string): CodedError {
  return new ERROR_CLASSES[code](message);
}

/** Parses `data` with `schema` or throws InvalidInput naming the field and the rule. */
export function parseOrThrow<S extends z.ZodTypeAny>(schema: S, data: unknown, prefix = ''): z.output<S> {
  const r = schema.safeParse(data);
  if (!r.success) throw InvalidInput.fromZod(r.error, prefix);
  return r.data;
}
