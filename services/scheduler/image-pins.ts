// Images as the scheduler API sees them: `apply` pins `image: NAME:TAG` to the digest the tag
// names, and `image rm` removes a tag (and its stored bytes once no tag names them) only when no
// desired record uses it. Any scheduler answers either verb, so a lock in one process would not
// serialise them; the tag record's compare-and-set does, Dekker-style:
//   apply: write the desired records, then read the tag; a `removing` mark on it is cleared by a
//          compare-and-set (the apply wins) — if the tag is already gone, the removal won and the
//          apply fails saying so.
//   rm:    mark the tag `removing` (compare-and-set), then read every desired record as the bucket
//          holds it now; then delete the tag at the marked revision (compare-and-set).
// Each side writes before it reads what the other writes, so at least one sees the other, and the
// tag's single revision decides which of the two wins. It must never delete a tag or its bytes that
// a desired record written before the mark names (unless forced), nor answer an apply as done
// whose pinned bytes a removal deleted.
import { Conflict, NotFound, Unavailable, parseImageRef, type ImageRecord, type JailSpec } from '../../contracts/index.js';
import { isReadable, type RecordBucket } from './store.js';
import type { DesiredRecord } from '../../contracts/index.js';

/** The image store as this module uses it (services/common/image-store.ts implements it). */
export interface ImageTagStore {
  tagEntry(tagRef: string): Promise<{ record: ImageRecord; revision: number } | null>;
  updateTag(record: ImageRecord, revision: number): Promise<number | null>;
  deleteTagAt(tagRef: string, revision: number): Promise<boolean>;
  list(): Promise<ImageRecord[]>;
  deleteBlob(digest: string): Promise<void>;
}

/** The desired bucket as `image rm` reads it: every record the bucket holds once `current()` resolves. */
export interface DesiredRecords extends Pick<RecordBucket<DesiredRecord>, 'entries'> {
  /** Resolves once the cache holds every write made to the bucket before the call. */
  current(): Promise<void>;
}

/** What `pin` pinned: each tag and the digest it named, to confirm once the desired records are written. */
export type Pinned = Map<string, string>;

const ATTEMPTS = 20;
const pause = (attempt: number) => new Promise((r) => setTimeout(r, 5 * (attempt + 1)));
const withoutMark = ({ removing: _, ...record }: ImageRecord): ImageRecord => record;

export class ImagePins {
  constructor(private readonly images: () => Promise<ImageTagStore>) {}

  /**
   * Specs whose `image: NAME:TAG` names an image the store has, pinned to its digest now
   * (`NAME:TAG@sha256:…`): a failover or a drain then starts the same bytes even if the tag
   * moves. An unknown tag stays as written; the agent that gets the jail fails it with why.
   */
  async pin(specs: JailSpec[]): Promise<{ specs: JailSpec[]; pinned: Pinned }> {
    const tags = [...new Set(specs.map((s) => (s.image ? parseImageRef(s.image) : null)).filter((r) => r && !r.digest).map((r) => r!.tag!))];
    const pinned: Pinned = new Map();
    if (tags.length === 0) return { specs, pinned };
    const store = await this.images();
    for (const t of tags) {
      const e = await store.tagEntry(t);
      if (e) pinned.set(t, e.record.digest);
    }
    return {
      specs: specs.map((s) => {
        const ref = s.image ? parseImageRef(s.image) : null;
        const digest = ref?.tag && !ref.digest ? pinned.get(ref.tag) : undefined;
        return digest ? { ...s, image: `${ref!.tag}@${digest}` } : s;
      }),
      pinned,
    };
  }

  /**
   * After the desired records are written: a removal that marked a pinned tag meanwhile loses
   * (the mark is cleared); one that already deleted it won, and this apply is answered Conflict.
   */
  async confirm(pinned: Pinned): Promise<void> {
    if (pinned.size === 0) return;
    const store = await this.images();
    for (const [tag, digest] of pinned) {
      for (let attempt = 0; ; attempt++) {
        if (attempt === ATTEMPTS) throw new Conflict(`image ${tag} is being changed by someone else; apply again`);
        const e = await store.tagEntry(tag);
        if (!e) {
          // another tag naming the same bytes keeps them (a removal deletes bytes no tag names)
          if ((await store.list()).some((r) => r.digest === digest)) break;
          throw new Conflict(`image ${tag} was removed (image rm) while this apply pinned it: its jails name bytes that are gone; import it again and apply again`);
        }
        if (!e.record.removing) break;
        if ((await store.updateTag(withoutMark(e.record), e.revision)) !== null) break;
        await pause(attempt);
      }
    }
  }

  /**
   * `image rm`: the tag goes, and its bytes once no other tag names them. Refused (Conflict,
   * naming the jails) while a desired record that is not a tombstone names the tag or its digest,
   * unless `force`.
   */
  async remove(tag: string, force: boolean, desired: DesiredRecords) {
    const store = await this.images();
    for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
      const e = await store.tagEntry(tag);
      if (!e) throw new NotFound(`no image ${tag} in the cluster`);
      const marked = await store.updateTag({ ...e.record, removing: new Date().toISOString() }, e.revision);
      if (marked === null) {
        await pause(attempt);
        continue;
      }
      // every desired record written before the mark is in the cache after this
      await desired.current().catch((err: unknown) => {
        throw new Unavailable(`cannot read the desired records to check who uses ${tag}; try again`, { cause: err });
      });
      const usedBy = jailsUsing(desired, tag, e.record.digest);
      if (usedBy.length > 0 && !force) {
        // an apply may have cleared the mark already: then there is nothing to put back
        await store.updateTag(withoutMark(e.record), marked);
        const n = usedBy.length;
        throw new Conflict(`image ${tag} is used by ${n} jail${n === 1 ? '' : 's'} (${usedBy.slice(0, 5).join(', ')}${n > 5 ? ', …' : ''}): rm them first, or use --force`);
      }
      if (!(await store.deleteTagAt(tag, marked))) {
        throw new Conflict(`image ${tag} was pinned by an apply while it was being removed: it is in use now; rm its jails first, or use --force`);
      }
      const otherTags = (await store.list()).filter((r) => r.digest === e.record.digest).length;
      if (otherTags === 0) await store.deleteBlob(e.record.digest);
      return { tag, digest: e.record.digest, otherTags, usedBy };
    }
    throw new Conflict(`image ${tag} is being changed by someone else; try again`);
  }
}

/** Jails whose desired record (not a tombstone) names this tag or digest, sorted. */
export function jailsUsing(desired: Pick<RecordBucket<DesiredRecord>, 'entries'>, tag: string, digest: string): string[] {
  const users: string[] = [];
  for (const slot of desired.entries()) {
    if (!isReadable(slot) || slot.value.desired === 'removed' || !slot.value.spec.image) continue;
    const ref = parseImageRef(slot.value.spec.image);
    if (ref.tag === tag || ref.digest === digest) users.push(slot.value.spec.name);
  }
  return users.sort();
}
