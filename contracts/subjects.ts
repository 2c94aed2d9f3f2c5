// Every NATS subject, stream and bucket name of jailfleet. Nothing else in the tree spells one.
// The host is always the third token, so a host's credentials can be confined to its own subjects.

/** JetStream stream that carries lifecycle commands, one durable consumer per host. */
export const CMD_STREAM = 'JAILFLEET_CMD';
/** JetStream stream that carries state events of every jail. */
export const EVT_STREAM = 'JAILFLEET_EVT';

export const BUCKET_DESIRED = 'jailfleet_desired';
export const BUCKET_PLACEMENT = 'jailfleet_placement';
export const BUCKET_LEADER = 'jailfleet_leader';
/** Host name → what operators asked of the host (drain); see contracts/state.ts hostRecordSchema. */
export const BUCKET_HOSTS = 'jailfleet_hosts';
/** A vnet jail's address → the jail holding it (contracts/state.ts addressRecordSchema). */
export const BUCKET_ADDRESSES = 'jailfleet_addresses';
/** `NAME/TAG` → the image record it points at (contracts/image.ts imageRecordSchema). */
export const BUCKET_IMAGE_TAGS = 'jailfleet_image_tags';
/** Object store: `sha256:<hex>` → the image's canonical tar. */
export const BUCKET_IMAGES = 'jailfleet_images';

/** Queue group shared by every scheduler (API) and every status service (queries). */
export const SCHEDULER_QUEUE = 'jailfleet-scheduler';
export const STATUS_QUEUE = 'jailfleet-status';

export const API_VERBS = ['apply', 'stop', 'start', 'rm', 'drain', 'undrain', 'plan', 'image-rm'] as const;
export type ApiVerb = (typeof API_VERBS)[number];
export const STATUS_QUERIES = ['ps', 'hosts'] as const;
export type StatusQuery = (typeof STATUS_QUERIES)[number];

export const subjects = {
  cmdAll: 'jailfleet.cmd.>',
  evtAll: 'jailfleet.evt.>',
  hbAll: 'jailfleet.hb.*',
  cmd: (host: string) => `jailfleet.cmd.${host}`,
  evt: (host: string, jail: string) => `jailfleet.evt.${host}.${jail}`,
  /** Events of one jail on whichever host runs it. */
  evtOfJail: (jail: string) => `jailfleet.evt.*.${jail}`,
  hb: (host: string) => `jailfleet.hb.${host}`,
  api: (verb: ApiVerb) => `jailfleet.api.${verb}`,
  status: (query: StatusQuery) => `jailfleet.status.${query}`,
  exec: (host: string) => `jailfleet.agent.${host}.exec`,
  logs: (host: string) => `jailfleet.agent.${host}.logs`,
  /** Opens a session (exec, console, cp) with the agent of `host` (contracts/session.ts). */
  session: (host: string) => `jailfleet.agent.${host}.session`,
  /** Frames of one session: CLI → agent (`in`) and agent → CLI (`out`). */
  sessionIn: (host: string, id: string) => `jailfleet.agent.${host}.session.${id}.in`,
  sessionOut: (host: string, id: string) => `jailfleet.agent.${host}.session.${id}.out`,
} as const;

/** Durable consumer name of a host's agent on the command stream. */
export const agentConsumerName = (host: string) => `agent-${host}`;
