// Images end to end: an admin imports a busybox userland and runs jails from it. Each jail sees
// the image's /bin and not the host's /usr, writes its own root (kept across stop/start, gone
// with rm), the desired record keeps the digest the tag meant at apply, hostile archives leave
// nothing in the store, an unknown image fails with why, and the agent's cache collects an
// unused image but never a used one. Real nats-server, real `jailfleet serve`, real overlays.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { existsSync, readdirSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { TestCluster } from '../support/cluster.js';
import { busyboxRoot, tarOf } from '../support/image-fixtures.js';
import type { ImageRecord, PsRow } from '../../contracts/index.js';

const asRoot = process.getuid?.() === 0;
const d = asRoot ? describe : describe.skip;
if (!asRoot) console.warn('end-to-end tests need root (namespaces, mounts, overlays): skipped');

d('jails from images', () => {
  let c: TestCluster;
  let work: string;
  const imagesDir = () => join(c.dir, 'hosts', 'host-1', 'images');
  const held = () => (existsSync(imagesDir()) ? readdirSync(imagesDir()).filter((n) => /^[0-9a-f]{64}$/.test(n)).map((n) => `sha256:${n}`) : []);

  /** Imports a busybox userland whose /etc/image-marker says `marker`, as NAME:TAG from a .tar.gz. */
  async function importBusybox(tag: string, marker: string): Promise<string> {
    const root = join(work, `root-${marker}`);
    await busyboxRoot(root, marker);
    const archive = join(work, `${marker}.tar.gz`);
    await execa('tar', ['-c', '-z', '-f', archive, '-C', root, '.']);
    const r = await c.cli(['image', 'import', tag, archive]);
    expect({ exitCode: r.exitCode, stderr: r.stderr }).toEqual({ exitCode: 0, stderr: '' });
    return /sha256:[0-9a-f]{64}/.exec(r.stdout)![0];
  }

  const exec = (jail: string, ...argv: string[]) => c.cli(['exec', jail, '--', ...argv]);
  const running = (jail: string) => c.until(`${jail} running`, async () => (await c.json<PsRow[]>(['ps'])).find((j) => j.name === jail && j.state === 'running'));

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'jailfleet-images-e2e-'));
    // a cache of 1 MB: every image is over budget, so each new fetch collects what is unused
    c = await TestCluster.start({ hosts: [] });
    c.startAgent('host-1', ['--image-cache-mb', '1']);
    await c.until('host-1 up', async () => (await c.json<{ host: string; status: string }[]>(['hosts'])).some((h) => h.status === 'up'));
  }, 60_000);

  afterAll(async () => {
    await c?.stop();
    await rm(work, { recursive: true, force: true });
  }, 120_000);


  it('a jail from a busybox image sees the image\'s /bin, not the host\'s /usr', async () => {
    const digest1 = await importBusybox('busybox:1', 'one');
    const ls = await c.json<ImageRecord[]>(['image', 'ls']);
    expect(ls.filter((r) => r.name === 'busybox').map((r) => [`${r.name}:${r.tag}`, r.digest, r.format])).toEqual([['busybox:1', digest1, 'tar.gz']]);

    const r = await c.cli(['run', '--image', 'busybox:1', '--restart', 'never', 'web-a', '--', '/bin/sleep', '3600']);
    expect({ exitCode: r.exitCode, stderr: r.stderr }).toEqual({ exitCode: 0, stderr: '' });
    await running('web-a');
    expect((await exec('web-a', '/bin/cat', '/etc/image-marker')).stdout).toBe('one');
    // the host's userland is not there: no /usr at all in a busybox image
    expect((await exec('web-a', '/bin/test', '-e', '/usr/bin/perl')).exitCode).toBe(1);
    expect(held()).toContain(digest1);
    await c.until('image ls names the host holding it', async () => (await c.json<(ImageRecord & { hosts: string[] })[]>(['image', 'ls'])).find((r) => r.name === 'busybox')?.hosts.includes('host-1'));
  });

  it('two jails of one image each write their own root; the writes survive stop and start, and an agent restart', async () => {
    const digest = await importBusybox('own:1', 'own');
    for (const jail of ['own-web-a', 'own-web-b']) {
      const r = await c.cli(['run', '--image', 'own:1', '--restart', 'never', jail, '--', '/bin/sleep', '3600']);
      expect(r.exitCode).toBe(0);
      await running(jail);
    }
    expect((await exec('own-web-a', '/bin/sh', '-c', 'echo a > /etc/written-by')).exitCode).toBe(0);
    expect((await exec('own-web-b', '/bin/sh', '-c', 'echo b > /etc/written-by')).exitCode).toBe(0);
    expect((await exec('own-web-a', '/bin/cat', '/etc/written-by')).stdout).toBe('a');
    expect((await exec('own-web-b', '/bin/cat', '/etc/written-by')).stdout).toBe('b');
    // the image itself is untouched
    expect(existsSync(join(imagesDir(), digest.slice(7), 'rootfs', 'etc', 'written-by'))).toBe(false);

    expect((await c.cli(['stop', 'own-web-a'])).exitCode).toBe(0);
    await c.until('own-web-a stopped', async () => (await c.json<PsRow[]>(['ps'])).find((j) => j.name === 'own-web-a' && j.state === 'stopped'));
    expect((await c.cli(['start', 'own-web-a'])).exitCode).toBe(0);
    await running('own-web-a');
    expect((await exec('own-web-a', '/bin/cat', '/etc/written-by')).stdout).toBe('a');

    await c.stopAgent('host-1', 'SIGKILL');
    c.startAgent('host-1', ['--image-cache-mb', '1']);
    await c.heartbeat('host-1');
    expect((await c.cli(['stop', 'own-web-b'])).exitCode).toBe(0);
    await c.until('own-web-b stopped', async () => (await c.json<PsRow[]>(['ps'])).find((j) => j.name === 'own-web-b' && j.state === 'stopped'));
    expect((await c.cli(['start', 'own-web-b'])).exitCode).toBe(0);
    await running('own-web-b');
    expect((await exec('own-web-b', '/bin/cat', '/etc/written-by')).stdout).toBe('b');
  });

  it('the desired record keeps the digest: a tag moved later does not change a running spec, and rm of a used image is refused', async () => {
    const pinned = await importBusybox('pin:1', 'pin');
    for (const jail of ['pin-a', 'pin-b']) {
      expect((await c.cli(['run', '--image', 'pin:1', '--restart', 'never', jail, '--', '/bin/sleep', '3600'])).exitCode).toBe(0);
      await running(jail);
    }
    const inspect = await c.cli(['image', 'inspect', 'pin:1']);
    expect(JSON.parse(inspect.stdout).usedBy).toEqual(['pin-a', 'pin-b']);
    const refused = await c.cli(['image', 'rm', 'pin:1']);
    expect({ exitCode: refused.exitCode, stderr: refused.stderr }).toEqual({
      exitCode: 1,
      stderr: 'jailfleet: image pin:1 is used by 2 jails (pin-a, pin-b): rm them first, or use --force',
    });
    const { Kvm } = await import('@nats-io/kv');
    const { connect } = await import('@nats-io/transport-node');
    const nc = await connect({ servers: c.url });
    try {
      const e = await (await new Kvm(nc).open('jailfleet_desired')).get('pin-a');
      expect(JSON.parse(new TextDecoder().decode(e!.value)).spec.image).toBe(`pin:1@${pinned}`);
    } finally {
      await nc.close();
    }
    // the tag moves; pin-a, restarted, still runs the bytes it was applied with
    const moved = await importBusybox('pin:1', 'moved');
    expect(moved).not.toBe(pinned);
    expect((await c.cli(['stop', 'pin-a'])).exitCode).toBe(0);
    await c.until('pin-a stopped', async () => (await c.json<PsRow[]>(['ps'])).find((j) => j.name === 'pin-a' && j.state === 'stopped'));
    expect((await c.cli(['start', 'pin-a'])).exitCode).toBe(0);
    await running('pin-a');
    expect((await exec('pin-a', '/bin/cat', '/etc/image-marker')).stdout).toBe('pin');
  });

  it('every hostile archive is refused naming its entry, with nothing stored and no scratch left', async () => {
    const before = readdirSync(tmpdir()).filter((n) => n.startsWith('jailfleet-import-')).length;
    const cases: [string, Buffer, RegExp][] = [
      ['dotdot', await tarOf([{ name: '../../tmp/evil', content: 'x' }]), /entry "\.\.\/\.\.\/tmp\/evil": a "\.\." segment/],
      ['absolute', await tarOf([{ name: '/etc/cron.d/evil', content: 'x' }]), /entry "\/etc\/cron\.d\/evil": an absolute name/],
      ['symlink-out', await tarOf([{ name: 'up', symlink: '../..' }]), /entry "up": a symlink to "\.\.\/\.\.", which points out/],
      ['through-symlink', await tarOf([{ name: 'etc', symlink: '/etc' }, { name: 'etc/evil', content: 'x' }]), /entry "etc\/evil": written through the symlink "etc"/],
      ['hardlink-out', await tarOf([{ name: 'pw', hardlink: '/etc/shadow' }]), /entry "pw": a hard link to "\/etc\/shadow", which points out/],
      ['too-big', await tarOf([{ name: 'big', claimsSize: 3 * 1024 * 1024 }]), /entry "big": the image would exceed 2 MB/],
      ['truncated', (await tarOf([{ name: 'a', content: Buffer.alloc(50_000, 1) }])).subarray(0, 20_000), /corrupt or truncated/],
    ];
    for (const [name, bytes, message] of cases) {
      const file = join(work, `${name}.tar`);
      await writeFile(file, bytes);
      const r = await c.cli(['image', 'import', `evil:${name}`, file, '--max-image-mb', '2']);
      expect({ name, exitCode: r.exitCode }).toEqual({ name, exitCode: 2 });
      expect(r.stderr).toMatch(message);
      expect(r.stderr).toMatch(/nothing was imported$/);
    }
    const bad = await c.cli(['image', 'import', 'no-tag', join(work, 'dotdot.tar')]);
    expect({ exitCode: bad.exitCode, stderr: bad.stderr }).toEqual({ exitCode: 2, stderr: expect.stringMatching(/^jailfleet: NAME:TAG: must be NAME:TAG/) });
    expect((await c.json<ImageRecord[]>(['image', 'ls'])).map((r) => r.name)).not.toContain('evil');
    expect(existsSync('/tmp/evil')).toBe(false);
    expect(readdirSync(tmpdir()).filter((n) => n.startsWith('jailfleet-import-')).length).toBe(before);
  });

  it('an unknown image fails the jail with why', async () => {
    const r = await c.cli(['run', '--image', 'nope:1', '--restart', 'never', 'ghost', '--', '/bin/true'], { timeoutMs: 60_000 });
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(/no image nope:1 in the cluster/);
    expect((await c.cli(['rm', 'ghost'])).exitCode).toBe(0);
  });

  it('the cache collects an unused image and never a used one; rm takes a jail\'s writable root with it', async () => {
    const kept = await importBusybox('keep:1', 'keep');
    expect((await c.cli(['run', '--image', 'keep:1', '--restart', 'never', 'keeper', '--', '/bin/sleep', '3600'])).exitCode).toBe(0);
    await running('keeper');
    const digest2 = await importBusybox('busybox:2', 'two');
    expect((await c.cli(['run', '--image', 'busybox:2', '--restart', 'never', 'short', '--', '/bin/sleep', '3600'])).exitCode).toBe(0);
    await running('short');
    expect(held()).toEqual(expect.arrayContaining([kept, digest2]));
    expect((await c.cli(['rm', 'short'])).exitCode).toBe(0);
    await c.until('short gone', async () => !(await c.json<PsRow[]>(['ps'])).some((j) => j.name === 'short'));
    expect(existsSync(join(c.dir, 'hosts', 'host-1', 'jails', 'short'))).toBe(false);

    // a third image's fetch puts the cache over budget: busybox:2 goes, busybox:1 (in use) stays
    const digest3 = await importBusybox('busybox:3', 'three');
    expect((await c.cli(['run', '--image', 'busybox:3', '--restart', 'never', 'third', '--', '/bin/sleep', '3600'])).exitCode).toBe(0);
    await running('third');
    // (images other tests of this file left in use stay too: only the unused one goes)
    expect(held()).toEqual(expect.arrayContaining([kept, digest3]));
    expect(held()).not.toContain(digest2);
    expect((await exec('keeper', '/bin/cat', '/etc/image-marker')).stdout).toBe('keep');
  });
});

d('an image jail whose host dies', () => {
  let c: TestCluster;
  let work: string;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'jailfleet-images-fo-'));
    c = await TestCluster.start({ hosts: ['host-1', 'host-2'] });
    await c.until('2 hosts up', async () => (await c.json<{ status: string }[]>(['hosts'])).filter((h) => h.status === 'up').length === 2);
  }, 60_000);

  afterAll(async () => {
    await c?.stop();
    await rm(work, { recursive: true, force: true });
  }, 120_000);

  it('starts elsewhere from the same digest, even though the tag moved meanwhile', async () => {
    const importAs = async (marker: string) => {
      const root = join(work, marker);
      await busyboxRoot(root, marker);
      const r = await c.cli(['image', 'import', 'app:1', root]);
      expect(r.exitCode).toBe(0);
      return /sha256:[0-9a-f]{64}/.exec(r.stdout)![0];
    };
    const first = await importAs('first');
    expect((await c.cli(['run', '--image', 'app:1', 'fo', '--', '/bin/sleep', '3600'])).exitCode).toBe(0);
    const before = await c.until('fo running', async () => (await c.json<PsRow[]>(['ps'])).find((j) => j.name === 'fo' && j.state === 'running'));
    expect(await importAs('second')).not.toBe(first);

    const victim = before.host!;
    await c.stopAgent(victim, 'SIGKILL');
    const after = await c.until('fo running elsewhere', async () => (await c.json<PsRow[]>(['ps'])).find((j) => j.name === 'fo' && j.state === 'running' && j.host !== victim), 60_000);
    expect(after.generation).toBe(before.generation + 1);
    expect((await c.cli(['exec', 'fo', '--', '/bin/cat', '/etc/image-marker'])).stdout).toBe('first');
    expect(existsSync(join(c.dir, 'hosts', after.host!, 'images', first.slice(7), 'rootfs'))).toBe(true);

    // the old host comes back and drops its stale copy, writable layer and all
    await c.startAgentServing(victim);
    await c.until('the stale copy gone', async () => !existsSync(join(c.dir, 'hosts', victim, 'jails', 'fo')), 30_000);
  }, 120_000);
});
