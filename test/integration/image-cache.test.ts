// The agent's image cache against a real nats-server: an image is fetched once and shared, bytes
// whose sha256 is not their name are refused with nothing left in the cache, a hostile tar put
// straight into the store (past the importer) is refused by the agent's own check, what an
// interrupted fetch left is removed, and collection spares an image a jail uses.
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { ImageCache, ImageUnavailable } from '../../services/agent/image-cache.js';
import { ImageStore } from '../../services/common/image-store.js';
import { startNatsServer, type NatsServerHandle } from '../../services/common/nats-server.js';
import { tarOf } from '../support/image-fixtures.js';

let server: NatsServerHandle;
let nc: NatsConnection;
let store: ImageStore;
let work: string;

const digestOf = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'jailfleet-image-cache-'));
  server = await startNatsServer({ dir: join(work, 'nats') });
  nc = await connect({ servers: server.url });
  store = await ImageStore.open(nc);
}, 30_000);

afterAll(async () => {
  await nc?.close();
  await server?.stop();
  await rm(work, { recursive: true, force: true });
});

/** Puts `tar` into the store under `name` (its digest unless a test lies). */
async function put(tar: Buffer, name = digestOf(tar)): Promise<string> {
  const file = join(work, `${name.slice(7, 19)}.tar`);
  await writeFile(file, tar);
  await store.putBlob(name, file, tar.length);
  return name;
}

function cacheIn(dir: string, inUse = new Set<string>(), cacheBytes?: number) {
  return new ImageCache({ dir, store: async () => store, inUse: async () => inUse, cacheBytes });
}

describe('the agent image cache', () => {
  test('fetches once, unpacks into place, and every later jail shares it', async () => {
    const tar = await tarOf([{ name: 'etc/', dir: true }, { name: 'etc/marker', content: 'shared\n' }]);
    const digest = await put(tar);
    const dir = join(work, 'cache-1');
    const cache = cacheIn(dir);
    const [a, b] = await Promise.all([cache.ensure(digest), cache.ensure(digest)]);
    expect(a).toBe(b);
    expect(await readFile(join(a, 'etc', 'marker'), 'utf8')).toBe('shared\n');
    expect(await readdir(dir)).toEqual([digest.slice(7)]);
    expect(await cache.held()).toEqual([digest]);
  });

  test('bytes that do not hash to their name are refused; nothing is left that looks like an image', async () => {
    const tar = await tarOf([{ name: 'etc/evil', content: 'x' }]);
    const lie = `sha256:${'0'.repeat(64)}`;
    await put(tar, lie);
    const dir = join(work, 'cache-2');
    const err = await cacheIn(dir).ensure(lie).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ImageUnavailable);
    expect((err as Error).message).toMatch(/digest mismatch: the store's bytes hash to sha256:/);
    expect(await readdir(dir)).toEqual([]);
  });

  test('a hostile tar put past the importer is refused by the agent itself', async () => {
    const tar = await tarOf([{ name: 'etc', symlink: '/etc' }, { name: 'etc/passwd', content: 'root::0:0::/:/bin/sh\n' }]);
    const digest = await put(tar);
    const dir = join(work, 'cache-3');
    await expect(cacheIn(dir).ensure(digest)).rejects.toThrow(/refused: entry "etc\/passwd": written through the symlink "etc"/);
    expect(await readdir(dir)).toEqual([]);
  });

  test('an image the store does not have, and what an interrupted fetch left', async () => {
    const dir = join(work, 'cache-4');
    await mkdir(join(dir, `.partial-${'a'.repeat(64)}-dead`), { recursive: true });
    await writeFile(join(dir, `.partial-${'a'.repeat(64)}-dead`, 'image.tar'), 'half');
    const tar = await tarOf([{ name: 'bin/', dir: true }]);
    const digest = await put(tar);
    await expect(cacheIn(dir).ensure(`sha256:${'f'.repeat(64)}`)).rejects.toThrow(/not in the cluster's image store/);
    await cacheIn(dir).ensure(digest);
    expect(await readdir(dir)).toEqual([digest.slice(7)]);
  });

  test('collection removes the least recently used unused image, never one a jail uses', async () => {
    const dir = join(work, 'cache-5');
    const inUse = new Set<string>();
    const cache = cacheIn(dir, inUse, 1);
    const digests: string[] = [];
    for (const i of [0, 1, 2]) digests.push(await put(await tarOf([{ name: `f${i}`, content: Buffer.alloc(4096, i) }])));
    inUse.add(digests[0]!);
    await cache.ensure(digests[0]!);
    await cache.ensure(digests[1]!);
    // the third fetch puts the cache over its budget: the unused one goes, the used one stays
    await cache.ensure(digests[2]!);
    expect(existsSync(join(dir, digests[0]!.slice(7)))).toBe(true);
    expect(existsSync(join(dir, digests[1]!.slice(7)))).toBe(false);
    expect(await cache.held()).toEqual([digests[0]!, digests[2]!].sort());
  });
});
