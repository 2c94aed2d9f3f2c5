// A vnet jail's link on linux: the host's jail bridge (carrying the jail network's gateway) and
// one veth pair per jail, its host end on the bridge and its other end, `eth0`, inside the jail's
// own network namespace (made by `unshare --net` at start). Made by the driver while jailinit
// waits at its start barrier; jailinit then gives eth0 the jail's address and a default route
// through the gateway (its `vnet:` argument), so the command never runs without its network. The jail end dies with the namespace; the host end goes
// with it. It must never touch an interface it did not name itself, never route or NAT anything
// to the host's uplink, and never pick an address (the scheduler pins it into the spec).
import { createHash } from 'node:crypto';
import { execa } from 'execa';
import type { JailNetwork } from '../../common/jail-network.js';
import { DriverStepFailed, type DriverStepName } from './driver.js';

export const DEFAULT_JAIL_BRIDGE = 'jailfleet0';
/** Host ends of jail links are `jf` and 10 hex digits: ours to remove, nobody else's. */
const LINK_PREFIX = 'jf';
const JAIL_IF = 'eth0';

export interface VnetOptions {
  network: JailNetwork;
  /** The host's jail bridge (default `jailfleet0`). */
  bridge?: string;
}

export class VnetLinks {
  readonly bridge: string;

  constructor(
    private readonly o: VnetOptions,
    /** Tells this agent's links from another agent's on the same machine (its data directory). */
    private readonly scope: () => Promise<string>,
    private readonly tool: (name: string) => Promise<string>,
  ) {
    this.bridge = o.bridge ?? DEFAULT_JAIL_BRIDGE;
  }

  /** The host end of a jail's link: short (IFNAMSIZ is 16), stable for the jail on this agent. */
  async hostEnd(jail: string): Promise<string> {
    return LINK_PREFIX + createHash('sha256').update(`${await this.scope()}/${jail}`).digest('hex').slice(0, 10);
  }

  private async run(step: DriverStepName, jail: string, argv: string[], okIf?: RegExp): Promise<void> {
    const r = await execa(argv[0]!, argv.slice(1), { reject: false, stdin: 'ignore' });
    if (r.exitCode === 0 || (okIf && okIf.test(r.stderr))) return;
    throw DriverStepFailed.of(step, jail, `${argv.slice(1).join(' ')}: ${r.stderr.trim() || r.shortMessage}`, { argv, stderr: r.stderr });
  }

  /** Set once the bridge was made (or found) by this process; a failure lets the next jail try again. */
  private bridgeReady: Promise<void> | null = null;

  /** The bridge, up, with the gateway address: made once per host, kept for the jails to come. */
  private ensureBridge(jail: string): Promise<void> {
    this.bridgeReady ??= (async () => {
      const ip = await this.tool('ip');
      await this.run('start', jail, [ip, 'link', 'add', this.bridge, 'type', 'bridge'], /File exists/);
      await this.run('start', jail, [ip, 'addr', 'replace', `${this.o.network.gateway}/${this.o.network.prefix}`, 'dev', this.bridge]);
      await this.run('start', jail, [ip, 'link', 'set', this.bridge, 'up']);
    })().catch((err: unknown) => {
      this.bridgeReady = null;
      throw err;
    });
    return this.bridgeReady;
  }

  /**
   * jailinit's network argument for a vnet jail, `vnet:ADDRESS/PREFIX:GATEWAY`: jailinit sets up
   * the jail's end itself (address, up, default route) once the driver made it, so a start
   * spawns one process for its network, not two.
   */
  initArg(jail: string, address: string): string {
    const why = this.o.network.refuse(address);
    if (why) throw DriverStepFailed.of('start', jail, `network.address: ${why} (this agent's --jail-cidr is ${this.o.network.cidr})`);
    return `vnet:${address}/${this.o.network.prefix}:${this.o.network.gateway}`;
  }

  /** Makes the link of the jail whose init is `pid` (waiting at its barrier, in its own network namespace): host end on the bridge, `eth0` in the jail. */
  async wire(jail: string, pid: number, address: string): Promise<void> {
    const ip = await this.tool('ip');
    await this.ensureBridge(jail);
    const host = await this.hostEnd(jail);
    // each process costs milliseconds of the start: one makes the pair already on the bridge (the
    // jail's end is set up by jailinit), and the common path runs no other
    // eth0's MAC follows from the address (02: locally administered): a jail that starts again
    // keeps it, so a neighbour entry the host still holds for the address stays right (with a
    // new MAC every start, traffic went to the dead one until that entry expired)
    const mac = `02:88:${address.split('.').map((o) => Number(o).toString(16).padStart(2, '0')).join(':')}`;
    const add = [ip, 'link', 'add', host, 'master', this.bridge, 'up', 'type', 'veth', 'peer', 'name', JAIL_IF, 'address', mac, 'netns', String(pid)];
    const made = await execa(add[0]!, add.slice(1), { reject: false, stdin: 'ignore' });
    if (made.exitCode !== 0) {
      if (!/File exists/.test(made.stderr)) throw DriverStepFailed.of('start', jail, `${add.slice(1).join(' ')}: ${made.stderr.trim() || made.shortMessage}`, { argv: add, stderr: made.stderr });
      // a link left by a copy that died with the agent down: ours by name, gone before the new one
      await this.run('start', jail, [ip, 'link', 'del', host], /Cannot find device|does not exist/);
      await this.run('start', jail, add);
    }
  }

  /** Removes the host end of the jail's link if it is still there (its namespace normally took it). */
  async unwire(jail: string): Promise<void> {
    const ip = await this.tool('ip');
    await this.run('destroy', jail, [ip, 'link', 'del', await this.hostEnd(jail)], /Cannot find device|does not exist/);
  }
}
