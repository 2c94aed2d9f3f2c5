// The wire contracts of jailfleet: shapes, subjects and errors. Zod only, no I/O.
export * from './subjects.js';
export * from './jail-spec.js';
export * from './health.js';
export * from './messages.js';
export * from './api.js';
export * from './errors.js';
export * from './state.js';
export * from './plan.js';
export * from './image.js';
export * from './session.js';
