#!/usr/bin/env node
// The `jailfleet` command: client subcommands (run, apply, plan, ps, hosts, stop, start, rm,
// exec, events) and the service runners (serve, up). Every failure prints one line starting with
// `jailfleet: ` on stderr and exits non-zero.
import { Command, CommanderError, Option } from 'commander';
import { z } from 'zod';
import { COPY_MAX_BYTES, jailPathSchema, subjects, EVT_STREAM, JAIL_STATES, NETWORK_MODES, PLACEMENT_STRATEGIES, nameSchema, namePatternSchema, RESTART_POLICIES, execRequestSchema, stateEventSchema, type JailSpecInput } from '../../contracts/index.js';
import { decodeWith, natsServers } from '../common/codec.js';
import { DEFAULT_IMAGE_CACHE_MB, DEFAULT_JAIL_CIDR, DEFAULT_LOG_LINES, DEFAULT_MAX_IMAGE_MB, DEFAULT_HEARTBEAT_MS, DEFAULT_HOST_TTL_MS, DEFAULT_LEASE_MS, DEFAULT_NATS_PORT, DEFAULT_NATS_URL } from '../common/defaults.js';
import { CliError, Client } from './client.js';
import { cpuCoresSchema, flag, metricsAddrFlag, parallelStepsSchema, parallelSchema, strategySchema, hostsCountSchema, httpAddrSchema, linesSchema, jailName, memoryMBSchema, msSchema, natsClusterSchema, schedulersSchema, sinceSchema, parseEnvFlag, parseFleet, parseLabelFlags, parseMountFlag, parseVolumeFlags, portSchema, readFleetFile, readHostsFile, bridgeNameSchema, parseVolumeFlag, zfsDatasetSchema, parseMountSourceFlags } from './flags.js';
import { hostsTable, planText, psJson, psTable } from './output.js';
import { startWaiter, type JailOutcome } from './wait.js';
import { followDrain } from './drain-wait.js';
import { Progress } from './progress.js';
import { maxImageMBSchema, registerImageCommands } from './image-commands.js';
import type { SessionOpen } from './session-client.js';
import type { Fleet, PlanResultJson } from '../../contracts/index.js';

const program = new Command('jailfleet')
  .description('Run jails across many hosts: scheduler, agents and status over NATS.')
  .version('0.1.0')
  .addOption(new Option('--nats <urls>', 'NATS server URL(s), comma-separated').env('JAILFLEET_NATS_URL').default(DEFAULT_NATS_URL))
  .exitOverride()
  .configureOutput({ outputError: (str, write) => write(`jailfleet: ${str.replace(/^error: /, '')}`) });

const servers = () => natsServers(program.opts().nats as string);

async function withClient<T>(fn: (c: Client) => Promise<T>): Promise<T> {
  const c = await Client.connect(servers());
  try {
    return await fn(c);
  } finally {
    await c.close();
  }
}

const collect = (v: string, acc: string[]) => [...acc, v];

/** Applies a fleet; with `wait`, follows each jail until running or failed. */
async function applyFleet(fleet: Fleet, wait: boolean, timeoutMs: number, report: 'run' | 'apply'): Promise<number> {
  return withClient(async (c) => {
    const checked = new Set(fleet.jails.filter((j) => j.health).map((j) => j.name));
    const waiter = wait ? startWaiter(c, fleet.jails.map((j) => j.name), checked) : undefined;
    let progress: Progress | undefined;
    try {
      const before = wait ? await c.ps().then((r) => r.jails, () => undefined) : undefined;
      const applied = await c.apply(fleet);
      if (!waiter) {
        for (const j of applied.jails) console.log(`${j.name}: generation ${j.generation}${j.changed ? '' : ' (unchanged)'}`);
        return 0;
      }
      const targets = new Map(applied.jails.map((j) => [j.name, j.generation]));
      const total = targets.size;
      let n = 0;
      let running = 0;
      let failed = 0;
      progress = report === 'apply' ? new Progress(total, 'running') : undefined;
      const line = (o: JailOutcome) => {
        n++;
        if (!progress) return;
        if (o.state === 'running') running++;
        else failed++;
        const extra = failed ? `, ${failed} not running` : '';
        if (o.state === 'running') return progress.update(running, `[${n}/${total}] ${o.name} running on ${o.host}`, extra);
        progress.note(`[${n}/${total}] ${o.name} ${o.state}${o.message ? `: ${o.message}` : ''}`);
        progress.update(running, undefined, extra);
      };
      const outcomes = await waiter.wait(targets, { timeoutMs, before, onUpdate: line });
      progress?.stop();
      // the answer came from the agents' events; let the status service catch up (a few ms) so
      // that a `ps` right after this shows what we just reported
      const ok = outcomes.filter((o) => o.state === 'running').map((o) => o.name);
      for (const until = Date.now() + 3000; ok.length && Date.now() < until; await new Promise((r) => setTimeout(r, 50))) {
        const rows = new Map((await c.ps().catch(() => ({ jails: [] }))).jails.map((j) => [j.name, j]));
        if (ok.every((n) => rows.get(n)?.state === 'running' && rows.get(n)!.generation >= targets.get(n)! && (!checked.has(n) || rows.get(n)!.health === 'healthy'))) break;
      }
      const bad = outcomes.filter((o) => o.state !== 'running');
      if (report === 'run') {
        const o = outcomes[0]!;
        if (o.state === 'running') console.log(`${o.name} running on ${o.host}`);
        else throw new CliError(`${o.name} ${o.state === 'timeout' ? 'did not start' : o.state}: ${o.message}`);
        return 0;
      }
      if (bad.length) throw new CliError(`${bad.length} of ${total} jails not running: ${bad.map((o) => `${o.name} (${o.state}${o.message ? `: ${o.message}` : ''})`).join(', ')}`);
      console.log(`${total} of ${total} jails running`);
      return 0;
    } finally {
      progress?.stop();
      waiter?.close();
    }
  });
}

program
  .command('run')
  .description('run one jail and wait until it runs (prints its host) or fails')
  .argument('<name>', 'jail name')
  .argument('<command...>', 'command and arguments (after --)')
  .option('--host <host>', 'pin to this host')
  .option('--hostname <hostname>', 'hostname inside the jail (default: the name)')
  .option('--image <image>', 'root filesystem: an imported image, NAME:TAG or sha256:<hex> (default: the host\'s thin root)')
  .addOption(new Option('--restart <policy>', 'restart policy').choices(RESTART_POLICIES))
  .option('--env <KEY=VALUE>', 'environment variable (repeatable)', collect, [])
  .option('--mount <SRC:DST[:ro|rw]>', 'mount a host path (repeatable; read-only by default)', collect, [])
  .option('--volume <NAME:TARGET[:ro]>', 'a host volume at TARGET (repeatable; writable unless :ro); placed only on hosts offering it', collect, [])
  .addOption(new Option('--network <mode>', 'inherit (host network), none (loopback only) or vnet (its own stack and address)').choices(NETWORK_MODES))
  .option('--stop-timeout <ms>', 'SIGKILL this long after SIGTERM')
  .option('--timeout <ms>', 'how long to wait for the jail to run', '120000')
  .action(async (name: string, command: string[], o) => {
    const spec: JailSpecInput = {
      name: jailName(name),
      command,
      env: Object.fromEntries((o.env as string[]).map(parseEnvFlag)),
      mounts: (o.mount as string[]).map(parseMountFlag),
      ...((o.volume as string[]).length ? { volumes: (o.volume as string[]).map(parseVolumeFlag) } : {}),
      ...(o.host ? { placement: { host: o.host } } : {}),
      ...(o.hostname ? { hostname: o.hostname } : {}),
      ...(o.image !== undefined ? { image: o.image } : {}),
      ...(o.restart ? { restart: o.restart } : {}),
      ...(o.network ? { network: o.network } : {}),
      ...(o.stopTimeout ? { stopTimeoutMs: flag('stop-timeout', msSchema, o.stopTimeout) } : {}),
    };
    const fleet = parseFleet({ jails: [spec] }, 'run');
    process.exitCode = await applyFleet(fleet, true, flag('timeout', msSchema, o.timeout), 'run');
  });

program
  .command('apply')
  .description('apply a fleet file (YAML or JSON: { jails: [spec, ...] })')
  .requiredOption('-f, --file <file>', 'fleet file, or - for stdin')
  .option('--wait', 'wait until every jail runs; exit non-zero if any fails')
  .option('--timeout <ms>', 'how long to wait', '300000')
  .action(async (o) => {
    const fleet = await readFleetFile(o.file);
    process.exitCode = await applyFleet(fleet, Boolean(o.wait), flag('timeout', msSchema, o.timeout), 'apply');
  });

program
  .command('plan')
  .description('show how a fleet would be packed onto hosts, without applying it; exits 1 if a jail fits nowhere')
  .requiredOption('-f, --file <file>', 'fleet file, or - for stdin')
  .option('--hosts <file>', 'hosts file (YAML or JSON: { hosts: [{ name, cpu, memoryMB, labels }] }); default: the live cluster')
  .addOption(new Option('--strategy <strategy>', 'with --hosts: binpack (fewest hosts, the default) or spread (least loaded)').choices(PLACEMENT_STRATEGIES))
  .option('--json', 'JSON: { hostsUsed, lowerBound, hosts: [{ host, jails, cpu, memoryMB }], unplaced: [{ name, reason }] }')
  .addHelpText(
    'after',
    '\nThe lower bound is the fewest hosts that could hold, by volume alone, the jails that fit on\n' +
      'some host: per resource, the fewest of the largest hosts whose capacities add up to the\n' +
      "jails' total, the larger of cpu and memory (for identical hosts: total / host, rounded up).\n" +
      'Without --hosts the scheduler answers what an apply of the fleet would do now, with its own\n' +
      'strategy and the same engine and rules: jails already placed stay where they are, and the\n' +
      'rest are packed around what the hosts already run. With --hosts, the same engine places the\n' +
      'fleet on those hosts as if they ran nothing. Nothing is written either way.',
  )
  .action(async (o) => {
    const fleet = await readFleetFile(o.file);
    if (o.strategy && !o.hosts) throw new CliError('--strategy: only with --hosts (on the live cluster, plan uses the scheduler\'s own strategy, as apply does)', 2);
    let r: PlanResultJson;
    let capacity: Map<string, { cpu: number; memoryMB: number }>;
    if (o.hosts) {
      const hosts = (await readHostsFile(o.hosts)).hosts.map((h) => ({ name: h.name, up: true, draining: false, capacity: { cpu: h.cpu, memoryMB: h.memoryMB }, labels: h.labels, volumes: h.volumes }));
      const { plan } = await import('../scheduler/plan.js');
      r = plan(fleet.jails, hosts, o.strategy ?? 'binpack');
      capacity = new Map(hosts.map((h) => [h.name, h.capacity]));
    } else {
      const [planned, hosts] = await withClient((c) => Promise.all([c.plan(fleet), c.hosts()]));
      r = planned;
      capacity = new Map(hosts.hosts.map((h) => [h.host, h.capacity ?? { cpu: 0, memoryMB: 0 }]));
    }
    console.log(o.json ? JSON.stringify(r, null, 2) : planText(r, capacity));
    if (r.unplaced.length) throw new CliError(`${r.unplaced.length} of ${fleet.jails.length} jails cannot be placed (reasons above)`, 1);
  });

program
  .command('ps')
  .description('list jails cluster-wide')
  .option('--host <host>', 'only this host')
  .addOption(new Option('--state <state>', 'only this state').choices([...JAIL_STATES.filter((s) => s !== 'destroyed'), 'unplaced', 'removing', 'lost']))
  .option('--name <pattern>', 'only jails whose name matches (* any characters, ? one)')
  .option('--json', 'JSON array')
  .action(async (o) => {
    const host = o.host === undefined ? undefined : flag('host', nameSchema, o.host);
    const name = o.name === undefined ? undefined : flag('name', namePatternSchema, o.name);
    const { jails } = await withClient((c) => c.ps({ host, state: o.state, name }));
    console.log(o.json ? JSON.stringify(psJson(jails), null, 2) : psTable(jails));
  });

program
  .command('hosts')
  .description('list hosts: liveness or drain, capacity and what is allocated, labels')
  .option('--json', 'JSON array')
  .action(async (o) => {
    const { hosts } = await withClient((c) => c.hosts());
    console.log(o.json ? JSON.stringify(hosts, null, 2) : hostsTable(hosts));
  });

program
  .command('drain')
  .description('move every jail off a host, each started on its new host before its old copy stops; the host takes no new jails until undrain')
  .argument('<host>', 'host name')
  .option('--parallel <n>', 'jails moved at a time', '1')
  .option('--wait', 'follow the moves; exit 0 once the host is drained, non-zero if a jail cannot move')
  .option('--timeout <ms>', 'how long to wait', '600000')
  .action(async (hostArg: string, o) => {
    const host = jailName(hostArg, 'HOST');
    const parallel = flag('parallel', parallelSchema, o.parallel);
    const timeoutMs = flag('timeout', msSchema, o.timeout);
    process.exitCode = await withClient(async (c) => {
      const r = await c.drain(host, parallel);
      const n = r.jails.length;
      console.log(`${host}: draining, ${n} jail${n === 1 ? '' : 's'} to move, ${parallel} at a time`);
      return o.wait ? followDrain(c, host, r.jails, timeoutMs) : 0;
    });
  });

program
  .command('undrain')
  .description('let a drained (or draining) host take jails again; jails already moved stay where they are')
  .argument('<host>', 'host name')
  .action(async (hostArg: string) => {
    const host = jailName(hostArg, 'HOST');
    const r = await withClient((c) => c.undrain(host));
    console.log(`${r.host}: takes jails again (${r.jails.length} placed on it)`);
  });

for (const verb of ['stop', 'start', 'rm'] as const) {
  program
    .command(verb)
    .description({ stop: 'stop a jail (keeps its root)', start: 'start a stopped jail', rm: 'stop and remove a jail' }[verb])
    .argument('<name>', 'jail name')
    .action(async (name: string) => {
      const r = await withClient((c) => c.setDesired(verb, jailName(name)));
      console.log(`${r.name}: ${{ stop: 'stopping', start: 'starting', rm: 'removing' }[verb]} (generation ${r.generation})`);
    });
}

program
  .command('exec')
  .description('run a command inside a running jail, its output streamed as it comes; exits with its exit code')
  .argument('<name>', 'jail name')
  .argument('<command...>', 'command and arguments (after --)')
  .option('-i, --interactive', 'stream stdin to the command')
  .option('-t, --tty', 'a pseudo-terminal inside the jail (raw mode here, its size follows this terminal)')
  .option('--timeout <ms>', 'kill the command after this long (default: no limit)')
  .action(async (name: string, command: string[], o) => {
    const jail = jailName(name);
    const timeoutMs = o.timeout === undefined ? null : flag('timeout', msSchema, o.timeout);
    const req = execRequestSchema.safeParse({ v: 1, jail, command });
    if (!req.success) throw new CliError(`command: ${req.error.issues[0]!.message}`, 2);
    process.exitCode = await interactive(jail, { kind: 'exec', jail, command, login: false, stdin: Boolean(o.interactive), timeoutMs }, Boolean(o.interactive), Boolean(o.tty));
  });

program
  .command('console')
  .description("a login shell in a running jail, with a terminal (exit it to come back)")
  .argument('<name>', 'jail name')
  .action(async (name: string) => {
    const jail = jailName(name);
    process.exitCode = await interactive(jail, { kind: 'exec', jail, command: ['/bin/sh'], login: true, stdin: true, timeoutMs: null }, true, true);
  });

/** Runs an exec or console session; the command's exit code, or 124 after --timeout. */
async function interactive(jail: string, open: Omit<Extract<SessionOpen, { kind: 'exec' }>, 'tty'>, stdin: boolean, tty: boolean): Promise<number> {
  const { runSession, hostOfRunningJail } = await import('./session-client.js');
  const term = tty && process.stdin.isTTY ? process.stdin : undefined;
  const size = process.stdout.isTTY ? { rows: process.stdout.rows, cols: process.stdout.columns } : { rows: 24, cols: 80 };
  const exit = await withClient(async (c) => {
    const host = await hostOfRunningJail(c, jail);
    return runSession(
      c,
      host,
      { ...open, tty: tty ? { ...size, term: process.env.TERM && /^[A-Za-z0-9._+-]{1,64}$/.test(process.env.TERM) ? process.env.TERM : 'xterm' } : null },
      { stdin: stdin ? (process.stdin as AsyncIterable<Buffer>) : undefined, terminal: term, forwardSignals: !tty },
    );
  });
  if (stdin) process.stdin.destroy();
  if (exit.reason) process.stderr.write(`jailfleet: ${exit.reason}\n`);
  return exit.exitCode;
}

program
  .command('cp')
  .description('copy files or directories into or out of a running jail: jailfleet cp SRC NAME:/path, or cp NAME:/path DST (modes kept)')
  .argument('<src>', 'a local path, or NAME:/path in a jail')
  .argument('<dst>', 'a local path, or NAME:/path in a jail')
  .option('--max-mb <n>', 'refuse a copy larger than this many MB', '1024')
  .action(async (src: string, dst: string, o) => {
    const maxBytes = flag('max-mb', z.coerce.number().int().min(1).max(COPY_MAX_BYTES / 1024 / 1024), o.maxMb) * 1024 * 1024;
    const from = cpOperand('SRC', src);
    const to = cpOperand('DST', dst);
    if ((from.jail === undefined) === (to.jail === undefined)) throw new CliError('cp: exactly one of SRC and DST must be NAME:/path in a jail', 2);
    const { runSession, hostOfRunningJail } = await import('./session-client.js');
    const { packLocal, unpackLocal, CopyRefused } = await import('./cp-stream.js');
    await withClient(async (c) => {
      const jailSide = (from.jail ? from : to) as { jail: string; path: string };
      const host = await hostOfRunningJail(c, jailSide.jail);
      let errText = '';
      const stderr = { write: (b: Uint8Array, cb?: () => void) => ((errText += Buffer.from(b).toString()), cb?.(), true) } as unknown as NodeJS.WritableStream;
      const failed = (exit: { exitCode: number; reason?: string }) =>
        new CliError(`cp ${src} ${dst}: ${errText.trim().split('\n').at(-1)?.replace(/^jailfs: /, '') || exit.reason || `exit code ${exit.exitCode}`}`);
      try {
        if (to.jail) {
          const exit = await runSession(c, host, { kind: 'copy-in', jail: to.jail, path: to.path, maxBytes }, { stdin: packLocal(from.path, maxBytes), stderr });
          if (exit.exitCode !== 0) throw failed(exit);
        } else {
          const { PassThrough } = await import('node:stream');
          const pipe = new PassThrough({ highWaterMark: 1024 * 1024 });
          const writing = unpackLocal(pipe as AsyncIterable<Buffer>, to.path, maxBytes);
          writing.catch(() => pipe.resume());
          const exit = await runSession(c, host, { kind: 'copy-out', jail: from.jail!, path: from.path, maxBytes }, { stdout: pipe, stderr });
          pipe.end();
          if (exit.exitCode !== 0) throw failed(exit);
          await writing;
        }
      } catch (err) {
        if (err instanceof CopyRefused) throw new CliError(`cp ${src} ${dst}: ${err.message}`);
        if (errCodeOf(err) === 'ENOENT' || errCodeOf(err) === 'EACCES' || errCodeOf(err) === 'ENOTDIR') throw new CliError(`cp ${src} ${dst}: ${(err as Error).message}`);
        throw err;
      }
    });
  });

const errCodeOf = (err: unknown) => (err as NodeJS.ErrnoException | undefined)?.code;

/** `NAME:/path` (a path in a jail) or a local path (one starting with / or ., or without a colon). */
function cpOperand(what: 'SRC' | 'DST', arg: string): { jail?: string; path: string } {
  const m = /^([^/.:][^/:]*):(.*)$/.exec(arg);
  if (!m) return { path: arg };
  const jail = jailName(m[1]!);
  const path = jailPathSchema.safeParse(m[2]);
  if (!path.success) throw new CliError(`${what}: ${arg}: ${path.error.issues[0]!.message}`, 2);
  return { jail, path: path.data };
}

program
  .command('logs')
  .description("a jail's console: its command's stdout and stderr; with -f, followed as it grows (and across restarts)")
  .argument('<name>', 'jail name')
  .option('-n, --lines <n>', `how many lines from the end (default ${DEFAULT_LOG_LINES}, or all with --since)`)
  .option('--tail <n>', 'the same as --lines')
  .option('--since <when>', 'only lines written since then: a duration back from now (10m, 1h30m, 2d) or a time (2026-12-02T08:00:00Z); to within a second')
  .option('-f, --follow', 'keep printing what the jail writes, until interrupted')
  .action(async (name: string, o) => {
    const jail = jailName(name);
    const given = o.tail ?? o.lines;
    const lines: number | undefined = given !== undefined ? flag(o.tail !== undefined ? 'tail' : 'lines', linesSchema, given) : undefined;
    const since: number | undefined = o.since !== undefined ? flag('since', sinceSchema, o.since) : undefined;
    await withClient(async (c) => {
      const row = (await c.ps()).jails.find((j) => j.name === jail);
      if (!row) throw new CliError(`no jail named "${jail}"`);
      if (!row.host) throw new CliError(`jail "${jail}" is not placed on any host yet`);
      if (!o.follow && since === undefined) {
        const r = await c.logs(row.host, jail, lines ?? DEFAULT_LOG_LINES);
        process.stdout.write(r.text);
        return;
      }
      const { runSession } = await import('./session-client.js');
      const ac = new AbortController();
      // ^C ends the following, not the process: the session says goodbye to the agent first
      process.once('SIGINT', () => ac.abort());
      if (!o.follow) {
        const exit = await runSession(c, row.host, { kind: 'logs', jail, tail: lines, since, follow: false });
        if (exit.reason) throw new CliError(exit.reason);
        return;
      }
      // -f follows the jail, not the host: when it leaves one (moved, failed over), on to the next
      let host = row.host;
      let open: SessionOpen = { kind: 'logs', jail, tail: lines, since, follow: true };
      while (!ac.signal.aborted) {
        let lostAt: number | null = null;
        try {
          const exit = await runSession(c, host, open, { signal: ac.signal });
          if (exit.reason) throw new CliError(exit.reason);
          if (!exit.left) return;
        } catch (err) {
          if (!(err instanceof CliError) || ac.signal.aborted) throw err;
          process.stderr.write(`jailfleet: ${err.message}; waiting for ${jail} to run again\n`);
          lostAt = Date.now();
        }
        const next = await whereJailGoes(c, jail, lostAt === null ? host : null, ac.signal);
        if (next === null) {
          if (!ac.signal.aborted) process.stderr.write(`jailfleet: ${jail} was removed\n`);
          return;
        }
        if (next !== host) process.stderr.write(`jailfleet: ${jail} moved from ${host} to ${next}; following it there\n`);
        // a new host's console is the new copy's own: all of it; the same host's from the loss on
        open = { kind: 'logs', jail, since: next !== host ? 0 : Math.max(0, (lostAt ?? Date.now()) - 1000), follow: true };
        host = next;
      }
    });
  });

/**
 * Where a followed jail runs next: its host once it is placed on one other than `leaving` (any
 * host when null), polled from status; null when it was removed or the user interrupted.
 */
async function whereJailGoes(c: Client, jail: string, leaving: string | null, signal: AbortSignal): Promise<string | null> {
  while (!signal.aborted) {
    const row = await c.ps().then(
      (r) => r.jails.find((j) => j.name === jail) ?? null,
      () => undefined, // status not answering for now: ask again
    );
    if (row === null) return null;
    if (row?.host && row.host !== leaving && row.state === 'running') return row.host;
    await new Promise((r) => setTimeout(r, 500));
  }
  return null;
}

program
  .command('events')
  .description('state events of every jail (or one), oldest first')
  .option('-f, --follow', 'keep printing new events')
  .option('--jail <name>', 'only the events of this jail')
  .option('--json', 'one JSON object per line')
  .action(async (o) => {
    const { jetstream, jetstreamManager, DeliverPolicy } = await import('@nats-io/jetstream');
    await withClient(async (c) => {
      const jsm = await jetstreamManager(c.nc);
      const jail = o.jail === undefined ? undefined : jailName(o.jail);
      const last = (await jsm.streams.info(EVT_STREAM).catch(() => null))?.state.last_seq ?? 0;
      if (last === 0 && !o.follow) return;
      const consumer = await jetstream(c.nc).consumers.get(EVT_STREAM, {
        deliver_policy: DeliverPolicy.All,
        // one subject as a string: nats-server 2.9 knows no list of filters
        ...(jail ? { filter_subjects: subjects.evtOfJail(jail) } : {}),
      });
      // with a filter the stream's last message may not be ours: stop when nothing is pending
      if (!o.follow && (await consumer.info()).num_pending === 0) return;
      const msgs = await consumer.consume({ max_messages: 1000 });
      process.once('SIGINT', () => void msgs.close());
      for await (const m of msgs) {
        try {
          const e = decodeWith(stateEventSchema, m.data);
          if (o.json) console.log(JSON.stringify(e));
          else
            console.log(
              `${e.at}  ${e.host}  ${e.jail}  gen=${e.generation}  ${e.state}` +
                (e.pid ? `  pid=${e.pid}` : '') +
                (e.exitCode !== null ? `  exit=${e.exitCode}` : '') +
                (e.error ? `  ${e.error.step}: ${e.error.message}` : '') +
                (e.health ? `  health=${e.health}${e.healthReason ? ` (${e.healthReason})` : ''}` : ''),
            );
        } catch {
          /* a malformed event is skipped here; the status service logs it */
        }
        if (!o.follow && (m.seq >= last || m.info.pending === 0)) break;
      }
      await msgs.close();
    });
  });

program
  .command('up')
  .description('start a local cluster: nats-server, scheduler, status and N agents')
  .option('--hosts <n>', 'number of agents (host-1 … host-N)', '2')
  .option('--data-dir <dir>', 'where jails, logs and the broker store live', '/var/lib/jailfleet')
  .option('--nats-port <port>', 'nats-server port (the first of three with --nats-cluster 3)', String(DEFAULT_NATS_PORT))
  .option('--nats-cluster <n>', 'nats-servers: 1, or 3 for a cluster with replicated streams (R3)', '1')
  .option('--schedulers <n>', 'scheduler processes: one leads, the others stand by', '1')
  .option('--agent-cpu <cores>', "cores each agent offers to jails (default: the machine's)")
  .option('--agent-memory-mb <mb>', "memory each agent offers to jails, in MB (default: the machine's)")
  .option('--allow-mount-source <PREFIX>', 'a host directory jails\' spec mounts may come from, given to every agent (repeatable; none by default: spec mounts are refused)', collect, [])
  .option('--restart-agent <host>', 'bring back a dead agent of the up running on --data-dir, with its first flags')
  .option('--http-addr <host:port>', 'where the dashboard is served (default 127.0.0.1:4280, or a free port if that one is taken)')
  .option('--no-http', 'no dashboard')
  .action(async (o) => {
    const { up, restartAgent } = await import('./up.js');
    if (o.restartAgent !== undefined) {
      process.exitCode = await restartAgent({ dataDir: o.dataDir, host: jailName(o.restartAgent) });
      return;
    }
    process.exitCode = await up({
      hosts: flag('hosts', hostsCountSchema, o.hosts),
      agentCpu: o.agentCpu === undefined ? undefined : flag('agent-cpu', cpuCoresSchema, o.agentCpu),
      agentMemoryMB: o.agentMemoryMb === undefined ? undefined : flag('agent-memory-mb', memoryMBSchema, o.agentMemoryMb),
      allowMountSources: parseMountSourceFlags(o.allowMountSource as string[]),
      dataDir: o.dataDir,
      natsPort: flag('nats-port', portSchema, o.natsPort),
      natsCluster: flag('nats-cluster', natsClusterSchema, o.natsCluster),
      schedulers: flag('schedulers', schedulersSchema, o.schedulers),
      http: o.http === false ? null : o.httpAddr === undefined ? undefined : flag('http-addr', httpAddrSchema, o.httpAddr),
    });
  });

/** --exit-with-parent: a pid, or undefined when not given. */
const parentPid = (v: string | undefined) => (v === undefined ? undefined : flag('exit-with-parent', z.coerce.number().int().min(1), v));

/** --metrics-addr: HOST:PORT, or undefined when not given. */
const metricsAddr = (v: string | undefined) => (v === undefined ? undefined : metricsAddrFlag(v));

registerImageCommands(program, withClient);

const serve = program.command('serve').description('run one service in the foreground');
serve
  .command('agent')
  .description('the per-host agent')
  .requiredOption('--host <name>', 'this host\'s name')
  .requiredOption('--data-dir <dir>', 'jail roots and agent state')
  .option('--heartbeat-ms <ms>', 'heartbeat interval', String(DEFAULT_HEARTBEAT_MS))
  .option('--teardown-on-exit', 'destroy every jail when stopped (jailfleet up)')
  .option('--backoff-base-ms <ms>', 'first restart delay')
  .option('--cpu <cores>', "cores this host offers to jails (default: the machine's)")
  .option('--memory-mb <mb>', "memory this host offers to jails, in MB (default: the machine's, less 5 %)")
  .option('--label <KEY=VALUE>', 'a label of this host, for placement (repeatable)', collect, [])
  .option('--volume <NAME=/path[:ro]>', 'a host directory jails may use by name (spec volumes); jails asking for it are placed only on hosts offering it (repeatable)', collect, [])
  .option('--allow-mount-source <PREFIX>', 'a host directory spec mounts may come from (repeatable; none by default: spec mounts are refused)', collect, [])
  .option('--parallel-steps <n>', 'driver steps (prepare, mount, start, ...) run at once (default: 4 per core, at most 64)')
  .option('--exit-with-parent <pid>', 'stop as on SIGTERM once process PID is gone (set by jailfleet up)')
  .option('--image-cache-mb <mb>', 'unpacked images kept on this host before the least recently used unused ones are removed', String(DEFAULT_IMAGE_CACHE_MB))
  .option('--max-image-mb <mb>', 'the largest image (unpacked) this agent takes', String(DEFAULT_MAX_IMAGE_MB))
  .option('--metrics-addr <host:port>', 'serve Prometheus metrics on http://HOST:PORT/metrics')
  .option('--jail-cidr <cidr>', 'the jail network (as the scheduler\'s): vnet jails\' addresses, the gateway on the jail bridge', DEFAULT_JAIL_CIDR)
  .option('--jail-bridge <name>', 'the host\'s bridge for vnet jails', 'jailfleet0')
  .option('--zfs-dataset <dataset>', 'freebsd: jail roots are zfs clones below this dataset (an image jail: a clone of its image\'s snapshot)')
  .action(async (o) => {
    const { serveAgent } = await import('./serve.js');
    await serveAgent({
      jailNetwork: (await import('./jail-network-flag.js')).jailNetworkFlag(o.jailCidr),
      jailBridge: flag('jail-bridge', bridgeNameSchema, o.jailBridge),
      cpu: o.cpu === undefined ? undefined : flag('cpu', cpuCoresSchema, o.cpu),
      memoryMB: o.memoryMb === undefined ? undefined : flag('memory-mb', memoryMBSchema, o.memoryMb),
      labels: parseLabelFlags(o.label as string[]),
      volumes: parseVolumeFlags(o.volume as string[]),
      allowMountSources: parseMountSourceFlags(o.allowMountSource as string[]),
      host: jailName(o.host),
      dataDir: o.dataDir,
      servers: servers(),
      heartbeatMs: flag('heartbeat-ms', msSchema, o.heartbeatMs),
      teardownOnExit: Boolean(o.teardownOnExit),
      backoffBaseMs: o.backoffBaseMs ? flag('backoff-base-ms', msSchema, o.backoffBaseMs) : undefined,
      parallelSteps: o.parallelSteps === undefined ? undefined : flag('parallel-steps', parallelStepsSchema, o.parallelSteps),
      exitWithParent: parentPid(o.exitWithParent),
      imageCacheMB: flag('image-cache-mb', maxImageMBSchema, o.imageCacheMb),
      maxImageMB: flag('max-image-mb', maxImageMBSchema, o.maxImageMb),
      metricsAddr: metricsAddr(o.metricsAddr),
      zfsDataset: o.zfsDataset === undefined ? undefined : flag('zfs-dataset', zfsDatasetSchema, o.zfsDataset),
    });
  });
serve
  .command('scheduler')
  .description('the scheduler (API and reconciler)')
  .option('--host-ttl-ms <ms>', 'a host is down after this long without a heartbeat', String(DEFAULT_HOST_TTL_MS))
  .option('--lease-ms <ms>', 'leader lease: a standby takes over within this long (fixed when the bucket is first made)', String(DEFAULT_LEASE_MS))
  .option('--strategy <strategy>', 'how new jails are packed: binpack (fewest hosts) or spread (least loaded)', 'binpack')
  .option('--jail-cidr <cidr>', 'the jail network: vnet jails get their addresses from it (the same on every scheduler and agent)', DEFAULT_JAIL_CIDR)
  .option('--exit-with-parent <pid>', 'stop as on SIGTERM once process PID is gone (set by jailfleet up)')
  .option('--metrics-addr <host:port>', 'serve Prometheus metrics on http://HOST:PORT/metrics')
  .action(async (o) => {
    const { serveScheduler } = await import('./serve.js');
    await serveScheduler({
      jailNetwork: (await import('./jail-network-flag.js')).jailNetworkFlag(o.jailCidr),
      servers: servers(),
      hostTtlMs: flag('host-ttl-ms', msSchema, o.hostTtlMs),
      leaseMs: flag('lease-ms', msSchema, o.leaseMs),
      strategy: flag('strategy', strategySchema, o.strategy),
      exitWithParent: parentPid(o.exitWithParent),
      metricsAddr: metricsAddr(o.metricsAddr),
    });
  });
serve
  .command('status')
  .description('the status service (cluster view)')
  .option('--host-ttl-ms <ms>', 'a host is down after this long without a heartbeat', String(DEFAULT_HOST_TTL_MS))
  .option('--exit-with-parent <pid>', 'stop as on SIGTERM once process PID is gone (set by jailfleet up)')
  .option('--metrics-addr <host:port>', 'serve Prometheus metrics on http://HOST:PORT/metrics')
  .option('--http-addr <host:port>', 'serve the dashboard (a read-only web page of the cluster) on this address')
  .option('--http-token-file <file>', 'the dashboard asks every request for the token in this file (its first line)')
  .action(async (o) => {
    const { serveStatus } = await import('./serve.js');
    await serveStatus({
      servers: servers(),
      hostTtlMs: flag('host-ttl-ms', msSchema, o.hostTtlMs),
      exitWithParent: parentPid(o.exitWithParent),
      metricsAddr: metricsAddr(o.metricsAddr),
      http: o.httpAddr === undefined ? undefined : flag('http-addr', httpAddrSchema, o.httpAddr),
      httpTokenFile: o.httpTokenFile,
    });
  });

for (const c of program.commands) c.exitOverride().configureOutput({ outputError: (str, write) => write(`jailfleet: ${str.replace(/^error: /, '')}`) });
for (const c of serve.commands) c.exitOverride().configureOutput({ outputError: (str, write) => write(`jailfleet: ${str.replace(/^error: /, '')}`) });

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    process.exitCode = err.exitCode === 0 ? 0 : 2;
  } else {
    // one line, always: a message may quote input that has line breaks in it
    const message = ((err as Error).message ?? String(err)).replace(/\s*\n\s*/g, ' ').trim();
    process.stderr.write(`jailfleet: ${message}\n`);
    process.exitCode = err instanceof CliError ? err.exitCode : 1;
  }
}
