import { readFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'vitest';
import type { Anomaly } from '../../core/types';

/** The analysis fixtures: one anomaly of each kind (tests/fixtures/analysis-anomalies.json) and the containers. */
export const analysisFixtures = JSON.parse(
  readFileSync(path.join(__dirname, '../fixtures/analysis-anomalies.json'), 'utf8'),
) as { containers: string[]; anomalies: Record<string, Anomaly> };

/** The fenced data block of a user prompt, its fence, and what lies outside it. */
export function splitPrompt(user: string) {
  const m = /^<<<(ANOMALY-DATA-[0-9a-f]{12})>>>$/m.exec(user);
  expect(m).not.toBeNull();
  const fence = m![1]!;
  const start = user.indexOf(`<<<${fence}>>>\n`) + fence.length + 7;
  const end = user.indexOf(`\n<<<END-${fence}>>>`);
  expect(end).toBeGreaterThan(start);
  return { fence, data: user.slice(start, end), outside: user.slice(0, start) + user.slice(end) };
}

/** The fallback cause each detailed reason is recorded as (core/fallback-cause.ts). */
const EXPECTED_CAUSE: Record<string, string> = {
  down: 'unavailable',
  error: 'unavailable',
  timeout: 'timeout',
  busy: 'timeout',
  invalid: 'invalid_reply',
  inapplicable: 'invalid_reply',
  disallowed: 'unsafe_action',
  suspect: 'unsafe_action',
};

/** The fallback cause expected for a detailed reason given as a pattern anchored on its word (`/^timeout/`). */
export function expectedCause(reason: RegExp): string | undefined {
  return EXPECTED_CAUSE[/^\^(\w+)/.exec(reason.source)![1]!];
}
