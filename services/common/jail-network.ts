// The cluster's jail network (`--jail-cidr`): which addresses the scheduler may give vnet jails,
// and the gateway every host's jail bridge carries. Pure arithmetic on IPv4; parsing by
// ipaddr.js. It never touches an interface and never picks an address by itself (the
// scheduler's compare-and-set in KV does, so two jails never hold one).
import ipaddr from 'ipaddr.js';

import { DEFAULT_JAIL_CIDR } from './defaults.js';

export { DEFAULT_JAIL_CIDR };

/** A `--jail-cidr` the scheduler or an agent cannot use; the message names the rule. */
export class InvalidJailNetwork extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'InvalidJailNetwork';
  }
}

const toInt = (a: string) => ipaddr.IPv4.parse(a).toByteArray().reduce((n, b) => n * 256 + b, 0);
const toDotted = (n: number) => [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');

export class JailNetwork {
  /** The network address as a number, and how many addresses the block holds. */
  private readonly base: number;
  private readonly size: number;

  private constructor(
    readonly cidr: string,
    readonly prefix: number,
  ) {
    this.size = 2 ** (32 - prefix);
    this.base = toInt(cidr.split('/')[0]!);
  }

  /** Parses `A.B.C.D/N` (IPv4, N from 8 to 29, the network address itself). */
  static parse(cidr: string): JailNetwork {
    let parsed: [ipaddr.IPv4 | ipaddr.IPv6, number];
    try {
      parsed = ipaddr.parseCIDR(cidr);
    } catch (err) {
      throw new InvalidJailNetwork(`jail network "${cidr}" is not a CIDR block (expected A.B.C.D/N, e.g. ${DEFAULT_JAIL_CIDR})`, { cause: err });
    }
    const [addr, prefix] = parsed;
    if (addr.kind() !== 'ipv4' || !ipaddr.IPv4.isValidFourPartDecimal(cidr.split('/')[0]!)) throw new InvalidJailNetwork(`jail network "${cidr}" must be an IPv4 block in dotted form (A.B.C.D/N)`);
    if (prefix < 8 || prefix > 29) throw new InvalidJailNetwork(`jail network "${cidr}": the prefix must be from /8 to /29 (a /30 or smaller leaves no address for a jail)`);
    const network = ipaddr.IPv4.networkAddressFromCIDR(cidr).toString();
    if (network !== addr.toString()) throw new InvalidJailNetwork(`jail network "${cidr}" has host bits set: write ${network}/${prefix}`);
    return new JailNetwork(`${network}/${prefix}`, prefix);
  }

  /** The first usable address: every host's jail bridge carries it, jails route through it. */
  get gateway(): string {
    return toDotted(this.base + 1);
  }

  /** How many addresses jails may hold (less network, gateway and broadcast). */
  get capacity(): number {
    return this.size - 3;
  }

  /** Why `address` cannot be a jail's address here, or null when it can. */
  refuse(address: string): string | null {
    if (!ipaddr.IPv4.isValidFourPartDecimal(address)) return `"${address}" is not an IPv4 address`;
    const n = toInt(address);
    if (n < this.base || n >= this.base + this.size) return `${address} is outside the jail network ${this.cidr}`;
    if (n === this.base) return `${address} is the network address of ${this.cidr}`;
    if (n === this.base + 1) return `${address} is the jail network's gateway (every host's bridge carries it)`;
    if (n === this.base + this.size - 1) return `${address} is the broadcast address of ${this.cidr}`;
    return null;
  }

  /**
   * Addresses jails may hold, in order from the one after `after` (or the first), wrapping once:
   * starting after the last one given spreads new jails over the pool instead of re-taking a
   * just-released address at once.
   */
  *candidates(after?: string): Generator<string> {
    const first = this.base + 2;
    const count = this.capacity;
    let start = 0;
    if (after && this.refuse(after) === null) start = toInt(after) - first + 1;
    for (let i = 0; i < count; i++) yield toDotted(first + ((start + i) % count));
  }
}
