// The scheduler's public face.
export { Scheduler, type SchedulerOptions } from './scheduler.js';
export { ClusterPacking, type PackHost, type PackJail, type PackStrategy, type PlacedJail, type PlaceResult } from './packing.js';
export { plan, lowerBoundOf, martelloTothL2, type PlanOptions, type PlanResult } from './plan.js';
