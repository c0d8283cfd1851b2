import { describe, expect, it } from 'vitest';
import {
  composeService,
  dockerHealth,
  healthLogEvidence,
  HEALTH_LOG_CHARS,
  scopeLabel,
  stopTimeoutFromLabels,
} from '../../core/container-scope';

describe('container scope from labels (autoheal-compatible)', () => {
  it('selfheal.enable=true or autoheal=true; the autoheal label can be turned off', () => {
    expect(scopeLabel({ 'selfheal.enable': 'true' }, true)).toBe('selfheal.enable=true');
    expect(scopeLabel({ autoheal: 'true' }, true)).toBe('autoheal=true');
    expect(scopeLabel({ autoheal: 'true' }, false)).toBeUndefined();
    expect(scopeLabel({ 'selfheal.enable': 'true', autoheal: 'true' }, false)).toBe('selfheal.enable=true');
    expect(scopeLabel({ autoheal: 'false', 'selfheal.enable': 'yes' }, true)).toBeUndefined();
    expect(scopeLabel(undefined, true)).toBeUndefined();
  });

  it('stop timeout: selfheal.stop.timeout first, then autoheal.stop.timeout; a bad value is reported and skipped', () => {
    expect(stopTimeoutFromLabels({ 'autoheal.stop.timeout': '20' })).toEqual({
      seconds: 20,
      label: 'autoheal.stop.timeout',
    });
    expect(stopTimeoutFromLabels({ 'selfheal.stop.timeout': '3', 'autoheal.stop.timeout': '20' })).toEqual({
      seconds: 3,
      label: 'selfheal.stop.timeout',
    });
    const bad = stopTimeoutFromLabels({ 'selfheal.stop.timeout': '1e9', 'autoheal.stop.timeout': '5' });
    expect(bad.seconds).toBe(5);
    expect(bad.invalid).toEqual(['selfheal.stop.timeout="1e9" is not a whole number of seconds']);
    expect(stopTimeoutFromLabels({ 'selfheal.stop.timeout': '-1' })).toEqual({
      invalid: ['selfheal.stop.timeout="-1" is not a whole number of seconds'],
    });
    // Above what the restart's activity can wait for: cut to 60 s, and said.
    expect(stopTimeoutFromLabels({ 'autoheal.stop.timeout': '300' })).toEqual({
      seconds: 60,
      label: 'autoheal.stop.timeout',
      clamped: 'autoheal.stop.timeout=300 is above 60 s: 60 s used',
    });
    expect(stopTimeoutFromLabels({})).toEqual({});
  });

  it('compose service and Docker health status', () => {
    expect(composeService({ 'com.docker.compose.project': 'shop', 'com.docker.compose.service': 'web' })).toBe(
      'shop/web',
    );
    expect(composeService({ 'com.docker.compose.service': 'web' })).toBe('web');
    expect(composeService({})).toBeUndefined();
    expect(['starting', 'healthy', 'unhealthy', 'none', undefined].map(dockerHealth)).toEqual([
      'starting',
      'healthy',
      'unhealthy',
      undefined,
      undefined,
    ]);
  });

  it('health-check evidence: the last three, redacted and truncated', () => {
    const log = [1, 2, 3, 4].map((i) => ({
      ExitCode: 1,
      Output: `check ${i} failed: GET http://admin:hunter2@db.local/ping ${'x'.repeat(500)}`,
      End: `2026-12-04T10:00:0${i}.000Z`,
    }));
    const evidence = healthLogEvidence(log);
    expect(evidence).toHaveLength(3);
    expect(evidence[0]!.output).toMatch(/^check 2 failed/);
    expect(evidence[2]!.at).toBe(Date.parse('2026-12-04T10:00:04.000Z'));
    for (const e of evidence) {
      expect(e.output).not.toContain('hunter2');
      expect(e.output.length).toBeLessThanOrEqual(HEALTH_LOG_CHARS + 20);
    }
    expect(healthLogEvidence(undefined)).toEqual([]);
  });
});
