// Every default that more than one place relies on: the services' option defaults and the CLI's
// flag defaults read them from here, so a flag's help text and the service it starts can never
// disagree. Plain values only: nothing here reads the environment or does I/O.

/** Where clients look for NATS when neither --nats nor JAILFLEET_NATS_URL says. */
export const DEFAULT_NATS_PORT = 4222;
/** Where `jailfleet up` serves the dashboard unless told otherwise (another port if it is taken). */
export const DEFAULT_DASHBOARD_ADDR = { host: '127.0.0.1', port: 4280 };
export const DEFAULT_NATS_URL = `nats://127.0.0.1:${DEFAULT_NATS_PORT}`;

/** How often an agent heartbeats. */
export const DEFAULT_HEARTBEAT_MS = 1000;
/** A host is down once silent this long (three missed heartbeats). */
export const DEFAULT_HOST_TTL_MS = 3000;
/** The leading scheduler's lease: a standby takes over within this long. */
export const DEFAULT_LEASE_MS = 3000;
/** The scheduler's full reconcile pass (new hosts, unplaced jails). */
export const DEFAULT_RESYNC_MS = 2000;
/** How long a drain waits for a jail's new copy to run before it gives up on that move. */
export const DEFAULT_MOVE_TIMEOUT_MS = 120_000;
/** Driver steps (prepare, mount, start, ...) an agent runs at once: this many per core, within the bounds below. */
export const DEFAULT_PARALLEL_STEPS_PER_CORE = 4;
export const MIN_DEFAULT_PARALLEL_STEPS = 4;
export const MAX_DEFAULT_PARALLEL_STEPS = 64;

/** How long the CLI waits for one answer from a service. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;

/** The largest image (unpacked) `image import` takes and an agent unpacks, in MB. */
export const DEFAULT_MAX_IMAGE_MB = 4096;
/** How much unpacked images an agent keeps cached before it collects the least recently used unused ones, in MB. */
export const DEFAULT_IMAGE_CACHE_MB = 8192;

/** The jail network vnet jails get their addresses from when --jail-cidr does not say. */
export const DEFAULT_JAIL_CIDR = '10.88.0.0/16';

/** The console lines `logs` shows when neither --lines nor --since says. */
export const DEFAULT_LOG_LINES = 100;
