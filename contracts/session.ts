// The wire of a session with a process inside a jail (`jailfleet exec`, `console`, `cp`): the
// request that opens one, and the binary frames that then flow on its two subjects. No I/O.
//
// A frame is one NATS message: byte 0 its kind, bytes 1-4 its sequence number (uint32, big
// endian, counting every frame its sender sent on this session from 0), then the payload.
// Sequence numbers let the receiver notice a lost frame (a slow consumer the broker cut off) and
// end the session saying so, instead of handing on a stream with a hole in it.
//
// Flow control is by credit, per direction: the receiver of data frames (stdin, stdout, stderr)
// sends `credit` frames with the total number of payload bytes it has consumed (written out);
// a sender keeps at most `window` bytes unconsumed in flight and stops reading its source
// otherwise. So a fast producer (`cat` of a large file) waits for a slow reader: nothing
// piles up in the broker and nothing is dropped.
import { z } from 'zod';
import { jailSpecSchema, nameSchema } from './jail-spec.js';
import { WIRE_VERSION } from './messages.js';

export const FRAME = {
  /** CLI → agent */
  stdin: 1,
  /** CLI → agent: no more stdin. */
  eof: 2,
  /** CLI → agent: payload uint16 rows, uint16 columns. */
  resize: 3,
  /** CLI → agent: payload the signal's name (SIGINT, ...), for the command's foreground group. */
  signal: 4,
  /** both ways: payload float64 BE, total payload bytes of data frames consumed so far. */
  credit: 5,
  /** both ways, every SESSION_PING_MS: "I am still here". */
  ping: 6,
  /** CLI → agent: end the session now (the command is killed). */
  close: 7,
  /** agent → CLI */
  stdout: 16,
  stderr: 17,
  /** agent → CLI, the last frame: payload JSON sessionExitSchema. */
  exit: 18,
} as const;
export type FrameKind = (typeof FRAME)[keyof typeof FRAME];
export const FRAME_HEADER_BYTES = 5;

/** How often each side pings, and how long the other waits for a frame before it ends the session. */
export const SESSION_PING_MS = 2000;
export const SESSION_SILENCE_MS = 15_000;
/** A `cp` stream is refused past this many bytes unless the CLI asks for less. */
export const COPY_MAX_BYTES = 4 * 1024 * 1024 * 1024;

const sessionId = z.string().regex(/^[a-z0-9]{16,32}$/, 'a session id is 16 to 32 lowercase letters and digits');
const jailPath = z
  .string()
  .min(1)
  .max(4096)
  .refine((p) => p.startsWith('/'), 'must be an absolute path inside the jail')
  .refine((p) => !p.includes('\0'), 'must not contain a NUL byte')
  .refine((p) => {
    let depth = 0;
    for (const seg of p.split('/')) {
      if (seg === '..') depth--;
      else if (seg !== '' && seg !== '.') depth++;
      if (depth < 0) return false;
    }
    return true;
  }, '".." must not climb above the jail\'s root');
export const jailPathSchema = jailPath;

const common = {
  v: z.literal(WIRE_VERSION),
  id: sessionId,
  jail: nameSchema,
  /** Bytes the agent may send before the CLI's credit (and the CLI before the agent's). */
  window: z.number().int().min(64 * 1024).max(64 * 1024 * 1024).default(1024 * 1024),
};

export const sessionRequestSchema = z.discriminatedUnion('kind', [
  z.object({
    ...common,
    kind: z.literal('exec'),
    command: jailSpecSchema.shape.command,
    /** A login shell of the jail instead of `command` (`jailfleet console`). */
    login: z.boolean().default(false),
    /** A pseudo-terminal of this size inside the jail; null: plain pipes. */
    tty: z.object({ rows: z.number().int().min(1).max(65535), cols: z.number().int().min(1).max(65535), term: z.string().regex(/^[A-Za-z0-9._+-]{1,64}$/).default('xterm') }).nullable(),
    /** Whether stdin frames will come; without, the command's stdin is /dev/null. */
    stdin: z.boolean(),
    /** Kill the command after this long; null: no limit. */
    timeoutMs: z.number().int().min(1).max(7 * 24 * 3_600_000).nullable().default(null),
  }),
  /**
   * The console of a jail: its last `tail` lines (100 when neither `tail` nor `since` is given),
   * or what it wrote since `since` (epoch ms; to within a second, services/agent/console-times.ts)
   * limited to the last `tail` lines when both are given; then (with `follow`) what it writes,
   * across restarts.
   */
  z.object({
    ...common,
    kind: z.literal('logs'),
    tail: z.number().int().min(0).max(100_000).optional(),
    since: z.number().int().min(0).max(8_640_000_000_000_000).optional(),
    follow: z.boolean(),
  }),
  z.object({ ...common, kind: z.literal('copy-in'), path: jailPath, maxBytes: z.number().int().min(1).max(COPY_MAX_BYTES) }),
  z.object({ ...common, kind: z.literal('copy-out'), path: jailPath, maxBytes: z.number().int().min(1).max(COPY_MAX_BYTES) }),
]);
export type SessionRequest = z.output<typeof sessionRequestSchema>;
export type SessionRequestInput = z.input<typeof sessionRequestSchema>;

export const sessionOpenedSchema = z.object({ id: sessionId });

export const sessionExitSchema = z.object({
  /** The command's exit code (128 + signal when killed, 124 after --timeout). */
  exitCode: z.number().int(),
  /** Why the session ended other than by the command's own exit (timeout, silence, lost frames). */
  reason: z.string().max(4096).optional(),
  /** `logs -f`: the jail left this host (moved or removed); the CLI looks for where it is now. */
  left: z.boolean().optional(),
});
export type SessionExit = z.infer<typeof sessionExitSchema>;
