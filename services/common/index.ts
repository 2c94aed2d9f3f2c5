// Mechanisms every service shares: the NATS connection and topology, the logger, nats-server,
// the defaults, heartbeats and host liveness, the RPC envelope, the keyed queue.
export * from './nats.js';
export * from './logger.js';
export * from './nats-server.js';
export * from './follow.js';
export * from './defaults.js';
export * from './heartbeat-feed.js';
export * from './rpc.js';
export * from './keyed-queue.js';
export * from './records.js';
export * from './session-channel.js';
// jail-network.js is not here: it loads ipaddr.js, which every CLI command would pay for at start
