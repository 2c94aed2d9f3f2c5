// `jailfleet drain --wait`: follows a drain from the status service until the host is drained,
// showing N of M moved. It ends non-zero when every jail left on the host is one the scheduler
// says it cannot move (with its reason), when the host goes down, or when time is up.
import { CliError, type Client } from './client.js';
import { Progress } from './progress.js';

/** Polls `ps` and `hosts` until `host` is drained; returns the exit code (0) or throws a CliError. */
export async function followDrain(c: Client, host: string, jails: string[], timeoutMs: number): Promise<number> {
  const total = jails.length;
  const progress = new Progress(total, 'moved');
  const moved = new Set<string>();
  let stuckPolls = 0;
  try {
    for (const deadline = Date.now() + timeoutMs; ; ) {
      const [{ jails: rows }, { hosts }] = await Promise.all([c.ps(), c.hosts()]);
      const row = hosts.find((h) => h.host === host);
      const byName = new Map(rows.map((r) => [r.name, r]));
      for (const name of jails) {
        const r = byName.get(name);
        if (moved.has(name) || (r && (r.host === host || r.state !== 'running'))) continue;
        moved.add(name);
        progress.update(moved.size, `[${moved.size}/${total}] ${name} ${r ? `running on ${r.host}` : 'removed'}`);
      }
      if (row?.status === 'drained') {
        progress.stop();
        console.log(`${host}: drained (${moved.size} of ${total} jails moved)`);
        return 0;
      }
      if (row?.status === 'down') throw new CliError(`${host} went down while draining: its jails fail over instead (see jailfleet ps)`);
      const left = rows.filter((r) => r.host === host).map((r) => r.name);
      const blocked = new Map((row?.drain?.blocked ?? []).map((b) => [b.name, b.reason]));
      // three polls in a row, so that a reason from the scheduler's last pass is not taken for its last word
      stuckPolls = left.length > 0 && left.every((n) => blocked.has(n)) ? stuckPolls + 1 : 0;
      if (stuckPolls >= 3) {
        for (const n of left) progress.note(`${n} cannot move: ${blocked.get(n)}`);
        throw new CliError(`${left.length} of ${total} jails cannot move off ${host} (reasons above); it stays draining (jailfleet undrain ${host} to end it)`);
      }
      if (Date.now() > deadline)
        throw new CliError(`${host} not drained after ${timeoutMs / 1000} s: ${left.length} jails left (${left.slice(0, 6).join(', ')}${left.length > 6 ? ', …' : ''})`);
      await new Promise((r) => setTimeout(r, 500));
    }
  } finally {
    progress.stop();
  }
}
