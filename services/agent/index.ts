// The agent's public face: the Agent and the drivers it can run.
export { Agent, machineCapacity, type AgentOptions } from './agent.js';
export type { JailDriver, JailInspection } from './drivers/driver.js';
export { DriverStepFailed } from './drivers/driver.js';
