// Which hosts are up: a host is up while its last heartbeat is younger than the TTL.
// Pure bookkeeping; the clock is passed in.
export class HostLiveness {
  private readonly lastSeen = new Map<string, number>();
  constructor(private readonly ttlMs: number) {}

  seen(host: string, now: number): boolean {
    const wasUp = this.isUp(host, now);
    this.lastSeen.set(host, now);
    return !wasUp;
  }

  isUp(host: string, now: number): boolean {
    const t = this.lastSeen.get(host);
    return t !== undefined && now - t <= this.ttlMs;
  }

  hosts(now: number): { name: string; up: boolean; lastSeen: number }[] {
    return [...this.lastSeen.entries()]
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([name, t]) => ({ name, up: now - t <= this.ttlMs, lastSeen: t }));
  }
}
