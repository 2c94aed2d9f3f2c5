// Images built inside the tests: a busybox userland directory (Debian's busybox-static), tar
// members written by hand (hostile ones too), an OCI image layout and a `docker save` archive
// with their layers. Nothing here is downloaded.
import { createHash } from 'node:crypto';
import { copyFile, mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import tarStream from 'tar-stream';

/** One member of a tar made by hand: a file (content), a directory, a symlink or a hard link, or a raw device. */
export type Member =
  | { name: string; content: string | Buffer; mode?: number }
  | { name: string; dir: true }
  | { name: string; symlink: string }
  | { name: string; hardlink: string }
  | { name: string; device: 'character-device' | 'block-device' }
  | { name: string; claimsSize: number };

/** The bytes of a tar holding `members` in order. */
export async function tarOf(members: Member[]): Promise<Buffer> {
  const pack = tarStream.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (c) => chunks.push(c as Buffer));
  const ended = new Promise<void>((resolve) => pack.on('end', () => resolve()));
  let claimed = 0;
  for (const m of members) {
    if ('content' in m) pack.entry({ name: m.name, mode: m.mode ?? 0o644 }, m.content);
    else if ('dir' in m) pack.entry({ name: m.name, type: 'directory', mode: 0o755 });
    else if ('symlink' in m) pack.entry({ name: m.name, type: 'symlink', linkname: m.symlink });
    else if ('hardlink' in m) pack.entry({ name: m.name, type: 'link', linkname: m.hardlink });
    else if ('device' in m) pack.entry({ name: m.name, type: m.device, devmajor: 1, devminor: 3, mode: 0o666 });
    else {
      // a header that claims a size, then the archive ends: what a bomb or a truncated file looks like
      pack.entry({ name: m.name, size: 512 }, Buffer.alloc(512));
      claimed = m.claimsSize;
      break;
    }
  }
  pack.finalize();
  await ended;
  const tar = Buffer.concat(chunks);
  if (!claimed) return tar;
  // the last member's header claims `claimed` bytes (octal at 124, checksum at 148 recomputed)
  const at = tar.length - 3 * 512 - 512;
  const header = tar.subarray(at, at + 512);
  header.write(`${claimed.toString(8).padStart(11, '0')}\0`, 124, 12, 'ascii');
  header.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of header) sum += b;
  header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'ascii');
  return tar.subarray(0, at + 1024);
}

/** A minimal userland in `dir`: /bin/busybox and its applets as symlinks, an /etc with a marker file. */
export async function busyboxRoot(dir: string, marker = 'from-the-image'): Promise<void> {
  await mkdir(join(dir, 'bin'), { recursive: true });
  await mkdir(join(dir, 'etc'), { recursive: true });
  await copyFile('/bin/busybox', join(dir, 'bin', 'busybox'));
  for (const applet of ['sh', 'cat', 'echo', 'ls', 'sleep', 'touch', 'mkdir', 'rm', 'test']) await symlink('busybox', join(dir, 'bin', applet));
  await writeFile(join(dir, 'etc', 'image-marker'), `${marker}\n`);
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Writes an OCI image layout of `layers` (tar bytes, lowest first) into `dir`. */
export async function ociLayout(dir: string, layers: Buffer[]): Promise<void> {
  const blobs = join(dir, 'blobs', 'sha256');
  await mkdir(blobs, { recursive: true });
  const put = async (b: Buffer) => {
    const h = sha(b);
    await writeFile(join(blobs, h), b);
    return { digest: `sha256:${h}`, size: b.length };
  };
  const config = await put(Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: layers.map((l) => `sha256:${sha(l)}`) } })));
  const layerDescs = [];
  for (const l of layers) layerDescs.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...(await put(l)) });
  const manifest = await put(
    Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config }, layers: layerDescs })),
  );
  await writeFile(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest }] }));
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
}

/** The bytes of a classic `docker save` archive of `layers` (manifest.json, <id>/layer.tar). */
export async function dockerSave(layers: Buffer[]): Promise<Buffer> {
  const ids = layers.map((l) => sha(l));
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux' }));
  const members: Member[] = [
    ...ids.flatMap((id, i): Member[] => [{ name: `${id}/`, dir: true }, { name: `${id}/layer.tar`, content: layers[i]! }]),
    { name: `${sha(config)}.json`, content: config },
    { name: 'manifest.json', content: JSON.stringify([{ Config: `${sha(config)}.json`, RepoTags: ['test:1'], Layers: ids.map((id) => `${id}/layer.tar`) }]) },
  ];
  return tarOf(members);
}
