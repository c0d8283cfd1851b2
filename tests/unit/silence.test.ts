/** Silences: which one holds an anomaly when (core/silence.ts), and the checks of `selfheal silence add`. */
import { describe, expect, it } from 'vitest';
import {
  matchingSilence,
  parseSilenceAdd,
  parseSilenceDuration,
  silenceMatches,
  silenceNote,
  silenceState,
  type Silence,
} from '../../core/silence';

const T0 = Date.parse('2026-06-01T10:00:00Z');
const H = 3_600_000;

function silence(over: Partial<Silence>): Silence {
  return {
    id: 1,
    anomalyType: null,
    targetGlob: null,
    startsAt: T0,
    endsAt: T0 + H,
    reason: 'deploy',
    createdBy: 'alice',
    createdAt: T0,
    removedAt: null,
    removedBy: null,
    ...over,
  };
}

const worker = { type: 'unhealthy_container', target: 'pipeline-extract-1' };

describe('silence matching', () => {
  it('matches by type and target glob while active; none of either means any', () => {
    expect(silenceMatches(silence({}), worker, T0 + 1)).toBe(true);
    expect(silenceMatches(silence({ anomalyType: 'unhealthy_container' }), worker, T0 + 1)).toBe(true);
    expect(silenceMatches(silence({ anomalyType: 'stalled_queue' }), worker, T0 + 1)).toBe(false);
    expect(silenceMatches(silence({ targetGlob: 'pipeline-*' }), worker, T0 + 1)).toBe(true);
    expect(silenceMatches(silence({ targetGlob: 'pipeline-extract-?' }), worker, T0 + 1)).toBe(true);
    expect(silenceMatches(silence({ targetGlob: 'pipeline-[ab]*' }), worker, T0 + 1)).toBe(false);
    expect(silenceMatches(silence({ targetGlob: 'pipeline' }), worker, T0 + 1)).toBe(false);
    // A glob's dot is a dot, not any character.
    expect(silenceMatches(silence({ targetGlob: 'a.b' }), { ...worker, target: 'axb' }, T0 + 1)).toBe(false);
  });

  it('an expired, removed or not yet started silence changes nothing', () => {
    expect(silenceMatches(silence({}), worker, T0 + H)).toBe(false);
    expect(silenceState(silence({}), T0 + H)).toBe('expired');
    expect(silenceMatches(silence({ removedAt: T0 + 5, removedBy: 'bob' }), worker, T0 + 10)).toBe(false);
    expect(silenceState(silence({ removedAt: T0 + 5 }), T0 + 10)).toBe('removed');
    expect(silenceMatches(silence({ startsAt: T0 + 10 }), worker, T0 + 5)).toBe(false);
    expect(silenceState(silence({ startsAt: T0 + 10 }), T0 + 5)).toBe('pending');
    expect(silenceState(silence({}), T0)).toBe('active');
  });

  it('the lowest matching id wins; none matching gives undefined', () => {
    const list = [
      silence({ id: 7, targetGlob: 'pipeline-*' }),
      silence({ id: 3, anomalyType: 'stalled_queue' }),
      silence({ id: 5 }),
      silence({ id: 2, endsAt: T0 + 1 }),
    ];
    expect(matchingSilence(list, worker, T0 + 10)?.id).toBe(5);
    expect(matchingSilence(list, { type: 'stalled_queue', target: 'extract' }, T0 + 10)?.id).toBe(3);
    expect(matchingSilence(list.slice(0, 2), { type: 'stale_locks', target: 'extract' }, T0 + 10)).toBeUndefined();
    expect(silenceNote(silence({ id: 12 }))).toBe('silenced by #12 (alice: deploy) until 2026-06-01T11:00:00.000Z');
  });
});

describe('silence add: durations and checks', () => {
  it('parses durations', () => {
    expect(parseSilenceDuration('30m')).toBe(30 * 60_000);
    expect(parseSilenceDuration('1h')).toBe(H);
    expect(parseSilenceDuration('2h30m')).toBe(2.5 * H);
    expect(parseSilenceDuration('1d')).toBe(24 * H);
    expect(parseSilenceDuration(' 90s ')).toBe(90_000);
    for (const bad of ['', '1', 'h', '1x', '1h-', '-1h', '1.5h', 'forever']) {
      expect(() => parseSilenceDuration(bad), bad).toThrow(/^--for: expected a duration such as 30m/);
    }
    expect(() => parseSilenceDuration('0m')).toThrow('--for: the duration must be longer than 0');
  });

  it('builds the silence from valid options, --by defaulting to the OS user', () => {
    expect(
      parseSilenceAdd({ type: 'unhealthy_container', target: 'web-*', for: '1h', reason: ' deploy v2 ' }, T0, 'ops'),
    ).toEqual({
      anomalyType: 'unhealthy_container',
      targetGlob: 'web-*',
      startsAt: T0,
      endsAt: T0 + H,
      reason: 'deploy v2',
      createdBy: 'ops',
    });
    expect(parseSilenceAdd({ until: '2026-06-01T12:30:00Z', reason: 'x', by: 'bob' }, T0, 'ops')).toMatchObject({
      anomalyType: null,
      targetGlob: null,
      endsAt: T0 + 2.5 * H,
      createdBy: 'bob',
    });
  });

  it('refuses bad options with one line each', () => {
    const bad: [Record<string, string>, RegExp][] = [
      [{ reason: 'x' }, /^give exactly one of --for DURATION/],
      [{ for: '1h', until: '2026-06-01T12:00:00Z', reason: 'x' }, /^give exactly one of --for/],
      [{ for: 'soon', reason: 'x' }, /^--for: expected a duration/],
      [{ until: '2026-06-01T09:00:00Z', reason: 'x' }, /^--until: 2026-06-01T09:00:00.000Z is in the past$/],
      [{ until: 'tomorrow', reason: 'x' }, /^--until: expected an ISO time/],
      [{ until: '2026-06-02', reason: 'x' }, /^--until: expected an ISO time/],
      [{ for: '1h' }, /^--reason: say why/],
      [{ for: '1h', reason: '  ' }, /^--reason: say why/],
      [
        { for: '1h', reason: 'x', type: 'disk_full' },
        /^--type: unknown anomaly type "disk_full": expected stalled_queue, /,
      ],
      [{ for: '1h', reason: 'x', target: ' ' }, /^--target: an empty glob/],
      [{ for: '31d', reason: 'x' }, /^a silence lasts at most 30 days$/],
      [{ for: '1h', reason: 'x', by: ' ' }, /^--by: must name who silences$/],
    ];
    for (const [opts, message] of bad) {
      expect(() => parseSilenceAdd(opts, T0, 'ops'), JSON.stringify(opts)).toThrow(message);
    }
  });
});
