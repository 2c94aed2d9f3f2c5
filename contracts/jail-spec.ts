// The jail spec: what a user writes in a fleet file or on the `jailfleet run` command line.
// Parsed once at the boundary (CLI, API, agent); everything inside trusts the parsed type.
import { z } from 'zod';
import { imageRefSchema } from './image.js';
import { healthCheckSchema } from './health.js';

/** Host and jail names: DNS labels, also valid as one NATS subject token. */
export const NAME_RULE = 'lowercase letters, digits and "-", 1 to 63 characters, starting and ending with a letter or digit';
export const nameSchema = z
  .string()
  .min(1, { message: `must be 1 to 63 characters (${NAME_RULE})` })
  .max(63, { message: `must be at most 63 characters (${NAME_RULE})` })
  .regex(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/, { message: `must be ${NAME_RULE}` });

const noNul = (s: string) => !s.includes('\0');

/**
 * Keys that name an object's prototype machinery: never a user's key in a record (env, labels,
 * volumes), where code that indexes the record by a user's key could reach the prototype.
 */
export const PROTOTYPE_KEYS = ['__proto__', 'constructor', 'prototype'] as const;
const refusePrototypeKeys = (what: string) => (v: unknown, ctx: z.RefinementCtx) => {
  if (v === null || typeof v !== 'object') return;
  for (const key of PROTOTYPE_KEYS)
    if (Object.prototype.hasOwnProperty.call(v, key)) ctx.addIssue({ code: 'custom', message: `"${key}" is not allowed as ${what}`, path: [key] });
};


/** An absolute path without `..` or `.` segments, NUL bytes or repeated slashes. */
export const absolutePathSchema = z
  .string()
  .min(1)
  .max(1024, { message: 'must be at most 1024 characters' })
  .refine((p) => p.startsWith('/'), { message: 'must be an absolute path (start with "/")' })
  .refine(noNul, { message: 'must not contain a NUL byte' })
  .refine((p) => !p.split('/').some((seg) => seg === '..' || seg === '.'), {
    message: 'must not contain "." or ".." segments',
  })
  .refine((p) => !p.includes('//'), { message: 'must not contain "//"' })
  .transform((p) => (p.length > 1 && p.endsWith('/') ? p.slice(0, -1) : p));

export const mountSchema = z.strictObject({
  source: absolutePathSchema.refine((p) => p !== '/', { message: 'must not be "/" (the whole host)' }),
  target: absolutePathSchema.refine((p) => p !== '/', { message: 'must not be "/" (the jail root itself)' }),
  readOnly: z.boolean().default(true),
});
export type Mount = z.infer<typeof mountSchema>;

/** A host volume: a directory an agent offers by name (`serve agent --volume NAME=/path[:ro]`). */
export const volumeNameSchema = nameSchema;
/** A jail's use of a host volume: placed only on hosts offering it (writable, unless readOnly). */
export const volumeSchema = z.strictObject({
  name: volumeNameSchema,
  target: absolutePathSchema.refine((p) => p !== '/', { message: 'must not be "/" (the jail root itself)' }),
  readOnly: z.boolean().default(false),
});
/** Volume name → read-only, as a host offers its volumes (heartbeats, hosts files). */
export const volumeOffersSchema = z
  .record(volumeNameSchema, z.boolean())
  .refine((v) => Object.keys(v).length <= 256, { message: 'at most 256 volumes' })
  .superRefine(refusePrototypeKeys('a volume name'));

const hostnameSchema = z
  .string()
  .min(1)
  .max(253, { message: 'must be at most 253 characters' })
  .regex(/^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/, {
    message: 'must be a valid hostname (letters, digits, "-" and "." between labels of at most 63 characters)',
  });

const argSchema = z
  .string()
  .max(8192, { message: 'each argument must be at most 8192 characters' })
  .refine(noNul, { message: 'must not contain a NUL byte' });

export const envRecordSchema = z
  .record(
    z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,127}$/, {
      message: 'environment variable names must be letters, digits and "_", not starting with a digit',
    }),
    z.string().max(32768, { message: 'must be at most 32768 characters' }).refine(noNul, { message: 'must not contain a NUL byte' }),
  )
  .refine((env) => Object.keys(env).length <= 256, { message: 'at most 256 variables' });

export const envSchema = z
  .unknown()
  // a JSON object's own "__proto__" key would be dropped silently by the record: refuse it (and its kin)
  .superRefine(refusePrototypeKeys('a variable name'))
  .pipe(envRecordSchema);
/** Host labels (`zone=eu`), as agents carry them and `placement.labels` asks for them. */
export const LABEL_RULE = 'letters, digits, ".", "_", "/" and "-", 1 to 63 characters, starting with a letter or digit';
const labelToken = z
  .string()
  .min(1, { message: `must be ${LABEL_RULE}` })
  .max(63, { message: `must be at most 63 characters (${LABEL_RULE})` })
  .regex(/^[A-Za-z0-9][A-Za-z0-9._/-]*$/, { message: `must be ${LABEL_RULE}` });
export const labelsSchema = z
  .record(labelToken, labelToken)
  .refine((l) => Object.keys(l).length <= 64, { message: 'at most 64 labels' })
  .superRefine(refusePrototypeKeys('a label'));
export type Labels = z.infer<typeof labelsSchema>;

/** What one jail may use; the scheduler packs by it, the driver enforces it. */
export const DEFAULT_RESOURCES = { cpu: 0.1, memoryMB: 64, maxProcs: 128 } as const;
export const resourcesSchema = z.strictObject({
  /** Cores, fractional allowed (0.25 = a quarter of one core). */
  cpu: z.number().min(0.01, { message: 'must be at least 0.01 cores' }).max(1024, { message: 'must be at most 1024 cores' }).default(DEFAULT_RESOURCES.cpu),
  memoryMB: z.number().int().min(4, { message: 'must be at least 4 MB' }).max(4 * 1024 * 1024, { message: 'must be at most 4194304 MB (4 TB)' }).default(DEFAULT_RESOURCES.memoryMB),
  maxProcs: z.number().int().min(1).max(1_000_000, { message: 'must be at most 1000000' }).default(DEFAULT_RESOURCES.maxProcs),
});
export type Resources = z.output<typeof resourcesSchema>;

export const NETWORK_MODES = ['inherit', 'none', 'vnet'] as const;
export type NetworkMode = (typeof NETWORK_MODES)[number];

/** A dotted-quad IPv4 address (no leading zeros, each part 0 to 255). */
const OCTET = '(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])';
export const ipv4Schema = z.string().max(15).regex(new RegExp(`^${OCTET}(\\.${OCTET}){3}$`), { message: 'must be an IPv4 address (four numbers 0 to 255 joined by ".", no leading zeros)' });
const portNumber = z.number().int({ message: 'must be a whole number' }).min(1, { message: 'must be a port from 1 to 65535' }).max(65535, { message: 'must be a port from 1 to 65535' });
/** A published port: `host` on the host's addresses forwards to `jail` on the jail's address. */
// `mode` and `protocol` are strings with a check rather than enums: an enum's mismatch aborts the
// object branch of the union below, and zod would then name neither the field nor the rule
const oneOf = <T extends string>(values: readonly T[]) =>
  z.string().refine((v) => (values as readonly string[]).includes(v), { message: `must be one of ${values.map((v) => `"${v}"`).join('|')}` }) as unknown as z.ZodType<T, T>;
export const portSchema = z.strictObject({ host: portNumber, jail: portNumber, protocol: oneOf(['tcp', 'udp'] as const).default('tcp') });
export type PublishedPort = z.output<typeof portSchema>;
/** A vnet jail's network: its own stack and one address in the cluster's jail network. */
export interface VnetNetwork {
  mode: 'vnet';
  /** Asked for by the user, or pinned by the scheduler into the commands it sends. */
  address?: string;
  ports?: PublishedPort[];
}
const NETWORK_RULE = 'must be one of "inherit"|"none"|"vnet", or an object { mode, address?, ports? }';
const networkObjectSchema = z
  .strictObject({
    mode: oneOf(NETWORK_MODES),
    address: ipv4Schema.optional(),
    ports: z.array(portSchema).max(64, { message: 'at most 64 published ports' }).optional(),
  })
  .superRefine((n, ctx) => {
    if (n.mode !== 'vnet' && n.address !== undefined) ctx.addIssue({ code: 'custom', path: ['address'], message: 'an address needs mode "vnet" (inherit and none have no address of their own)' });
    if (n.mode !== 'vnet' && n.ports?.length) ctx.addIssue({ code: 'custom', path: ['ports'], message: 'published ports need mode "vnet" (inherit shares the host\'s ports, none has no network)' });
    const seen = new Set<string>();
    n.ports?.forEach((p, i) => {
      const key = `${p.host}/${p.protocol ?? 'tcp'}`;
      if (seen.has(key)) ctx.addIssue({ code: 'custom', path: ['ports', i, 'host'], message: `host port ${p.host}/${p.protocol ?? 'tcp'} is published twice` });
      seen.add(key);
    });
  });
/**
 * `inherit` | `none` | `vnet`, or `{ mode, address?, ports? }`. Parsed, inherit and none stay the
 * strings they always were (a spec written before vnet keeps its JSON); vnet is an object.
 */
export const networkSchema = z
  .union([z.enum(NETWORK_MODES), networkObjectSchema], { error: NETWORK_RULE })
  .transform((n): 'inherit' | 'none' | VnetNetwork => {
    const o = typeof n === 'string' ? { mode: n } : n;
    if (o.mode !== 'vnet') return o.mode;
    const v: VnetNetwork = { mode: 'vnet' };
    if ('address' in o && o.address !== undefined) v.address = o.address;
    if ('ports' in o && o.ports?.length) v.ports = o.ports as PublishedPort[];
    return v;
  });
export type JailNetwork = z.output<typeof networkSchema>;
/** The jail's network mode, whichever form its spec used. */
export const networkMode = (spec: { network: JailNetwork }): NetworkMode => (typeof spec.network === 'string' ? spec.network : spec.network.mode);
/** A vnet jail's network, or null. */
export const vnetOf = (spec: { network: JailNetwork }): VnetNetwork | null => (typeof spec.network === 'string' ? null : spec.network);
/**
 * A jail's syscall filter: `default` refuses what lets root in a jail reach the kernel's global
 * state (native/jail-seccomp.h, Docker's default profile as the anchor); `unconfined` is for the
 * rare service that needs more (its capabilities are cut all the same).
 */
export const SECCOMP_MODES = ['default', 'unconfined'] as const;
export type SeccompMode = (typeof SECCOMP_MODES)[number];
export const securitySchema = z.strictObject({
  seccomp: z.enum(SECCOMP_MODES, { message: `must be ${SECCOMP_MODES.join(' or ')}` }).default('default'),
});
export const RESTART_POLICIES = ['always', 'on-failure', 'never'] as const;
export type RestartPolicy = (typeof RESTART_POLICIES)[number];

const jailSpecShape = {
  name: nameSchema,
  command: z
    .array(argSchema)
    .min(1, { message: 'must have at least one element (the program to run)' })
    .max(1024, { message: 'at most 1024 arguments' })
    .refine((argv) => argv[0] !== '', { message: 'the program (first element) must not be empty' }),
  hostname: hostnameSchema.optional(),
  /** The root filesystem: an image (`NAME:TAG`, a digest, or both). Without it, the host's thin root. */
  image: imageRefSchema.optional(),
  env: envSchema.default({}),
  mounts: z.array(mountSchema).max(64, { message: 'at most 64 mounts' }).default([]),
  /** Host volumes (absent, not empty, when none: a spec written before volumes keeps its JSON). */
  volumes: z.array(volumeSchema).max(64, { message: 'at most 64 volumes' }).optional(),
  network: networkSchema.default('inherit'),
  /** How the jail is confined beyond its namespaces and capabilities (absent: the defaults, so older specs keep their JSON). */
  security: securitySchema.optional(),
  restart: z.enum(RESTART_POLICIES).default('always'),
  stopTimeoutMs: z.number().int().min(0).max(600_000).default(10_000),
  resources: resourcesSchema.default({ ...DEFAULT_RESOURCES }),
  placement: z
    .strictObject({
      /** Only this host. */
      host: nameSchema.optional(),
      /** Labels the host must carry, all of them. */
      labels: labelsSchema.default({}),
      /** Jails of one group go to different hosts while hosts allow it. */
      spreadGroup: nameSchema.optional(),
      /** At most this many jails of the spread group on one host (a hard limit). */
      maxPerHost: z.number().int().min(1).max(100_000).optional(),
    })
    .default({ labels: {} }),
  failover: z
    .strictObject({
      /** Place the jail on another host when its host goes down (default); false: state `lost` until it returns. */
      reschedule: z.boolean().default(true),
      /** Stop the jail when its agent has been cut from NATS this long (singletons). Default: keep running. */
      stopWhenDisconnectedMs: z.number().int().min(100, { message: 'must be at least 100 ms' }).max(86_400_000, { message: 'must be at most 86400000 ms (a day)' }).optional(),
    })
    .default({ reschedule: true }),
  /** A check the agent runs on the running jail; absent: the jail is taken as it runs. */
  health: healthCheckSchema.optional(),
};
const distinctMountTargets = (s: { mounts: { target: string }[]; volumes?: { target: string }[] }) =>
  new Set([...s.mounts, ...(s.volumes ?? [])].map((m) => m.target)).size === s.mounts.length + (s.volumes?.length ?? 0);
const distinctMountTargetsRule = { message: 'two mounts or volumes have the same target', path: ['mounts'] };

/** http and tcp checks reach the jail over its network: a jail without one can only be checked by exec. */
const checkReachable = (s: { network: unknown; health?: { http?: unknown; tcp?: unknown } }) => s.network !== 'none' || (!s.health?.http && !s.health?.tcp);
const checkReachableRule = { message: 'http and tcp checks need a network the agent can reach (network is "none"): use an exec check', path: ['health'] };

export const jailSpecSchema = z.strictObject(jailSpecShape).refine(distinctMountTargets, distinctMountTargetsRule).refine(checkReachable, checkReachableRule);

/** A spec as written by a user (defaults not applied yet). */
export type JailSpecInput = z.input<typeof jailSpecSchema>;
/** A parsed spec: every default applied. */
export type JailSpec = z.output<typeof jailSpecSchema>;

/** The jail's seccomp mode: its own setting, else the default filter. */
export const jailSeccomp = (spec: JailSpec): SeccompMode => spec.security?.seccomp ?? 'default';

/** The hostname a jail sees: its own setting, else its name. */
export const jailHostname = (spec: JailSpec) => spec.hostname ?? spec.name;

/** How many jails one fleet entry may stand for, and a fleet in all once replicas are expanded. */
export const MAX_REPLICAS = 1000;
export const MAX_FLEET_JAILS = 10_000;

/**
 * One entry of a fleet file: a jail spec, or with `replicas: N` a template for the N jails
 * `NAME-0` … `NAME-(N-1)`, spread over hosts (their spread group defaults to NAME). Only fleets
 * carry `replicas`: it is expanded where the fleet is parsed, and no spec past that has it.
 */
export const fleetJailSchema = z
  .strictObject({
    ...jailSpecShape,
    replicas: z
      .number()
      .int({ message: 'must be a whole number' })
      .min(1, { message: 'must be at least 1' })
      .max(MAX_REPLICAS, { message: `must be at most ${MAX_REPLICAS}` })
      .optional(),
  })
  .refine(distinctMountTargets, distinctMountTargetsRule)
  .refine(checkReachable, checkReachableRule)
  .superRefine((s, ctx) => {
    if (s.replicas === undefined) return;
    const last = `${s.name}-${s.replicas - 1}`;
    if (last.length > 63)
      ctx.addIssue({
        code: 'custom',
        path: ['name'],
        message: `with ${s.replicas} replicas the last jail would be "${last}" (${last.length} characters, at most 63): shorten the name or use fewer replicas`,
      });
  });
export type FleetJailInput = z.input<typeof fleetJailSchema>;
export type FleetJail = z.output<typeof fleetJailSchema>;

/** The jails a fleet entry stands for: itself, or `NAME-0` … `NAME-(N-1)` in spread group NAME. */
export function expandReplicas(entry: FleetJail): JailSpec[] {
  const { replicas, ...spec } = entry;
  if (replicas === undefined) return [spec];
  const placement = { ...spec.placement, spreadGroup: spec.placement.spreadGroup ?? spec.name };
  return Array.from({ length: replicas }, (_, i) => ({ ...spec, name: `${spec.name}-${i}`, placement }));
}

/**
 * A fleet file: `{ jails: [spec, ...] }` in YAML or JSON. Parsing expands replicas, so the
 * parsed fleet holds plain specs; names must be unique after the expansion.
 */
export const fleetSchema = z
  .strictObject({ jails: z.array(fleetJailSchema).min(1).max(MAX_FLEET_JAILS) })
  .superRefine((fleet, ctx) => {
    const total = fleet.jails.reduce((n, j) => n + (j.replicas ?? 1), 0);
    if (total > MAX_FLEET_JAILS) {
      ctx.addIssue({ code: 'custom', path: ['jails'], message: `at most ${MAX_FLEET_JAILS} jails once replicas are expanded (this fleet makes ${total})` });
      return;
    }
    // name → the entry that made it first
    const seen = new Map<string, number>();
    fleet.jails.forEach((j, i) => {
      for (const { name } of expandReplicas(j)) {
        const first = seen.get(name);
        if (first === undefined) {
          seen.set(name, i);
          continue;
        }
        const plain = j.replicas === undefined && fleet.jails[first]!.replicas === undefined;
        ctx.addIssue(
          plain
            ? { code: 'custom', message: `duplicate jail name "${name}"`, path: ['jails', i, 'name'] }
            : {
                code: 'custom',
                message: `duplicate jail name "${name}" (made by jails.${first}${fleet.jails[first]!.replicas === undefined ? '' : '.replicas'} and by jails.${i}${j.replicas === undefined ? '' : '.replicas'})`,
                path: ['jails', i, j.replicas === undefined ? 'name' : 'replicas'],
              },
        );
        return; // one issue per entry: a replicated entry would repeat it N times
      }
    });
  })
  .transform((fleet): { jails: JailSpec[] } => ({ jails: fleet.jails.flatMap(expandReplicas) }));
/** A fleet file as written (entries may carry `replicas`). */
export type FleetInput = z.input<typeof fleetSchema>;
/** A parsed fleet: plain specs, replicas expanded. */
export type Fleet = z.output<typeof fleetSchema>;
