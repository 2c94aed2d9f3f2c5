// `jailfleet image import | ls | inspect | rm`: the CLI's side of the cluster's image store.
// Import builds the canonical tar in a scratch directory (removed however it ends) and stores it
// by digest, then points the tag at it. It must never leave a tag pointing at bytes the store
// does not hold. `rm` is the scheduler's (api image-rm), which refuses while a jail uses the image.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import { z } from 'zod';
import {
  BUCKET_DESIRED,
  desiredRecordSchema,
  imageRefSchema,
  imageTagRefSchema,
  parseImageRef,
  type ImageRecord,
} from '../../contracts/index.js';
import { decodeWith } from '../common/codec.js';
import { DEFAULT_MAX_IMAGE_MB } from '../common/defaults.js';
import { CliError, type Client } from './client.js';
import { flag } from './flags.js';

export const maxImageMBSchema = z
  .string()
  .regex(/^\d{1,7}$/, { message: 'must be a whole number of MB' })
  .transform(Number)
  .pipe(z.number().min(1, { message: 'must be at least 1 MB' }).max(1_048_576, { message: 'must be at most 1048576 MB (1 TB)' }));

const tagArg = (v: string) => {
  const r = imageTagRefSchema.safeParse(v);
  if (!r.success) throw new CliError(`NAME:TAG: ${r.error.issues[0]!.message} (got ${JSON.stringify(v)})`, 2);
  return r.data;
};

/** Jails whose desired record (not a tombstone) names this tag or digest. */
async function jailsUsing(c: Client, record: ImageRecord): Promise<string[]> {
  const { Kvm } = await import('@nats-io/kv');
  const kv = await new Kvm(c.nc).open(BUCKET_DESIRED);
  const users: string[] = [];
  // no desired bucket yet (no scheduler ever ran): no jail uses anything
  const keys = await kv.keys().catch((err: unknown) => {
    if (/stream not found/i.test(String((err as Error)?.message))) return [] as string[];
    throw err;
  });
  for await (const key of keys) {
    const e = await kv.get(key);
    if (!e || e.operation !== 'PUT') continue;
    try {
      const d = decodeWith(desiredRecordSchema, e.value);
      if (d.desired === 'removed' || !d.spec.image) continue;
      const ref = parseImageRef(d.spec.image);
      if (ref.tag === `${record.name}:${record.tag}` || ref.digest === record.digest) users.push(d.spec.name);
    } catch {
      // an unreadable record names no image we can tell
    }
  }
  return users.sort();
}

const mb = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MB`;

// The object store, tar and the importer are loaded only by the image commands that use them:
// every other command would pay for them at each start (about 160 ms here).
const imageStore = async () => (await import('../common/image-store.js')).ImageStore;

export function registerImageCommands(program: Command, withClient: <T>(fn: (c: Client) => Promise<T>) => Promise<T>): Command {
  const image = program.command('image').description('images: root filesystems jails start from, stored in the cluster');

  image
    .command('import')
    .description('import a directory, a tarball (.tar, .tar.gz, .tar.xz, .tar.zst), an OCI image layout or a docker save archive as NAME:TAG')
    .argument('<tag>', 'NAME:TAG')
    .argument('<path>', 'directory or archive file')
    .option('--max-image-mb <mb>', 'refuse an image larger than this, unpacked', String(DEFAULT_MAX_IMAGE_MB))
    .action(async (tagValue: string, path: string, o) => {
      const tag = tagArg(tagValue);
      const maxMB = flag('max-image-mb', maxImageMBSchema, o.maxImageMb);
      const [name, tagName] = tag.split(':') as [string, string];
      const scratch = await mkdtemp(join(tmpdir(), 'jailfleet-import-'));
      const tty = Boolean(process.stderr.isTTY);
      let lastShown = 0;
      try {
        const { buildImage } = await import('./image-import.js');
        const { ImageRefused } = await import('../common/image-tree.js');
        const built = await buildImage(path, {
          maxBytes: maxMB * 1024 * 1024,
          scratch,
          onProgress: tty
            ? (n) => {
                if (n - lastShown < 4 * 1024 * 1024) return;
                lastShown = n;
                process.stderr.write(`\rreading ${path}: ${mb(n)}`);
              }
            : undefined,
        }).catch((err: unknown) => {
          if (err instanceof ImageRefused) throw new CliError(`image import ${path}: ${err.message}; nothing was imported`, 2);
          throw err;
        });
        if (tty && lastShown) process.stderr.write('\n');
        for (const w of built.warnings) process.stderr.write(`jailfleet: warning: ${w}\n`);
        await withClient(async (c) => {
          const store = await (await imageStore()).open(c.nc);
          if (tty) process.stderr.write(`storing ${mb(built.bytes)} as ${built.digest}\n`);
          await store.putBlob(built.digest, built.tarPath, built.bytes);
          await store.putTag({
            v: 1,
            name,
            tag: tagName,
            digest: built.digest,
            bytes: built.bytes,
            entries: built.entries,
            importedAt: new Date().toISOString(),
            format: built.format,
          });
          // an image rm of another tag naming these bytes may have deleted them between our put and
          // our tag (it deletes bytes no tag names): put them again, so the tag never names nothing
          if (!(await store.hasBlob(built.digest))) await store.putBlob(built.digest, built.tarPath, built.bytes);
        });
        console.log(`${tag}: ${built.digest} (${built.format}, ${built.entries} entries, ${mb(built.bytes)})`);
      } finally {
        await rm(scratch, { recursive: true, force: true });
      }
    });

  image
    .command('ls')
    .description('list images: name, tag, digest, size, when imported, which hosts hold it unpacked')
    .option('--json', 'JSON array')
    .action(async (o) => {
      const { records, holders } = await withClient(async (c) => {
        const records = await (await (await imageStore()).open(c.nc)).list();
        // which hosts hold each image unpacked, from their heartbeats (nothing when no status service answers)
        const hosts = await c.hosts().then((r) => r.hosts, () => []);
        const holders = (digest: string) => hosts.filter((h) => h.images?.includes(digest)).map((h) => h.host).sort();
        return { records, holders };
      });
      if (o.json) {
        console.log(JSON.stringify(records.map((r) => ({ ...r, hosts: holders(r.digest) })), null, 2));
        return;
      }
      const rows = [['NAME', 'TAG', 'DIGEST', 'SIZE', 'IMPORTED', 'HOSTS'], ...records.map((r) => [r.name, r.tag, r.digest.slice(0, 19), mb(r.bytes), r.importedAt, holders(r.digest).join(',') || '-'])];
      const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
      for (const r of rows) console.log(r.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd());
    });

  image
    .command('inspect')
    .description('show one image record (NAME:TAG or its digest) as JSON')
    .argument('<image>', 'NAME:TAG or sha256:<hex>')
    .action(async (ref: string) => {
      const r = imageRefSchema.safeParse(ref);
      if (!r.success) throw new CliError(`IMAGE: ${r.error.issues[0]!.message} (got ${JSON.stringify(ref)})`, 2);
      const { tag, digest } = parseImageRef(r.data);
      const found = await withClient(async (c) => {
        const store = await (await imageStore()).open(c.nc);
        const records = tag ? [await store.tag(tag)].filter((x): x is ImageRecord => x !== null) : (await store.list()).filter((x) => x.digest === digest);
        if (records.length === 0) throw new CliError(`no image ${ref} in the cluster`);
        const users = await jailsUsing(c, records[0]!);
        return { ...records[0]!, tags: records.map((x) => `${x.name}:${x.tag}`), stored: await store.hasBlob(records[0]!.digest), usedBy: users };
      });
      console.log(JSON.stringify(found, null, 2));
    });

  image
    .command('rm')
    .description('remove a tag, and the stored image once no tag names it; refused while a jail uses it')
    .argument('<tag>', 'NAME:TAG')
    .option('--force', 'remove it even though jails use it (they keep running; a new start of them fails)')
    .action(async (tagValue: string, o) => {
      const tag = tagArg(tagValue);
      // the scheduler checks for users and removes under the same compare-and-set an apply's pin
      // goes through, so an apply naming this tag and this rm cannot both succeed
      const r = await withClient((c) => c.imageRm(tag, Boolean(o.force)));
      const left = r.otherTags;
      console.log(`${tag}: removed${left ? ` (the image stays: ${left} other tag${left === 1 ? '' : 's'} name it)` : ''}`);
    });

  for (const c of image.commands) c.exitOverride().configureOutput({ outputError: (str, write) => write(`jailfleet: ${str.replace(/^error: /, '')}`) });
  return image;
}
