#!/usr/bin/env node
// Brings a fresh Debian machine to where `npm start` and `npm test` can run: node modules,
// the TypeScript build, the jail init helper (C), and nats-server (apt-get, when root).
// Idempotent and quick when nothing is missing. No shell strings: every command is an argv.
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, readdirSync, statSync, mkdirSync, symlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const quiet = process.env.JAILFLEET_SETUP_QUIET === '1';
const say = (msg) => quiet || console.error(`setup: ${msg}`);
const isRoot = process.getuid?.() === 0;

function run(argv, opts = {}) {
  const r = spawnSync(argv[0], argv.slice(1), { cwd: root, stdio: ['ignore', 'inherit', 'inherit'], ...opts });
  if (r.error || r.status !== 0) {
    console.error(`jailfleet: setup step failed: ${argv.join(' ')} (${r.error?.message ?? `exit ${r.status}`})`);
    process.exit(1);
  }
}
const onPath = (cmd) =>
  (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/sbin']).some((d) => d && existsSync(join(d, cmd)));

let aptUpdated = false;
function aptInstall(pkgs, why) {
  if (!isRoot) {
    console.error(`jailfleet: ${why} is missing; install it with: apt-get install -y ${pkgs.join(' ')} (as root)`);
    process.exit(1);
  }
  say(`installing ${pkgs.join(', ')} with apt-get (${why})`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  if (!aptUpdated) run(['apt-get', 'update', '-qq'], { env });
  aptUpdated = true;
  run(['apt-get', 'install', '-y', '-qq', ...pkgs], { env });
}

function newest(dir) {
  let t = 0;
  if (!existsSync(dir)) return t;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.name === 'node_modules' || e.name === 'json-schema') continue;
    const p = join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return t;
}
const mtime = (p) => (existsSync(p) ? statSync(p).mtimeMs : 0);

// 1. node modules
if (!existsSync(join(root, 'node_modules', '.package-lock.json')) ||
    mtime(join(root, 'package-lock.json')) > mtime(join(root, 'node_modules', '.package-lock.json'))) {
  say('installing node modules (npm ci)');
  run(['npm', 'ci', '--no-audit', '--no-fund', '--loglevel=error']);
}

// 2. TypeScript build, when a source is newer than the last build
const stamp = join(root, 'dist', 'services', 'cli', 'main.js');
const sources = Math.max(...['contracts', 'machines', 'services', 'test/bench', 'test/support', 'tsconfig.json', 'tsconfig.build.json']
  .map((d) => (statSync(join(root, d), { throwIfNoEntry: false })?.isDirectory() ? newest(join(root, d)) : mtime(join(root, d)))));
if (mtime(stamp) < sources) {
  say('building (tsc)');
  run(['npx', 'tsc', '-p', 'tsconfig.build.json']);
  run(['node', 'dist/contracts/export-json-schema.js']);
}

// 2b. the dashboard page's static files, beside the page's compiled modules (tsc copies no html)
for (const f of ['index.html', 'dashboard.css']) {
  const src = join(root, 'services', 'status', 'page', f);
  const dst = join(root, 'dist', 'services', 'status', 'page', f);
  if (mtime(dst) >= mtime(src)) continue;
  mkdirSync(dirname(dst), { recursive: true });
  copyFileSync(src, dst);
}

// 3. the linux driver's helpers: the jail init (pid 1 of every jail) and the batch mounter; and
// the bench's floor of a jail start (the same isolation in one process, no orchestration)
// (the jail's seccomp filter, native/jail-seccomp.h, is built with libseccomp: those link it)
for (const [name, src, bin, libs] of [
  ['jailinit', join(root, 'native', 'jailinit.c'), join(root, 'dist', 'native', 'jailinit'), ['-lseccomp']],
  ['jailmount', join(root, 'native', 'jailmount.c'), join(root, 'dist', 'native', 'jailmount'), []],
  ['jailsession', join(root, 'native', 'jailsession.c'), join(root, 'dist', 'native', 'jailsession'), ['-lseccomp']],
  ['jailfs', join(root, 'native', 'jailfs.c'), join(root, 'dist', 'native', 'jailfs'), []],
  ['jail-floor', join(root, 'test', 'bench', 'jail-floor.c'), join(root, 'dist', 'test', 'bench', 'jail-floor'), []],
  // the escape suite's probe: the syscalls busybox has no applet for (test/e2e/escape.test.ts)
  ['jail-probe', join(root, 'test', 'e2e', 'jail-probe.c'), join(root, 'dist', 'test', 'e2e', 'jail-probe'), ['-static']],
]) {
  // the shared headers count as sources of every helper that includes them
  const headers = ['jail-caps.h', 'jail-seccomp.h'].map((h) => mtime(join(root, 'native', h)));
  if (!existsSync(src) || mtime(bin) >= Math.max(mtime(src), ...headers)) continue;
  if (!onPath('cc')) aptInstall(['gcc', 'libc6-dev'], `a C compiler (for ${name})`);
  if (libs.includes('-lseccomp') && !existsSync('/usr/include/seccomp.h')) aptInstall(['libseccomp-dev'], `libseccomp (the jail's seccomp filter, for ${name})`);
  say(`compiling ${name}`);
  mkdirSync(dirname(bin), { recursive: true });
  run(['cc', '-O2', '-Wall', '-Wextra', '-Werror', '-o', bin, src, ...libs]);
}

// 4. kernel tools of the linux driver, and the broker
const tools = [['unshare', 'util-linux'], ['nsenter', 'util-linux'], ['mount', 'mount']];
const missingTools = [...new Set(tools.filter(([c]) => !onPath(c)).map(([, p]) => p))];
if (missingTools.length) aptInstall(missingTools, 'util-linux (unshare, nsenter, mount)');
// images: xz and zstd decompress .tar.xz (FreeBSD's base.txz) and .tar.zst on import, tar
// unpacks on the agent; the tests build their userland image from Debian's static busybox
const imageTools = [['xz', 'xz-utils'], ['zstd', 'zstd'], ['tar', 'tar']];
const missingImageTools = [...new Set(imageTools.filter(([c]) => !onPath(c)).map(([, p]) => p))];
if (!existsSync('/bin/busybox')) missingImageTools.push('busybox-static');
if (missingImageTools.length) aptInstall(missingImageTools, 'image tools (xz, zstd, tar, a static busybox for the tests)');
// vnet jails: ip (links, addresses, the jail bridge); the tests fetch from jails with curl
const netTools = [['ip', 'iproute2'], ['curl', 'curl']];
const missingNetTools = [...new Set(netTools.filter(([c]) => !onPath(c)).map(([, p]) => p))];
if (missingNetTools.length) aptInstall(missingNetTools, 'network tools for vnet jails (ip, curl)');
if (!onPath('nats-server')) {
  aptInstall(['nats-server'], 'nats-server');
  // Debian's package starts its own broker on 127.0.0.1:4222 (without JetStream) where systemd
  // runs; jailfleet starts the one it needs, so the packaged service would only hold the port
  if (existsSync('/run/systemd/system')) {
    say('disabling the packaged nats-server service (jailfleet up runs its own broker)');
    spawnSync('systemctl', ['disable', '--now', 'nats-server'], { stdio: 'ignore' });
  }
}

// the metrics e2e test scrapes the cluster with Debian's prometheus (promtool comes with it);
// the packaged service would scrape nothing of ours and only hold port 9090, so it is stopped
if (!onPath('prometheus') || !onPath('promtool')) {
  aptInstall(['prometheus'], 'prometheus and promtool (the metrics test)');
  if (existsSync('/run/systemd/system')) {
    say('disabling the packaged prometheus service (the metrics test runs its own)');
    spawnSync('systemctl', ['disable', '--now', 'prometheus', 'prometheus-node-exporter'], { stdio: 'ignore' });
  }
}

// 4b. a headless browser for the dashboard's tests and bench: Debian's chromium, driven by
// playwright-core (which downloads no browser of its own)
if (!existsSync('/usr/bin/chromium')) {
  if (isRoot) aptInstall(['chromium'], 'chromium (the dashboard is tested in a real browser)');
  else say('chromium is missing: the dashboard test and bench need it (apt-get install -y chromium, as root)');
}

// 5. `npx jailfleet` inside the project: link the built CLI into node_modules/.bin
const bin = join(root, 'node_modules', '.bin', 'jailfleet');
const cli = join(root, 'dist', 'services', 'cli', 'main.js');
if (existsSync(cli)) {
  chmodSync(cli, 0o755);
  if (!existsSync(bin)) symlinkSync('../../dist/services/cli/main.js', bin);
}
