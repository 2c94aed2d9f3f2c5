// Runs every e2e test alone (`jest FILE -t NAME`), one after another, and says which passed: a
// test that leans on an earlier test's state fails here though the whole file passes. Jest lists
// the names itself (a run of the file with no test selected skips every one and names it).
// Not part of `npm test` (it starts a cluster per test: about half an hour on two cores).
// Usage: node scripts/e2e-alone.mjs [FILE...]   (default: every test/e2e/*.test.ts)
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const files = process.argv.slice(2).length ? process.argv.slice(2) : readdirSync(join(root, 'test', 'e2e')).filter((f) => f.endsWith('.test.ts')).map((f) => `test/e2e/${f}`);
const jest = join(root, 'node_modules', '.bin', 'jest');
const env = { ...process.env, NODE_OPTIONS: '--experimental-vm-modules' };
const tmp = mkdtempSync(join(tmpdir(), 'jailfleet-alone-'));
const escape = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** Jest's JSON result of `args` (its exit code aside: a failing run still writes it). */
async function jestJson(args) {
  const out = join(tmp, 'result.json');
  rmSync(out, { force: true });
  const argv = [jest, ...args, '--ci', '--json', `--outputFile=${out}`];
  // on a machine shared with other test runs, JAILFLEET_TEST_LOCK=FILE runs each under flock(1)
  const lock = process.env.JAILFLEET_TEST_LOCK;
  await execa(lock ? 'flock' : argv[0], lock ? [lock, ...argv] : argv.slice(1), { cwd: root, env, stdio: 'ignore', reject: false });
  return JSON.parse(readFileSync(out, 'utf8'));
}

await execa('node', [join(root, 'scripts', 'setup.mjs')], { cwd: root, stdio: 'inherit' });
let passed = 0;
const failed = [];
for (const file of files) {
  const names = (await jestJson([file, '-t', '^$'])).testResults.flatMap((r) => r.assertionResults.map((a) => a.fullName));
  for (const name of names) {
    const t = Date.now();
    const r = await jestJson([file, '-t', `^${escape(name)}$`]);
    const ok = r.numPassedTests === 1 && r.numFailedTests === 0 && r.numFailedTestSuites === 0;
    if (ok) passed++;
    else failed.push(`${file}: ${name}`);
    console.log(`${ok ? 'pass' : 'FAIL'} ${((Date.now() - t) / 1000).toFixed(0).padStart(4)} s  ${file}: ${name}`);
    // why, in a few lines: the first failure message of the test, or the suite's
    if (!ok) {
      const why = r.testResults.flatMap((f) => [...f.assertionResults.flatMap((a) => a.failureMessages), f.message ?? '']).find((m) => m);
      for (const line of (why ?? 'no message').split('\n').filter((l) => l.trim()).slice(0, 8)) console.log(`       ${line}`);
    }
  }
}
rmSync(tmp, { recursive: true, force: true });
console.log(`alone: ${passed} passed, ${failed.length} failed`);
for (const f of failed) console.log(`  failed: ${f}`);
process.exitCode = failed.length ? 1 : 0;
