// Starts a local nats-server with JetStream (for `jailfleet up` and the tests): its own store
// directory, loopback only, a free port unless one is given. Stops it on request.
import { createServer, connect as tcpConnect } from 'node:net';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';

export interface NatsServerHandle {
  url: string;
  port: number;
  storeDir: string;
  process: ResultPromise;
  stop(): Promise<void>;
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

async function portAccepts(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const s = tcpConnect({ port, host });
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });
}

export class NatsServerFailed extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'NatsServerFailed';
  }
}

export interface NatsServerOptions {
  dir: string;
  port?: number;
  /** The address clients connect to (default 127.0.0.1; a test's veth address for a partition). */
  host?: string;
  binary?: string;
  /** In its own process group, so a terminal's Ctrl-C does not stop it before its clients. */
  detached?: boolean;
  /** A member of a cluster: its route port and the route ports of every member (itself included). */
  cluster?: { name: string; routePort: number; routePorts: number[] };
  /** A name unique in the cluster (default `jailfleet-<port>`). */
  serverName?: string;
  /** The largest message the broker takes, in nats-server's syntax (default 8MB; nats-server's own default is 1MB). */
  maxPayload?: string;
}

/** Starts nats-server -js with its store under `dir`; resolves once it accepts connections. */
export async function startNatsServer(opts: NatsServerOptions): Promise<NatsServerHandle> {
  const port = opts.port ?? (await freePort());
  const host = opts.host ?? '127.0.0.1';
  const storeDir = join(opts.dir, 'jetstream');
  mkdirSync(storeDir, { recursive: true });
  const conf = join(opts.dir, 'nats-server.conf');
  writeFileSync(
    conf,
    [
      `listen: "${host}:${port}"`,
      `server_name: "${opts.serverName ?? `jailfleet-${port}`}"`,
      `max_payload: ${opts.maxPayload ?? '8MB'}`,
      `jetstream { store_dir: ${JSON.stringify(storeDir)} }`,
      ...(opts.cluster
        ? [
            'cluster {',
            `  name: "${opts.cluster.name}"`,
            `  listen: "127.0.0.1:${opts.cluster.routePort}"`,
            `  routes: [${opts.cluster.routePorts.map((p) => `"nats-route://127.0.0.1:${p}"`).join(', ')}]`,
            '}',
          ]
        : []),
      '',
    ].join('\n'),
  );
  if (await portAccepts(port, host)) throw new NatsServerFailed(`port ${port} is already in use; pick another with --nats-port`);
  const child = execa(opts.binary ?? 'nats-server', ['-c', conf], {
    stdio: ['ignore', 'ignore', 'pipe'],
    // execa would SIGKILL 5 s after a SIGTERM: an agent removing many jails needs longer, and
    // whoever stops it sets its own deadline
    forceKillAfterDelay: false,
    reject: false,
    cleanup: true,
    detached: opts.detached ?? false,
  });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  let exited = false;
  void child.then(() => (exited = true));
  const deadline = Date.now() + 15_000;
  while (!(await portAccepts(port, host))) {
    if (exited || child.exitCode !== null) {
      const r = await child;
      const why = (r as { code?: string }).code === 'ENOENT' ? 'nats-server is not installed (apt-get install -y nats-server)' : stderr.trim().split('\n').pop();
      throw new NatsServerFailed(`nats-server did not start: ${why}`);
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new NatsServerFailed(`nats-server did not accept connections on port ${port} within 15 s`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url: `nats://${host}:${port}`,
    port,
    storeDir,
    process: child,
    async stop() {
      if (child.exitCode !== null || exited) return;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await child;
      clearTimeout(t);
    },
  };
}

export interface NatsClusterHandle {
  servers: NatsServerHandle[];
  /** Every member's client URL: what clients take as their server list. */
  urls: string[];
  stop(): Promise<void>;
}

/** Starts `size` clustered nats-servers with JetStream under `dir`/n1, n2, ... on free ports. */
export async function startNatsCluster(opts: { dir: string; size: number; ports?: number[]; detached?: boolean; binary?: string }): Promise<NatsClusterHandle> {
  const ports: number[] = [...(opts.ports ?? [])];
  const routePorts: number[] = [];
  while (routePorts.length < opts.size) {
    const r = await freePort();
    if (ports.includes(r) || routePorts.includes(r)) continue;
    routePorts.push(r);
    if (ports.length < routePorts.length) {
      const p = await freePort();
      if (ports.includes(p) || routePorts.includes(p)) {
        routePorts.pop();
        continue;
      }
      ports.push(p);
    }
  }
  const started = await Promise.allSettled(
    ports.map((port, i) =>
      startNatsServer({
        dir: join(opts.dir, `n${i + 1}`),
        port,
        serverName: `jailfleet-n${i + 1}`,
        detached: opts.detached,
        binary: opts.binary,
        cluster: { name: 'jailfleet', routePort: routePorts[i]!, routePorts },
      }),
    ),
  );
  const servers = started.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    await Promise.all(servers.map((s) => s.stop()));
    throw failed.reason;
  }
  return {
    servers,
    urls: servers.map((s) => s.url),
    async stop() {
      await Promise.all(servers.map((s) => s.stop()));
    },
  };
}
