// `image rm` is the scheduler's: an admin cannot remove an image a jail's desired record names
// (unless --force), and an apply that pins a tag and an rm of that tag, answered by two different
// schedulers at once, never both win. Real nats-server, two real `serve scheduler` processes.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { Kvm } from '@nats-io/kv';
import { TestCluster } from '../support/cluster.js';
import { tarOf } from '../support/image-fixtures.js';
import { ImageStore } from '../../services/common/image-store.js';
import { WIRE_VERSION, applyReplyBody, imageRmReplyBody, nameReplyBody, subjects, type JailSpecInput } from '../../contracts/index.js';
import { request } from '../../services/common/rpc.js';

describe('image rm through the scheduler', () => {
  let c: TestCluster;
  let nc: NatsConnection;
  let store: ImageStore;
  let work: string;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'jailfleet-image-rm-'));
    // no hosts: jails stay unplaced, their desired records are what image rm looks at
    c = await TestCluster.start({ hosts: [], schedulers: 2 });
    nc = await connect({ servers: c.url });
    store = await ImageStore.open(nc);
    await c.until('a scheduler answers image rm', async () => (await c.cli(['image', 'rm', 'none:1'])).stderr.includes('no image none:1'));
  }, 60_000);

  afterAll(async () => {
    await nc?.close();
    await c?.stop();
    await rm(work, { recursive: true, force: true });
  }, 120_000);

  /** Stores a one-file image as `tag` straight through the image store (as `image import` does). */
  async function storeImage(tag: string): Promise<string> {
    const bytes = await tarOf([{ name: 'marker', content: tag }]);
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    const file = join(work, `${tag.replace(':', '-')}.tar`);
    await writeFile(file, bytes);
    await store.putBlob(digest, file, bytes.length);
    const [name, t] = tag.split(':') as [string, string];
    await store.putTag({ v: 1, name, tag: t, digest, bytes: bytes.length, entries: 1, importedAt: new Date().toISOString(), format: 'tar' });
    return digest;
  }

  const spec = (name: string, image: string): JailSpecInput => ({ name, command: ['/bin/true'], image });
  const apply = (jails: JailSpecInput[]) => request(nc, subjects.api('apply'), { v: WIRE_VERSION, fleet: { jails } }, applyReplyBody, { timeoutMs: 10_000 });
  const imageRm = (tag: string, force = false) => request(nc, subjects.api('image-rm'), { v: WIRE_VERSION, tag, force }, imageRmReplyBody, { timeoutMs: 10_000 });
  const desiredImage = async (jail: string) => {
    const e = await (await new Kvm(nc).open('jailfleet_desired')).get(jail);
    return e && e.operation === 'PUT' ? (JSON.parse(new TextDecoder().decode(e.value)) as { spec: { image?: string }; desired: string }) : null;
  };

  it('is refused while a jail uses the image, naming it; --force removes tag and bytes; the jail\'s rm frees it', async () => {
    const digest = await storeImage('used:1');
    await apply([spec('user-a', 'used:1')]);
    const refused = await c.cli(['image', 'rm', 'used:1']);
    expect({ exitCode: refused.exitCode, stderr: refused.stderr }).toEqual({ exitCode: 1, stderr: 'jailfleet: image used:1 is used by 1 jail (user-a): rm them first, or use --force' });
    expect((await store.tagEntry('used:1'))?.record.removing).toBeUndefined();
    expect(await store.hasBlob(digest)).toBe(true);

    expect((await c.cli(['rm', 'user-a'])).exitCode).toBe(0);
    const ok = await c.cli(['image', 'rm', 'used:1']);
    expect({ exitCode: ok.exitCode, stdout: ok.stdout }).toEqual({ exitCode: 0, stdout: 'used:1: removed' });
    expect(await store.tagEntry('used:1')).toBeNull();
    expect(await store.hasBlob(digest)).toBe(false);

    const forced = await storeImage('forced:1');
    await apply([spec('user-b', 'forced:1')]);
    const r = await c.cli(['image', 'rm', 'forced:1', '--force']);
    expect({ exitCode: r.exitCode, stdout: r.stdout }).toEqual({ exitCode: 0, stdout: 'forced:1: removed' });
    expect(await store.hasBlob(forced)).toBe(false);
    const bad = await c.cli(['image', 'rm', 'Forced']);
    expect({ exitCode: bad.exitCode, stderr: bad.stderr }).toEqual({ exitCode: 2, stderr: expect.stringMatching(/^jailfleet: NAME:TAG: must be NAME:TAG/) });
    expect((await c.cli(['rm', 'user-b'])).exitCode).toBe(0);
  });

  it('an rm that marked the tag loses to an apply that pins it before the rm deletes', async () => {
    // an rm stopped between its mark and its delete (as a scheduler that died there would be)
    const digest = await storeImage('held:1');
    const e = (await store.tagEntry('held:1'))!;
    const marked = await store.updateTag({ ...e.record, removing: new Date().toISOString() }, e.revision);
    expect(marked).not.toBeNull();
    await apply([spec('holder', 'held:1')]);
    expect((await desiredImage('holder'))?.spec.image).toBe(`held:1@${digest}`);
    // the apply cleared the mark: the rm's delete at its marked revision loses
    expect((await store.tagEntry('held:1'))?.record.removing).toBeUndefined();
    expect(await store.deleteTagAt('held:1', marked!)).toBe(false);
    expect(await store.hasBlob(digest)).toBe(true);
    expect((await c.cli(['rm', 'holder'])).exitCode).toBe(0);
  });

  it('racing applies and image rms of the same tags, on two schedulers: never both win', async () => {
    const rounds = 16;
    const outcomes: string[] = [];
    for (let i = 0; i < rounds; i++) {
      const tag = `race:${i}`;
      const digest = await storeImage(tag);
      // a fleet of a few jails so the apply's writes take a while; the rm starts among them
      const jails = Array.from({ length: 8 }, (_, j) => spec(`race-${i}-${j}`, tag));
      const [a, r] = await Promise.allSettled([apply(jails), new Promise((res) => setTimeout(res, i % 4)).then(() => imageRm(tag))]);
      const pinned = (await desiredImage(`race-${i}-0`))?.spec.image === `${tag}@${digest}`;
      const tagLeft = (await store.tagEntry(tag)) !== null;
      const bytesLeft = await store.hasBlob(digest);
      const outcome = `apply ${a.status === 'fulfilled' ? (pinned ? 'pinned' : 'unpinned') : 'refused'}, rm ${r.status === 'fulfilled' ? 'done' : 'refused'}`;
      outcomes.push(outcome);
      // the pairs that may happen: the apply wins (the image stays), or the rm wins (the apply is
      // refused, or came after it and pinned nothing)
      expect({ i, outcome, tagLeft, bytesLeft }).toEqual(
        a.status === 'fulfilled' && pinned ? { i, outcome: 'apply pinned, rm refused', tagLeft: true, bytesLeft: true } : { i, outcome: expect.stringMatching(/^apply (refused|unpinned), rm done$/), tagLeft: false, bytesLeft: false },
      );
      if (r.status === 'rejected') expect(String(r.reason)).toMatch(/is used by|was pinned by an apply/);
      if (a.status === 'rejected') expect(String(a.reason)).toMatch(/was removed \(image rm\) while this apply pinned it/);
      for (const j of jails) await request(nc, subjects.api('rm'), { v: WIRE_VERSION, name: j.name }, nameReplyBody, { timeoutMs: 10_000 });
      await imageRm(tag, true).catch(() => undefined);
    }
    console.log(`image rm race outcomes: ${JSON.stringify(outcomes.reduce<Record<string, number>>((m, o) => ({ ...m, [o]: (m[o] ?? 0) + 1 }), {}))}`);
  }, 120_000);
});
