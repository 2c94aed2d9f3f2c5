// Images: a root filesystem tree stored once in the cluster (a JetStream object store, keyed by
// the sha256 of its canonical tar) and named `NAME:TAG` in a KV bucket. The shapes only: names,
// digests, references as a spec writes them, and the record a tag points at. No I/O.
import { z } from 'zod';

export const IMAGE_NAME_RULE = 'lowercase letters and digits, single ".", "_", "-" or "/" between them, at most 128 characters';
export const IMAGE_TAG_RULE = 'letters, digits and "_", single "." or "-" between them, at most 128 characters';
const NAME = '[a-z0-9]+(?:[._/-][a-z0-9]+)*';
const TAG = '[A-Za-z0-9_]+(?:[.-][A-Za-z0-9_]+)*';
const HEX = '[0-9a-f]{64}';

export const imageNameSchema = z.string().max(128, { message: `must be ${IMAGE_NAME_RULE}` }).regex(new RegExp(`^${NAME}$`), { message: `must be ${IMAGE_NAME_RULE}` });
export const imageTagSchema = z.string().max(128, { message: `must be ${IMAGE_TAG_RULE}` }).regex(new RegExp(`^${TAG}$`), { message: `must be ${IMAGE_TAG_RULE}` });
/** `sha256:` and 64 lowercase hex digits: the sha256 of the image's canonical tar. */
export const imageDigestSchema = z.string().regex(new RegExp(`^sha256:${HEX}$`), { message: 'must be "sha256:" and 64 lowercase hex digits' });

/** `NAME:TAG`, as `image import` and `image rm` take it. */
export const imageTagRefSchema = z
  .string()
  .max(260)
  .regex(new RegExp(`^${NAME}:${TAG}$`), { message: `must be NAME:TAG (NAME: ${IMAGE_NAME_RULE}; TAG: ${IMAGE_TAG_RULE})` });

/**
 * A spec's `image`: `NAME:TAG`, a digest, or `NAME:TAG@sha256:…` (pinned). `apply` pins a
 * `NAME:TAG` it can resolve, so the desired record keeps the bytes it meant even if the tag moves.
 */
export const imageRefSchema = z
  .string()
  .max(340)
  .regex(new RegExp(`^(?:${NAME}:${TAG}(?:@sha256:${HEX})?|sha256:${HEX})$`), {
    message: 'must be NAME:TAG, sha256:<64 hex digits> or NAME:TAG@sha256:<64 hex digits>',
  });

export interface ImageRef {
  /** `NAME:TAG`, when the reference names one. */
  tag: string | null;
  /** The digest, when the reference carries one. */
  digest: string | null;
}

/** Splits a valid image reference into its tag and digest. */
export function parseImageRef(ref: string): ImageRef {
  if (ref.startsWith('sha256:')) return { tag: null, digest: ref };
  const at = ref.indexOf('@');
  return at < 0 ? { tag: ref, digest: null } : { tag: ref.slice(0, at), digest: ref.slice(at + 1) };
}

/** The KV key of `NAME:TAG` in the tags bucket (KV keys allow no ":"). */
export const imageTagKey = (tagRef: string) => tagRef.replace(':', '/');

/** What a tag points at: the tags bucket's value. */
export const imageRecordSchema = z.strictObject({
  v: z.literal(1),
  name: imageNameSchema,
  tag: imageTagSchema,
  digest: imageDigestSchema,
  /** Bytes of the canonical tar (what an agent fetches). */
  bytes: z.number().int().min(0),
  /** Entries in the tree. */
  entries: z.number().int().min(0),
  importedAt: z.string().datetime({ offset: true }),
  /** What it was made from: directory, tar, tar.gz, tar.xz, tar.zst, oci-layout, docker-save. */
  format: z.string().max(32),
  /**
   * Set by a scheduler while `image rm` looks for jails that use the image: an apply that pinned
   * it meanwhile clears it (compare-and-set), and then the removal loses. See image-pins.ts.
   */
  removing: z.string().datetime({ offset: true }).optional(),
});
export type ImageRecord = z.infer<typeof imageRecordSchema>;

