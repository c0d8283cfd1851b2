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
