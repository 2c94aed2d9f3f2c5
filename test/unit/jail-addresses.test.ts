// Vnet jails' addresses, told as the user meets them: the scheduler in-process (memory store,
// simulated clock and agents) gives each vnet jail one address of the jail network, unique, kept
// across stop/start, failover and drain, released by rm; a full pool leaves a jail unplaced with
// the reason; an address asked for outside the network or held by another jail is refused.
import { describe, expect, test } from '@jest/globals';
import { jailSpecSchema, describeIssues } from '../../contracts/index.js';
import { JailNetwork, InvalidJailNetwork } from '../../services/common/jail-network.js';
import { SchedulerHarness } from '../support/scheduler-harness.js';

const refusal = (v: unknown) => {
  const r = jailSpecSchema.safeParse(v);
  return r.success ? null : describeIssues(r.error);
};
const base = { name: 'web', command: ['/bin/true'] };

describe('the network field of a spec', () => {
  test('the string forms keep working and parse as before; vnet in either form is an object', () => {
    expect(jailSpecSchema.parse({ ...base, network: 'none' }).network).toBe('none');
    expect(jailSpecSchema.parse({ ...base, network: { mode: 'inherit' } }).network).toBe('inherit');
    expect(jailSpecSchema.parse(base).network).toBe('inherit');
    expect(jailSpecSchema.parse({ ...base, network: 'vnet' }).network).toEqual({ mode: 'vnet' });
    expect(jailSpecSchema.parse({ ...base, network: { mode: 'vnet', address: '10.88.0.9', ports: [{ host: 8080, jail: 80 }] } }).network).toEqual({
      mode: 'vnet',
      address: '10.88.0.9',
      ports: [{ host: 8080, jail: 80, protocol: 'tcp' }],
    });
  });
  test.each([
    [{ mode: 'bridge' }, /^network.mode: must be one of "inherit"\|"none"\|"vnet"/],
    ['host', /^network: must be one of "inherit"\|"none"\|"vnet"/],
    [{ mode: 'vnet', address: '10.88.0.300' }, /^network.address: must be an IPv4 address/],
    [{ mode: 'vnet', address: '010.88.0.3' }, /^network.address: must be an IPv4 address/],
    [{ mode: 'vnet', address: '10.88.0.3/16' }, /^network.address: must be an IPv4 address/],
    [{ mode: 'vnet', ports: [{ host: 0, jail: 80 }] }, /^network.ports.0.host: must be a port from 1 to 65535/],
    [{ mode: 'vnet', ports: [{ host: 80, jail: 65536 }] }, /^network.ports.0.jail: must be a port from 1 to 65535/],
    [{ mode: 'vnet', ports: [{ host: 80, jail: 80, protocol: 'sctp' }] }, /^network.ports.0.protocol: /],
    [{ mode: 'vnet', ports: [{ host: 80, jail: 80 }, { host: 80, jail: 81 }] }, /^network.ports.1.host: host port 80\/tcp is published twice/],
    [{ mode: 'inherit', ports: [{ host: 80, jail: 80 }] }, /^network.ports: published ports need mode "vnet"/],
    [{ mode: 'none', address: '10.88.0.3' }, /^network.address: an address needs mode "vnet"/],
    [{ mode: 'vnet', gateway: '10.88.0.1' }, /^network: Unrecognized key: "gateway"/],
  ])('%j is refused naming the field', (network, rule) => {
    expect(refusal({ ...base, network })).toMatch(rule);
  });
  test('the same port number over tcp and udp is two ports, not a duplicate', () => {
    expect(refusal({ ...base, network: { mode: 'vnet', ports: [{ host: 53, jail: 53 }, { host: 53, jail: 53, protocol: 'udp' }] } })).toBeNull();
  });
});

describe('the jail network (--jail-cidr)', () => {
  test.each([
    ['10.88.0.0', /not a CIDR block/],
    ['10.88.0.0/33', /not a CIDR block/],
    ['fd00::/64', /IPv4 block/],
    ['10.88.0.1/16', /host bits set: write 10.88.0.0\/16/],
    ['10.88.0.0/30', /prefix must be from \/8 to \/29/],
    ['10.0.0.0/7', /prefix must be from \/8 to \/29/],
    ['x/16', /not a CIDR block/],
  ])('%s is refused with the rule', (cidr, rule) => {
    expect(() => JailNetwork.parse(cidr)).toThrow(InvalidJailNetwork);
    expect(() => JailNetwork.parse(cidr)).toThrow(rule);
  });
  test('gateway, capacity and what a jail may not hold', () => {
    const n = JailNetwork.parse('10.88.0.0/29');
    expect([n.gateway, n.capacity, n.prefix]).toEqual(['10.88.0.1', 5, 29]);
    expect([...n.candidates()]).toEqual(['10.88.0.2', '10.88.0.3', '10.88.0.4', '10.88.0.5', '10.88.0.6']);
    expect([...n.candidates('10.88.0.5')]).toEqual(['10.88.0.6', '10.88.0.2', '10.88.0.3', '10.88.0.4', '10.88.0.5']);
    expect(n.refuse('10.88.0.0')).toMatch(/network address/);
    expect(n.refuse('10.88.0.1')).toMatch(/gateway/);
    expect(n.refuse('10.88.0.7')).toMatch(/broadcast/);
    expect(n.refuse('10.88.0.8')).toMatch(/outside the jail network 10.88.0.0\/29/);
    expect(n.refuse('10.88.0.4')).toBeNull();
  });
});

describe('addresses, allocated by the scheduler', () => {
  const vnet = (name: string, extra: Record<string, unknown> = {}) => ({ name, network: { mode: 'vnet', ...extra } });

  test('each vnet jail gets its own address, pinned into the command its host gets; inherit jails get none', async () => {
    const h = new SchedulerHarness(['h1']);
    await h.warm();
    await h.apply(vnet('a'), vnet('b'), { name: 'plain' });
    const a = h.placement('a')!.address!;
    const b = h.placement('b')!.address!;
    expect(a).toMatch(/^10\.88\.\d+\.\d+$/);
    expect(b).not.toBe(a);
    expect(h.placement('plain')!.address).toBeUndefined();
    expect(h.sentAddress('a')).toBe(a);
    expect(h.sentAddress('b')).toBe(b);
    expect(h.addresses()).toEqual({ [a]: 'a', [b]: 'b' });
  });

  test('kept across stop/start, a spec change, failover and drain; released by rm', async () => {
    const h = new SchedulerHarness(['h1', 'h2']);
    await h.warm();
    await h.apply(vnet('web'));
    const addr = h.placement('web')!.address!;
    const host = h.placement('web')!.host!;
    await h.call('stop', { name: 'web' });
    await h.call('start', { name: 'web' });
    await h.apply({ ...vnet('web'), env: { A: '1' } });
    expect(h.placement('web')!.address).toBe(addr);
    expect(h.sentAddress('web')).toBe(addr);
    // its host dies: placed elsewhere, same address
    h.kill(host);
    await h.advance(3500);
    const other = host === 'h1' ? 'h2' : 'h1';
    expect(h.placement('web')).toMatchObject({ host: other, address: addr });
    expect(h.sentAddress('web')).toBe(addr);
    // drained off: same address on the new host
    h.revive(host);
    await h.advance(1000);
    await h.call('drain', { host: other });
    await h.advance(2000);
    expect(h.placement('web')).toMatchObject({ host, address: addr });
    expect(h.sentAddress('web')).toBe(addr);
    await h.call('rm', { name: 'web' });
    await h.advance(1000);
    expect(h.placement('web')).toBeUndefined();
    expect(h.addresses()).toEqual({});
  });

  test('an address asked for is given; one held by another jail or outside the network is refused naming the field', async () => {
    const h = new SchedulerHarness(['h1']);
    await h.warm();
    await h.apply(vnet('a', { address: '10.88.7.7' }));
    expect(h.placement('a')!.address).toBe('10.88.7.7');
    await expect(h.apply(vnet('b', { address: '10.88.7.7' }))).rejects.toThrow('jails.0.network.address: 10.88.7.7 is held by jail "a"');
    await expect(h.apply(vnet('b', { address: '10.99.0.2' }))).rejects.toThrow('jails.0.network.address: 10.99.0.2 is outside the jail network 10.88.0.0/16');
    await expect(h.apply(vnet('b', { address: '10.88.0.1' }))).rejects.toThrow(/jails.0.network.address: .*gateway/);
    await expect(h.apply(vnet('b', { address: '10.88.1.1' }), vnet('c', { address: '10.88.1.1' }))).rejects.toThrow('jails.1.network.address: 10.88.1.1 is asked for by jail "b" too');
    expect(h.placement('b')).toBeUndefined();
    // moving a jail to another address it asks for: the old one goes back to the pool
    await h.apply(vnet('a', { address: '10.88.7.8' }));
    expect(h.placement('a')!.address).toBe('10.88.7.8');
    expect(h.sentAddress('a')).toBe('10.88.7.8');
    expect(h.addresses()).toEqual({ '10.88.7.8': 'a' });
    // no longer vnet: no address
    await h.apply({ name: 'a' });
    expect(h.placement('a')!.address).toBeUndefined();
    expect(h.addresses()).toEqual({});
  });

  test('a full pool leaves the next jail unplaced with the reason; an rm frees an address for it', async () => {
    const h = new SchedulerHarness(['h1'], { jailCidr: '10.5.0.0/29' });
    await h.warm();
    await h.apply(...['j0', 'j1', 'j2', 'j3', 'j4'].map((n) => vnet(n)));
    expect(new Set(['j0', 'j1', 'j2', 'j3', 'j4'].map((n) => h.placement(n)!.address)).size).toBe(5);
    await h.apply(vnet('late'));
    expect(h.placement('late')).toMatchObject({ host: null, reason: 'no free address in the jail network 10.5.0.0/29 (all 5 are held)' });
    expect(h.runningOn('late')).toEqual([]);
    const freed = h.placement('j2')!.address;
    await h.call('rm', { name: 'j2' });
    await h.advance(2000);
    expect(h.placement('late')).toMatchObject({ host: 'h1', address: freed });
    expect(h.runningOn('late')).toEqual(['h1']);
  });

  test('an address record left by an rm cut short is swept back into the pool by the leader', async () => {
    const h = new SchedulerHarness(['h1']);
    await h.warm();
    await h.store.addresses.put('10.88.3.3', { v: 1, jail: 'ghost', since: new Date(0).toISOString() }, 0);
    await h.advance(2000);
    expect(h.addresses()).toEqual({});
  });
});
