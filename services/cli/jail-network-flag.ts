// `--jail-cidr` of `serve agent` and `serve scheduler`, apart from flags.ts so that only those
// two commands load ipaddr.js (with it in flags.ts every CLI command paid for it at start).
import { InvalidJailNetwork, JailNetwork } from '../common/jail-network.js';
import { CliError } from './client.js';

/** `--jail-cidr`: the jail network, refused with the rule it breaks. */
export function jailNetworkFlag(value: string): JailNetwork {
  try {
    return JailNetwork.parse(value);
  } catch (err) {
    if (err instanceof InvalidJailNetwork) throw new CliError(`--jail-cidr: ${err.message}`, 2);
    throw err;
  }
}
