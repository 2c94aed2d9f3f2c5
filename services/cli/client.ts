// The CLI's side of the wire: one connection, requests to the scheduler API, the status
// queries and agents, each reply parsed by its contract. Failures become one-line CliErrors.
import { connect, type NatsConnection } from '@nats-io/transport-node';
import type { z } from 'zod';
import {
  WIRE_VERSION,
  applyReplySchema,
  drainReplySchema,
  execReplySchema,
  logsReplySchema,
  hostsReplySchema,
  nameReplySchema,
  psReplySchema,
  subjects,
  type ExecRequest,
  type Fleet,
  type PsRequest,
} from '../../contracts/index.js';
import { decodeWith, encodeJson } from '../common/codec.js';

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
   * died mid-request is replaced by a standby within seconds.
   */
  private async request<T>(subject: string, body: unknown, schema: z.ZodType<{ ok: true; result: T } | { ok: false; error: { code: string; message: string } }>, who: string, timeoutMs = 10_000): Promise<T> {
    const data = encodeJson(body);
    const started = Date.now();
    // a standby scheduler takes over within its lease (3 s); a late answer is worth one more wait
    const retryUntil = started + Math.max(15_000, timeoutMs);
    let reply;
    for (let attempt = 0; ; attempt++) {
      try {
        reply = await this.nc.request(subject, data, { timeout: timeoutMs });
        break;
      } catch (err) {
        const msg = (err as Error).message ?? '';
        const noResponders = /no responders|503/i.test(msg) || (err as { code?: string }).code === '503';
        const retriable = who !== 'agent' && (noResponders ? Date.now() - started < 6000 : /timeout|disconnect|reconnect/i.test(msg) && Date.now() < retryUntil);
        if (retriable && !this.nc.isClosed()) {
          await new Promise((r) => setTimeout(r, Math.min(1000, 100 * 2 ** attempt)));
          continue;
        }
        if (noResponders)
          throw new CliError(`no ${who} is answering on ${this.servers.join(',')} (start one with: jailfleet up, or jailfleet serve ${who === 'agent' ? 'agent' : who})`);
        if (/timeout/i.test(msg)) throw new CliError(`the ${who} did not answer within ${timeoutMs / 1000} s`);
        throw new CliError(`request to the ${who} failed: ${msg}`);
      }
    }
    const r = decodeWith(schema, reply.data);
    if (!r.ok) throw new CliError(r.error.message, r.error.code === 'invalid' ? 2 : 1);
    return r.result;
  }

  apply(fleet: Fleet) {
    // a large fleet takes the scheduler a while to record: allow for it
    const timeoutMs = 10_000 + fleet.jails.length * 5;
    return this.request(subjects.api('apply'), { v: WIRE_VERSION, fleet }, applyReplySchema, 'scheduler', timeoutMs);
  }

  /** Asks the scheduler to drain a host (`parallel` jails moved at a time), or to take jails again. */
  drain(host: string, parallel: number) {
    return this.request(subjects.api('drain'), { v: WIRE_VERSION, host, parallel }, drainReplySchema, 'scheduler');
  }

  undrain(host: string) {
    return this.request(subjects.api('undrain'), { v: WIRE_VERSION, host }, drainReplySchema, 'scheduler');
  }

  setDesired(verb: 'stop' | 'start' | 'rm', name: string) {
    return this.request(subjects.api(verb), { v: WIRE_VERSION, name }, nameReplySchema, 'scheduler');
  }

  ps(filter: Omit<PsRequest, 'v'> = {}, timeoutMs = 10_000) {
    return this.request(subjects.status('ps'), { v: WIRE_VERSION, ...filter }, psReplySchema, 'status', timeoutMs);
  }

  hosts() {
    return this.request(subjects.status('hosts'), { v: WIRE_VERSION }, hostsReplySchema, 'status');
  }

  logs(host: string, jail: string, lines: number) {
    return this.request(subjects.logs(host), { v: WIRE_VERSION, jail, lines }, logsReplySchema, 'agent');
  }

  exec(host: string, req: Omit<ExecRequest, 'v'>) {
    return this.request(subjects.exec(host), { v: WIRE_VERSION, ...req }, execReplySchema, 'agent', req.timeoutMs + 5000);
  }
}
