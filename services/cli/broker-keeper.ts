// The broker's keeper for `jailfleet up`: a tiny process that stops up's nats-server(s) when `up`
// was killed without a word (SIGKILL), after the services it started have stopped on their own
// (they watch `up` with --exit-with-parent; agents remove their jails, which wants the broker).
// usage: node broker-keeper.js <up-pid> <children-file> <broker-pid>...
// It must never signal anything but the broker pids it was given, and never while `up` lives:
// a living `up` stops its broker itself, in order, and then ends this keeper.
import { readFileSync } from 'node:fs';

const POLL_MS = 500;
/** How long the services may take to stop once `up` is gone (agents tearing down many jails). */
const SERVICES_GRACE_MS = 20 * 60_000;
const BROKER_GRACE_MS = 5000;

const [upPid, childrenFile, ...brokerPids] = process.argv.slice(2).map((a, i) => (i === 1 ? a : Number(a))) as [number, string, ...number[]];

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The pids `up` recorded for its services; none when the file is gone or unreadable. */
function servicePids(): number[] {
  try {
    return Object.values(JSON.parse(readFileSync(childrenFile, 'utf8')) as Record<string, number>).filter((p) => Number.isInteger(p));
  } catch {
    return [];
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
// `up` is our parent: a changed ppid says it is gone even if its pid were reused at once
const parent = process.ppid;
const upGone = () => process.ppid !== parent || !alive(upPid);

process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => undefined);
process.on('SIGHUP', () => undefined);

while (!upGone()) await sleep(POLL_MS);
for (const until = Date.now() + SERVICES_GRACE_MS; Date.now() < until && servicePids().some(alive); ) await sleep(POLL_MS);
for (const pid of brokerPids) if (alive(pid)) process.kill(pid, 'SIGTERM');
for (const until = Date.now() + BROKER_GRACE_MS; Date.now() < until && brokerPids.some(alive); ) await sleep(100);
for (const pid of brokerPids) if (alive(pid)) process.kill(pid, 'SIGKILL');
process.exit(0);
