// Mechanisms every service shares: the NATS connection and topology, the logger, nats-server.
export * from './nats.js';
export * from './logger.js';
export * from './nats-server.js';
export * from './follow.js';
