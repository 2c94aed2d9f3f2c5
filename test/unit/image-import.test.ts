// `image import`'s builder: every input format made here (a directory, tar, tgz, txz, zst, an OCI
// layout and a docker save archive with whiteouts) becomes the same canonical tar for the same
// tree, and every hostile archive is refused naming its entry, writing nothing outside the scratch
// directory. Real files and the real xz/zstd/tar tools; no NATS.
import { afterEach, beforeEach, describe, expect, test } from '@jest/globals';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import tarStream from 'tar-stream';
import { buildImage } from '../../services/cli/image-import.js';
import { ImageRefused } from '../../services/common/image-tree.js';
import { busyboxRoot, dockerSave, ociLayout, tarOf } from '../support/image-fixtures.js';

let work: string;
let scratchN = 0;
const MB = 1024 * 1024;
beforeEach(async () => {
  work = await mkdtemp(join(tmpdir(), 'jailfleet-image-unit-'));
});
afterEach(async () => {
  await rm(work, { recursive: true, force: true });
});

async function build(source: string, maxBytes = 64 * MB) {
  const scratch = join(work, `scratch-${scratchN++}`);
  await mkdir(scratch);
  return buildImage(source, { maxBytes, scratch });
}

/** name → type (and symlink target) of every member of a tar file. */
async function members(tarPath: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const extract = tarStream.extract();
  const done = (async () => {
    for await (const e of extract) {
      out[e.header.name] = e.header.type === 'symlink' ? `symlink:${e.header.linkname}` : e.header.type;
      e.resume();
    }
  })();
  extract.end(await readFile(tarPath));
  await done;
  return out;
}

describe('image formats', () => {
  test('a directory and its tar, tgz, txz and zst all make the same image', async () => {
    const root = join(work, 'root');
    await busyboxRoot(root);
    const dir = await build(root);
    expect(dir.format).toBe('directory');
    expect(dir.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    const m = await members(dir.tarPath);
    expect(m['bin/busybox']).toBe('file');
    expect(m['bin/sh']).toBe('symlink:busybox');
    expect(m['etc/image-marker']).toBe('file');

    const variants: [string, string[], string][] = [
      ['img.tar', [], 'tar'],
      ['img.tgz', ['-z'], 'tar.gz'],
      ['img.txz', ['-J'], 'tar.xz'],
      ['img.tar.zst', ['--zstd'], 'tar.zst'],
    ];
    for (const [file, flags, format] of variants) {
      // GNU tar, as an admin would: owners and times as on disk, members in directory order
      await execa('tar', ['-c', ...flags, '-f', join(work, file), '-C', root, '.']);
      const built = await build(join(work, file));
      expect({ file, format: built.format }).toEqual({ file, format });
      expect({ file, digest: built.digest }).toEqual({ file, digest: dir.digest });
    }
  });

  test('an OCI layout and a docker save archive apply their layers in order, whiteouts and opaque dirs honoured', async () => {
    const lower = await tarOf([
      { name: 'bin/', dir: true },
      { name: 'bin/tool', content: 'v1' },
      { name: 'etc/', dir: true },
      { name: 'etc/gone.conf', content: 'remove me' },
      { name: 'etc/kept.conf', content: 'keep me' },
      { name: 'var/cache/', dir: true },
      { name: 'var/cache/old-1', content: 'x' },
      { name: 'var/cache/old-2', content: 'x' },
    ]);
    const upper = await tarOf([
      { name: 'bin/tool', content: 'v2' },
      { name: 'etc/.wh.gone.conf', content: '' },
      { name: 'var/cache/.wh..wh..opq', content: '' },
      { name: 'var/cache/new', content: 'y' },
    ]);
    const expected = {
      'bin/tool': 'file',
      'etc/kept.conf': 'file',
      'var/cache/new': 'file',
    };
    const oci = join(work, 'oci');
    await ociLayout(oci, [lower, upper]);
    const fromOci = await build(oci);
    expect(fromOci.format).toBe('oci-layout');
    const m = await members(fromOci.tarPath);
    expect(m).toMatchObject(expected);
    for (const gone of ['etc/gone.conf', 'etc/.wh.gone.conf', 'var/cache/old-1', 'var/cache/old-2', 'var/cache/.wh..wh..opq']) expect(m[gone]).toBeUndefined();

    // the layout as one tar (how registries' tools hand it over) is the same image
    await execa('tar', ['-c', '-f', join(work, 'oci.tar'), '-C', oci, '.']);
    expect((await build(join(work, 'oci.tar'))).digest).toBe(fromOci.digest);

    await writeFile(join(work, 'saved.tar'), await dockerSave([lower, upper]));
    const fromDocker = await build(join(work, 'saved.tar'));
    expect(fromDocker.format).toBe('docker-save');
    expect(fromDocker.digest).toBe(fromOci.digest);

    // and the later layer's content won
    const extract = tarStream.extract();
    let tool = '';
    const read = (async () => {
      for await (const e of extract) {
        if (e.header.name === 'bin/tool') for await (const c of e) tool += String(c);
        else e.resume();
      }
    })();
    extract.end(await readFile(fromDocker.tarPath));
    await read;
    expect(tool).toBe('v2');
  });

  test('device nodes are skipped with a warning, not refused', async () => {
    await writeFile(join(work, 'dev.tar'), await tarOf([{ name: 'dev/', dir: true }, { name: 'dev/sda', device: 'block-device' }, { name: 'etc/ok', content: 'ok' }]));
    const built = await build(join(work, 'dev.tar'));
    expect(built.warnings.join('\n')).toMatch(/skipped device node "dev\/sda"/);
    expect(Object.keys(await members(built.tarPath))).not.toContain('dev/sda');
  });
});

describe('hostile archives are refused naming the entry', () => {
  const cases: [string, () => Promise<Buffer>, RegExp][] = [
    ['a ".." name', () => tarOf([{ name: 'etc/../../escape', content: 'x' }]), /entry "etc\/\.\.\/\.\.\/escape": a "\.\." segment/],
    ['an absolute name', () => tarOf([{ name: '/etc/passwd', content: 'x' }]), /entry "\/etc\/passwd": an absolute name/],
    ['a symlink out of the tree', () => tarOf([{ name: 'a/', dir: true }, { name: 'a/out', symlink: '../../../etc' }]), /entry "a\/out": a symlink to "\.\.\/\.\.\/\.\.\/etc", which points out/],
    ['an entry written through a symlink', () => tarOf([{ name: 'etc', symlink: '/etc' }, { name: 'etc/passwd', content: 'x' }]), /entry "etc\/passwd": written through the symlink "etc"/],
    ['a hard link out of the tree', () => tarOf([{ name: 'shadow', hardlink: '../../etc/shadow' }]), /entry "shadow": a hard link to "\.\.\/\.\.\/etc\/shadow", which points out/],
    ['a hard link to nothing earlier', () => tarOf([{ name: 'x', hardlink: 'etc/passwd' }]), /entry "x": a hard link to "etc\/passwd", which is not a file earlier/],
    ['a member bigger than the limit', () => tarOf([{ name: 'huge', claimsSize: 2 * MB }]), /entry "huge": the image would exceed 1 MB/],
    ['many files adding up over the limit', () => tarOf(Array.from({ length: 5 }, (_, i) => ({ name: `f${i}`, content: Buffer.alloc(300 * 1024) }))), /entry "f3": the image would exceed 1 MB/],
  ];
  for (const [what, make, message] of cases) {
    test(what, async () => {
      await writeFile(join(work, 'bad.tar'), await make());
      const err = await build(join(work, 'bad.tar'), 1 * MB).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ImageRefused);
      expect((err as Error).message).toMatch(message);
      expect(existsSync('/escape')).toBe(false);
      // nothing but the scratch directory of the attempt exists
      expect((await readdir(work)).filter((f) => !f.startsWith('scratch-')).sort()).toEqual(['bad.tar']);
    });
  }

  test('a corrupt gzip, a truncated tar and a file that is no archive at all', async () => {
    const good = await tarOf([{ name: 'a', content: Buffer.alloc(64 * 1024, 1) }, { name: 'b', content: 'b' }]);
    await writeFile(join(work, 'trunc.tar'), good.subarray(0, 10_000));
    await writeFile(join(work, 'corrupt.tgz'), Buffer.concat([Buffer.from([0x1f, 0x8b, 8, 0]), Buffer.alloc(200, 7)]));
    await writeFile(join(work, 'corrupt.txz'), Buffer.concat([Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), Buffer.alloc(200, 7)]));
    await writeFile(join(work, 'text.tar'), 'just some text, not a tar\n');
    for (const [file, message] of [
      ['trunc.tar', /corrupt or truncated/],
      ['corrupt.tgz', /gzip data is corrupt or truncated|corrupt or truncated/],
      ['corrupt.txz', /xz data is corrupt or truncated|corrupt or truncated/],
      ['text.tar', /corrupt or truncated|no tar members/],
    ] as const) {
      const err = await build(join(work, file)).catch((e: unknown) => e);
      expect({ file, refused: err instanceof ImageRefused }).toEqual({ file, refused: true });
      expect((err as Error).message).toMatch(message);
    }
  });

  test('a whiteout in a layer cannot reach out of the tree either', async () => {
    const lower = await tarOf([{ name: 'etc/', dir: true }, { name: 'etc/a', content: 'a' }]);
    const evil = await tarOf([{ name: '../.wh.etc', content: '' }]);
    const oci = join(work, 'oci');
    await ociLayout(oci, [lower, evil]);
    await expect(build(oci)).rejects.toThrow(/entry "\.\.\/\.wh\.etc": a "\.\." segment/);
  });
});
