/**
 * The runbooks file as the healing worker reads it: RUNBOOKS_FILE, or the built-in runbooks/default.yaml (shipped
 * beside the code: the repository's in development, dist/runbooks/ in a build and the image). Validated at start-up
 * (`checkRunbooksFile`, workers/env.ts) and by `selfheal doctor`; the worker re-reads it when its mtime changes, so an
 * edit applies to the next decision, also of healings already waiting.
 */
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { parseRunbooks, resolveRunbook, type ResolvedRunbook, type RunbookFile } from '../core/runbook-file';
import type { Result } from '../core/result';
import type { AnomalyType } from '../core/types';
import { errorMessage } from '../core/errors';

/** The built-in runbook, the default of RUNBOOKS_FILE. */
export const DEFAULT_RUNBOOKS_FILE = path.resolve(__dirname, '../runbooks/default.yaml');

/** Reads and validates a runbooks file; an unreadable file is an error naming it. */
export function readRunbooksFile(file: string | undefined): Result<RunbookFile> {
  const name = file ?? DEFAULT_RUNBOOKS_FILE;
  let text: string;
  try {
    text = readFileSync(name, 'utf8');
  } catch (err) {
    return { ok: false, error: `${name}: cannot be read: ${errorMessage(err)}` };
  }
  return parseRunbooks(text, name);
}

export interface RunbookSource {
  /** The runbook of an anomaly (type and target). Throws when the file never was valid. */
  resolve(type: AnomalyType, target: string): ResolvedRunbook;
}

/**
 * A cached reader of the runbooks file: a stat per call, a re-read when the mtime or size changed. A file edited into
 * an invalid state keeps the last valid version in force (the error is reported through `onInvalid`): a typo does not
 * take the runbooks away from a running worker; `selfheal doctor` and the next start-up name it.
 */
export function createRunbookSource(
  file: string | undefined,
  onInvalid: (error: string) => void = () => undefined,
): RunbookSource {
  const name = file ?? DEFAULT_RUNBOOKS_FILE;
  let current: RunbookFile | undefined;
  let stamp = '';
  const load = () => {
    let next = '';
    try {
      const s = statSync(name);
      next = `${s.mtimeMs}:${s.size}`;
    } catch (err) {
      next = `unreadable: ${errorMessage(err)}`;
    }
    if (next === stamp) return;
    stamp = next;
    const read = readRunbooksFile(name);
    if (read.ok) current = read.value;
    else onInvalid(read.error);
  };
  // Read now, when the worker starts (right after its start-up check): an edit that breaks the file before the first
  // decision keeps this version in force too.
  load();
  return {
    resolve(type, target) {
      load();
      if (!current) throw new Error(`no valid runbooks file: ${name}`);
      return resolveRunbook(current, type, target, path.basename(name));
    },
  };
}
