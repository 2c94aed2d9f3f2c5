// Jest runs this in every test file (setupFilesAfterEnv): the file's scratch directories go when
// it ends, after its own afterAll hooks have stopped what used them.
import { afterAll } from '@jest/globals';
import { removeScratch } from './scratch.js';

afterAll(() => {
  const kept = removeScratch();
  if (kept.length) throw new Error(`scratch directories still have mounts under them (left in place): ${kept.join(', ')}`);
});
