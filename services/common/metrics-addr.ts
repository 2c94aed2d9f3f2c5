// The value of `--metrics-addr`, parsed where it enters. Apart from metrics.ts so that the CLI,
// which checks the flag at every `serve`, never loads prom-client to do it. No I/O.

/** Where a service serves /metrics: `--metrics-addr HOST:PORT` (port 0: any free port). */
export interface MetricsAddr {
  host: string;
  port: number;
}

/** A `--metrics-addr` value that is not HOST:PORT with a port in 0–65535. */
export class BadMetricsAddr extends Error {
  constructor(readonly value: string, readonly rule: string) {
    super(`--metrics-addr: ${rule} (got ${JSON.stringify(value)})`);
    this.name = 'BadMetricsAddr';
  }
}

/** `HOST:PORT`, `[IPv6]:PORT`; the host is an address or a name, the port 0–65535. */
export function parseMetricsAddr(value: string): MetricsAddr {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(value);
  if (!m) throw new BadMetricsAddr(value, 'must be HOST:PORT, e.g. 127.0.0.1:9464 (an IPv6 address in brackets)');
  const port = Number(m[3]);
  if (port > 65535) throw new BadMetricsAddr(value, 'the port must be 0–65535');
  return { host: m[1] ?? m[2]!, port };
}

