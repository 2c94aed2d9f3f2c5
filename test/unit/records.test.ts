// One rule for stored records: parsed once by the contract, an unreadable one described (never thrown).
import { describe, expect, test } from '@jest/globals';
import { placementRecordSchema } from '../../contracts/index.js';
import { decodeRecord } from '../../services/common/records.js';

const enc = (s: string) => new TextEncoder().encode(s);

describe('decodeRecord', () => {
  test('a record its contract accepts', () => {
    expect(decodeRecord(placementRecordSchema, enc('{"v":1,"host":"h1","generation":2,"reason":null}'))).toEqual({ ok: true, value: { v: 1, host: 'h1', generation: 2, reason: null } });
  });
  test('not JSON, or JSON of the wrong shape: why, naming the field', () => {
    expect(decodeRecord(placementRecordSchema, enc('{nope'))).toMatchObject({ ok: false, why: expect.stringMatching(/^not JSON: /) });
    expect(decodeRecord(placementRecordSchema, enc('{"v":1,"host":"h1","generation":0,"reason":null}'))).toEqual({ ok: false, why: expect.stringMatching(/^generation: /) });
    expect(decodeRecord(placementRecordSchema, enc('{"__proto__":{"polluted":1},"v":1}'))).toMatchObject({ ok: false });
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});
