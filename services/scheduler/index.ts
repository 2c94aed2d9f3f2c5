// The scheduler's public face.
export { Scheduler, type SchedulerOptions } from './scheduler.js';
export { placeJail, type HostView, type Placement } from './placement.js';
export { HostLiveness } from './host-liveness.js';
