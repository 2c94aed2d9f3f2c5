// One side of a session's frame stream (contracts/session.ts): numbered frames out, numbered
// frames in (a gap ends the session), credit-based flow control for data frames, and pings both
// ways so that either side notices the other is gone. Shared by the agent and the CLI.
// It must never buffer more than `window` unconsumed bytes towards the other side, and never
// pass on a stream with a lost frame in it.
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import { FRAME, FRAME_HEADER_BYTES, SESSION_PING_MS, SESSION_SILENCE_MS, type FrameKind } from '../../contracts/index.js';

/** Why a session ended from this side's point of view other than by its last frame. */
export class SessionLost extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SessionLost';
  }
}

const DATA_KINDS = new Set<number>([FRAME.stdin, FRAME.stdout, FRAME.stderr]);

export interface SessionChannelOptions {
  /** Bytes of data frames the other side may have unconsumed (its window for us, ours for it). */
  window: number;
  /** Every frame but credit and ping, in order. Data frames are consumed by calling `consumed`. */
  onFrame: (kind: number, payload: Uint8Array) => void;
  /** The stream broke (a lost frame, silence): the channel is closed already. */
  onLost: (err: SessionLost) => void;
  pingMs?: number;
  silenceMs?: number;
}

export class SessionChannel {
  private seqOut = 0;
  private seqIn = 0;
  private sent = 0;
  private acked = 0;
  private consumedTotal = 0;
  private creditedAt = 0;
  private lastHeard = Date.now();
  private creditWaiters: (() => void)[] = [];
  private readonly sub: Subscription;
  private readonly timer: NodeJS.Timeout;
  private closed = false;

  constructor(
    private readonly nc: NatsConnection,
    private readonly sendSubject: string,
    receiveSubject: string,
    private readonly opts: SessionChannelOptions,
  ) {
    this.sub = nc.subscribe(receiveSubject, { callback: (err, msg) => (err ? this.lose(`the session's subscription failed: ${err.message}`) : this.receive(msg.data)) });
    const silenceMs = opts.silenceMs ?? SESSION_SILENCE_MS;
    this.timer = setInterval(() => {
      if (Date.now() - this.lastHeard > silenceMs) return this.lose(`nothing heard from the other side for ${silenceMs / 1000} s`);
      this.send(FRAME.ping);
    }, opts.pingMs ?? SESSION_PING_MS);
    this.timer.unref();
  }

  /** Sends a control frame at once (no credit needed). */
  send(kind: FrameKind, payload: Uint8Array = new Uint8Array(0)): void {
    if (this.closed || this.nc.isClosed()) return;
    const frame = new Uint8Array(FRAME_HEADER_BYTES + payload.length);
    frame[0] = kind;
    new DataView(frame.buffer).setUint32(1, this.seqOut++ >>> 0);
    frame.set(payload, FRAME_HEADER_BYTES);
    this.nc.publish(this.sendSubject, frame);
  }

  /** Sends a data frame once the other side has room for it; resolves when it is sent. */
  async sendData(kind: FrameKind, chunk: Uint8Array): Promise<void> {
    // one chunk may go past the window when nothing is in flight, so no chunk waits forever
    while (!this.closed && this.sent - this.acked > 0 && this.sent - this.acked + chunk.length > this.opts.window) {
      await new Promise<void>((resolve) => this.creditWaiters.push(resolve));
    }
    if (this.closed) return;
    this.sent += chunk.length;
    this.send(kind, chunk);
  }

  /** Bytes of received data frames handed on (written out): the other side may send that much more. */
  consumed(bytes: number): void {
    this.consumedTotal += bytes;
    if (this.consumedTotal - this.creditedAt < this.opts.window / 4) return;
    this.creditedAt = this.consumedTotal;
    const payload = new Uint8Array(8);
    new DataView(payload.buffer).setFloat64(0, this.consumedTotal);
    this.send(FRAME.credit, payload);
  }

  /** Flushes what was published (the last frames of a session) to the broker. */
  async flush(): Promise<void> {
    if (!this.nc.isClosed()) await this.nc.flush().catch(() => undefined);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    this.sub.unsubscribe();
    for (const w of this.creditWaiters.splice(0)) w();
  }

  private lose(why: string): void {
    if (this.closed) return;
    this.close();
    this.opts.onLost(new SessionLost(why));
  }

  private receive(data: Uint8Array): void {
    if (this.closed) return;
    this.lastHeard = Date.now();
    if (data.length < FRAME_HEADER_BYTES) return this.lose('a frame shorter than its header');
    const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
    const seq = view.getUint32(1);
    if (seq !== this.seqIn >>> 0) return this.lose(`frame ${this.seqIn} of the session was lost (got ${seq})`);
    this.seqIn++;
    const kind = data[0]!;
    const payload = data.subarray(FRAME_HEADER_BYTES);
    if (kind === FRAME.ping) return;
    if (kind === FRAME.credit) {
      if (payload.length !== 8) return this.lose('a credit frame of the wrong size');
      this.acked = Math.max(this.acked, new DataView(payload.buffer, payload.byteOffset, 8).getFloat64(0));
      for (const w of this.creditWaiters.splice(0)) w();
      return;
    }
    this.opts.onFrame(kind, payload);
  }

  /** Whether `kind` counts against the window. */
  static isData(kind: number): boolean {
    return DATA_KINDS.has(kind);
  }
}
