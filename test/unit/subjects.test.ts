// The NATS names of jailfleet, as the running services and a host's credentials see them: a
// changed subject would leave an agent of the previous build deaf to the scheduler, and a host
// whose name is not the third token could not be confined to its own subjects.
import { describe, expect, test } from '@jest/globals';
import { agentConsumerName, API_VERBS, STATUS_QUERIES, subjects, subjectTokens } from '../../contracts/index.js';

/** NATS subject matching: `*` is one token, `>` one or more trailing tokens. */
function matches(pattern: string, subject: string): boolean {
  const p = pattern.split('.');
  const s = subject.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return s.length > i;
    if (i >= s.length || (p[i] !== '*' && p[i] !== s[i])) return false;
  }
  return p.length === s.length;
}

describe('subjects', () => {
  test('each message goes on the subject every build of the fleet agrees on', () => {
    expect(subjects.cmd('h1')).toBe('jailfleet.cmd.h1');
    expect(subjects.evt('h1', 'web')).toBe('jailfleet.evt.h1.web');
    expect(subjects.evtOfJail('web')).toBe('jailfleet.evt.*.web');
    expect(subjects.hb('h1')).toBe('jailfleet.hb.h1');
    expect(subjects.api('apply')).toBe('jailfleet.api.apply');
    expect(subjects.status('ps')).toBe('jailfleet.status.ps');
    expect(subjects.exec('h1')).toBe('jailfleet.agent.h1.exec');
    expect(subjects.logs('h1')).toBe('jailfleet.agent.h1.logs');
    expect(agentConsumerName('h1')).toBe('agent-h1');
  });

  test('the wildcards the scheduler and status service listen on catch every host, and nothing else', () => {
    expect(matches(subjects.cmdAll, subjects.cmd('h1'))).toBe(true);
    expect(matches(subjects.evtAll, subjects.evt('h1', 'web'))).toBe(true);
    expect(matches(subjects.hbAll, subjects.hb('h1'))).toBe(true);
    expect(matches(subjects.evtOfJail('web'), subjects.evt('h2', 'web'))).toBe(true);
    expect(matches(subjects.evtOfJail('web'), subjects.evt('h2', 'db'))).toBe(false);
    expect(matches(subjects.hbAll, subjects.evt('h1', 'web'))).toBe(false);
    expect(matches(subjects.cmdAll, subjects.hb('h1'))).toBe(false);
  });

  test('the host is the third token of every per-host subject, so credentials can be confined to it', () => {
    const perHost = [subjects.cmd('h1'), subjects.evt('h1', 'web'), subjects.hb('h1'), subjects.exec('h1'), subjects.logs('h1')];
    for (const s of perHost) expect(s.split('.')[2]).toBe('h1');
  });

  test('an event or heartbeat subject tells its host and jail back', () => {
    expect(subjectTokens(subjects.evt('h1', 'web'))).toEqual({ host: 'h1', jail: 'web' });
    expect(subjectTokens(subjects.hb('h1'))).toEqual({ host: 'h1', jail: undefined });
  });

  test('every API verb and status query has its own subject', () => {
    const all = [...API_VERBS.map((v) => subjects.api(v)), ...STATUS_QUERIES.map((q) => subjects.status(q))];
    expect(new Set(all).size).toBe(API_VERBS.length + STATUS_QUERIES.length);
  });
});
