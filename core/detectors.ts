/**
 * Pure detectors: `(snapshot, history, thresholds, now) => Anomaly[]`. No I/O, no clock: `now` is passed in.
 * `history` is the previous cycles' records, oldest first. Noise control (consecutive cycles to fire and to
 * clear) is applied afterwards by `applyHysteresis`, so each detector answers only "is it wrong right now".
 */
export {
  EVIDENCE_ID_CAP,
  LOCK_EVIDENCE_CAP,
  sourcesToVerify,
  stageContainers,
  type Detector,
  type Thresholds,
} from './detectors/common';
export { detectLlmUnavailable, detectUnhealthyContainer } from './detectors/containers';
export { hungWorkers, PROGRESS_SOURCE, stillHung } from './detectors/hung';
export {
  applyHysteresis,
  detectAll,
  evaluateCycle,
  isBlind,
  PIPELINE_DETECTORS,
  refiredAfterGone,
  type HysteresisResult,
} from './detectors/cycle';
export {
  detectLostDocuments,
  detectPoisonDocument,
  detectStaleLocks,
  detectStuckDocuments,
  LOST_EVIDENCE_CAP,
  lostStill,
} from './detectors/documents';
export { detectOrphanedEntries, detectStalledQueue } from './detectors/queues';
export {
  detectErrorRateSpike,
  detectProcessingTimeAnomaly,
  stageBaselineMs,
  suspectsStillOutliers,
} from './detectors/rates';
