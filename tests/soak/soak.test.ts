/**
 * The 5-minute chaos soak of CI (`npm run bench -- soak --minutes 5`, bench/soak.ts): the reference pipeline under
 * steady load while every fault of `selfheal chaos` is injected at seeded random times, overlapping, auto-fix on;
 * then the drain and the checks. Nothing lost, nothing processed twice, no remediation of a healthy target. The seed is
 * fixed (SOAK_SEED overrides it) so that a failure can be run again with `npm run bench -- soak --minutes 5 --seed N`;
 * the times of the faults still depend on the machine.
 */
import { describe, expect, it } from 'vitest';
import { soakSummary, soakWithSelfheal } from '../../bench/soak';

const SEED = Number(process.env.SOAK_SEED ?? 7);
const MINUTES = 5;

describe(`chaos soak: ${MINUTES} minutes, seed ${SEED}`, () => {
  it('loses no document, processes none twice, remediates no healthy target', async () => {
    const r = await soakWithSelfheal({ minutes: MINUTES, seed: SEED, drainSeconds: 300 });
    const summary = soakSummary(r).join('\n');
    console.log(`${summary}\n${JSON.stringify(r.table)}`);
    expect(r.documents.lost, summary).toBe(0);
    expect(r.documents.processedTwice, summary).toBe(0);
    expect(r.falseRemediations, summary).toEqual([]);
    // Every fault was injected and seen through: none still open after the drain.
    expect(r.faults.length, summary).toBeGreaterThan(5);
    expect(
      r.faults.filter((f) => f.outcome === 'open'),
      summary,
    ).toEqual([]);
  });
});
