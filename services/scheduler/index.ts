// The scheduler's public face.
export { Scheduler, type SchedulerOptions } from './scheduler.js';
export { ClusterPacking, type PackHost, type PackJail, type PackStrategy, type PlacedJail, type PlaceResult } from './packing.js';
export { plan, planBatch, lowerBoundOf, martelloTothL2, type BatchPlan, type PlanOptions, type PlanResult } from './plan.js';
export { CONSTRAINTS, explain, feasible, refusalOf, type Constraint, type Demand, type HostView, type Refusal } from './constraints.js';
export { LivePacking } from './live-packing.js';
