// The CLI's side of the wire: one connection, requests to the scheduler API, the status
// queries and agents, each reply parsed by its contract. Failures become one-line CliErrors.
import { connect, type NatsConnection } from '@nats-io/transport-node';
import type { z } from 'zod';
import {
  planResultSchema,
  CodedError,
  WIRE_VERSION,
  applyReplyBody,
  drainReplyBody,
  execResultSchema,
  hostsReplyBody,
  imageRmReplyBody,
  logsResultSchema,
  nameReplyBody,
  psReplyBody,
  subjects,
  type ErrorCode,
  type ExecRequest,
  type Fleet,
  type PsRequest,
  sessionOpenedSchema,
  type SessionRequestInput,
} from '../../contracts/index.js';
import { DEFAULT_REQUEST_TIMEOUT_MS } from '../common/defaults.js';
import { ConnectionClosed, NoReply, NoResponders, RequestFailed, request, requestChunked } from '../common/rpc.js';

/** A failure the CLI reports as `jailfleet: <message>` and a non-zero exit. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

/** The exit code of a failure with this code: 2 when the input was refused, 1 otherwise. */
export const exitCodeOf = (code: ErrorCode) => (code === 'invalid' ? 2 : 1);

type Who = 'scheduler' | 'status' | 'agent';

export class Client {
  private constructor(
    readonly nc: NatsConnection,
    private readonly servers: string[],
  ) {}

  static async connect(servers: string[]): Promise<Client> {
    try {
      const nc = await connect({ servers, name: 'jailfleet-cli', timeout: 3000, maxReconnectAttempts: 20, reconnectTimeWait: 250 });
      return new Client(nc, servers);
    } catch {
      throw new CliError(`cannot reach NATS at ${servers.join(',')}: is a cluster running? (start one with: jailfleet up)`);
    }
  }

  async close() {
    await this.nc.close().catch(() => undefined);
  }

  /**
   * One request, retried while nobody answers or the answer is late: every request here is
   * idempotent (apply of the same spec keeps its generation), and a scheduler or a broker that
   * died mid-request is replaced by a standby within seconds. An agent is asked once: nobody
   * stands by for it.
   */
  private request<S extends z.ZodTypeAny>(subject: string, body: unknown, result: S, who: Who, timeoutMs = DEFAULT_REQUEST_TIMEOUT_MS): Promise<z.output<S>> {
    return this.retrying(() => request(this.nc, subject, body, result, { timeoutMs }), who, timeoutMs);
  }

  /** A list of any length from the status service (answered in chunks), retried as `request`. */
  private requestList<S extends z.ZodTypeAny>(subject: string, body: unknown, chunk: S, key: string, timeoutMs = DEFAULT_REQUEST_TIMEOUT_MS): Promise<z.output<S>> {
    return this.retrying(() => requestChunked(this.nc, subject, body, chunk, key, { timeoutMs }), 'status', timeoutMs);
  }

  private async retrying<T>(ask: () => Promise<T>, who: Who, timeoutMs: number): Promise<T> {
    const started = Date.now();
    // a standby scheduler takes over within its lease (3 s); a late answer is worth one more wait
    const retryUntil = started + Math.max(15_000, timeoutMs);
    for (let attempt = 0; ; attempt++) {
      try {
        return await ask();
      } catch (err) {
        const transient =
          err instanceof NoResponders ? Date.now() - started < 6000 : (err instanceof NoReply || err instanceof RequestFailed) && Date.now() < retryUntil;
        if (who !== 'agent' && transient && !this.nc.isClosed()) {
          await new Promise((r) => setTimeout(r, Math.min(1000, 100 * 2 ** attempt)));
          continue;
        }
        throw this.failure(err, who, timeoutMs);
      }
    }
  }

  /** The one line for a failed request: what the server said, or why nobody said anything. */
  private failure(err: unknown, who: Who, timeoutMs: number): Error {
    if (err instanceof NoResponders)
      return new CliError(`no ${who} is answering on ${this.servers.join(',')} (start one with: jailfleet up, or jailfleet serve ${who})`);
    if (err instanceof NoReply) return new CliError(`the ${who} did not answer within ${timeoutMs / 1000} s`);
    if (err instanceof ConnectionClosed || err instanceof RequestFailed) return new CliError(`request to the ${who} failed: ${err.message}`);
    if (err instanceof CodedError) return new CliError(err.message, exitCodeOf(err.code));
    return err instanceof Error ? err : new Error(String(err));
  }

  apply(fleet: Fleet) {
    // a large fleet takes the scheduler a while to record: allow for it
    const timeoutMs = DEFAULT_REQUEST_TIMEOUT_MS + fleet.jails.length * 5;
    return this.request(subjects.api('apply'), { v: WIRE_VERSION, fleet }, applyReplyBody, 'scheduler', timeoutMs);
  }

  /** What an apply of `fleet` would do now, from the scheduler's live packing (nothing is written). */
  plan(fleet: Fleet) {
    return this.request(subjects.api('plan'), { v: WIRE_VERSION, fleet }, planResultSchema, 'scheduler', DEFAULT_REQUEST_TIMEOUT_MS + fleet.jails.length * 5);
  }

  /** Asks the scheduler to drain a host (`parallel` jails moved at a time), or to take jails again. */
  drain(host: string, parallel: number) {
    return this.request(subjects.api('drain'), { v: WIRE_VERSION, host, parallel }, drainReplyBody, 'scheduler');
  }

  undrain(host: string) {
    return this.request(subjects.api('undrain'), { v: WIRE_VERSION, host }, drainReplyBody, 'scheduler');
  }

  setDesired(verb: 'stop' | 'start' | 'rm', name: string) {
    return this.request(subjects.api(verb), { v: WIRE_VERSION, name }, nameReplyBody, 'scheduler');
  }

  /** `image rm`: the scheduler removes the tag (and its bytes once no tag names them) unless a jail uses it. */
  imageRm(tag: string, force: boolean) {
    return this.request(subjects.api('image-rm'), { v: WIRE_VERSION, tag, force }, imageRmReplyBody, 'scheduler');
  }

  ps(filter: Omit<PsRequest, 'v'> = {}, timeoutMs = DEFAULT_REQUEST_TIMEOUT_MS) {
    return this.requestList(subjects.status('ps'), { v: WIRE_VERSION, ...filter }, psReplyBody, 'jails', timeoutMs);
  }

  hosts() {
    return this.requestList(subjects.status('hosts'), { v: WIRE_VERSION }, hostsReplyBody, 'hosts');
  }

  logs(host: string, jail: string, lines: number) {
    return this.request(subjects.logs(host), { v: WIRE_VERSION, jail, lines }, logsResultSchema, 'agent');
  }

  /** Opens a session (contracts/session.ts); its frames flow on subjects of its own. */
  openSession(host: string, req: SessionRequestInput) {
    return this.request(subjects.session(host), req, sessionOpenedSchema, 'agent');
  }

  exec(host: string, req: Omit<ExecRequest, 'v'>) {
    return this.request(subjects.exec(host), { v: WIRE_VERSION, ...req }, execResultSchema, 'agent', req.timeoutMs + 5000);
  }
}
