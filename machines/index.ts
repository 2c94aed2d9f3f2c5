// The public face of machines/: the jail lifecycle machine and what the agent needs to drive,
// persist and restore it. Everything else in this folder is internal.
export {
  jailLifecycleMachine,
  persistedJailOf,
  restartDelayMs,
  stableStateOf,
  type DesiredState,
  type JailLifecycleContext,
  type JailLifecycleEvent,
  type JailLifecycleInput,
  type JailLifecycleSnapshot,
  type PersistedJail,
} from './jail-lifecycle.js';
