/**
 * Runbooks as files (RUNBOOKS_FILE): per anomaly type, and optionally per target glob, the action ladder, whether
 * approval is always needed, the verify delay, the restart cooldown and the circuit breaker's limit. Pure: the text
 * is read elsewhere (activities/runbook-source.ts); here it is parsed, validated with errors that name the file, the
 * line and the field, and resolved for an anomaly. A field an entry leaves out keeps the configured value
 * (RESTART_COOLDOWN, VERIFY_DELAY, AUTO_FIX_ENABLED and MIN_CONFIDENCE, a breaker of 3 restarts per hour).
 */
import { isMap, isScalar, LineCounter, parseDocument, type Document } from 'yaml';
import { z } from 'zod';
import { ALLOWED_ACTIONS } from './plan';
import type { Result } from './result';
import { globMatch } from './safety';
import { AnomalyType, type ActionType } from './types';

/** Whether acting waits for a human: `always`, or as AUTO_FIX_ENABLED and MIN_CONFIDENCE decide (`policy`). */
export const RunbookApproval = { always: 'always', policy: 'policy' } as const;
export type RunbookApproval = (typeof RunbookApproval)[keyof typeof RunbookApproval];

const wholeSeconds = (min: number) =>
  z
    .number({ error: `expected a whole number of seconds >= ${min}` })
    .int({ error: `expected a whole number of seconds >= ${min}` })
    .min(min, { error: `expected a whole number of seconds >= ${min}` });

const entrySchema = z
  .strictObject({
    type: z.enum(Object.values(AnomalyType), {
      error: `expected an anomaly type (${Object.values(AnomalyType).join(', ')})`,
    }),
    target: z
      .string({ error: 'expected a glob of the anomaly target (a stage, a container, a worker id)' })
      .min(1, { error: 'expected a non-empty glob' })
      .optional(),
    // Strings, checked against the type's actions below: the error then names the type and its actions.
    ladder: z
      .array(z.string({ error: 'expected an action name' }), { error: 'expected a list of actions' })
      .min(1, { error: 'expected at least one action' })
      .optional(),
    approval: z.enum(Object.values(RunbookApproval), { error: 'expected always or policy' }).optional(),
    verifyDelaySeconds: wholeSeconds(0).optional(),
    cooldownSeconds: wholeSeconds(0).optional(),
    breaker: z
      .strictObject({
        restarts: z
          .number({ error: 'expected a whole number of restarts >= 1' })
          .int({ error: 'expected a whole number of restarts >= 1' })
          .min(1, { error: 'expected a whole number of restarts >= 1' }),
        windowSeconds: wholeSeconds(1),
      })
      .optional(),
  })
  .superRefine((entry, ctx) => {
    const allowed: readonly string[] = ALLOWED_ACTIONS[entry.type];
    const seen = new Set<string>();
    entry.ladder?.forEach((action, i) => {
      if (!allowed.includes(action)) {
        ctx.addIssue({
          code: 'custom',
          path: ['ladder', i],
          message: `"${action}" is not an action of ${entry.type} (allowed: ${allowed.join(', ')})`,
        });
      } else if (seen.has(action)) {
        ctx.addIssue({ code: 'custom', path: ['ladder', i], message: `"${action}" is already on the ladder` });
      }
      seen.add(action);
    });
  });

const fileSchema = z
  .strictObject({
    version: z.literal(1, { error: 'expected 1 (the only format version)' }),
    runbooks: z.array(entrySchema, { error: 'expected a list of runbook entries' }),
  })
  .superRefine((file, ctx) => {
    const seen = new Map<string, number>();
    file.runbooks.forEach((entry, i) => {
      const key = `${entry.type}\u0000${entry.target ?? ''}`;
      const first = seen.get(key);
      if (first !== undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['runbooks', i, entry.target === undefined ? 'type' : 'target'],
          message: `runbooks[${first}] already covers ${entry.type}${entry.target === undefined ? ' (no target)' : ` with target "${entry.target}"`}`,
        });
      } else seen.set(key, i);
    });
  });

export type RunbookEntry = Omit<z.output<typeof entrySchema>, 'ladder'> & { ladder?: ActionType[] };
export interface RunbookFile {
  version: 1;
  runbooks: RunbookEntry[];
}

/** What applies to one anomaly: the ladder always; the other fields only where the entry sets them. */
export interface ResolvedRunbook {
  /** Actions in order (rung 0 first); `escalate_to_human` is allowed at every rung even when not listed. */
  ladder: readonly ActionType[];
  approval: RunbookApproval;
  verifyDelaySeconds?: number;
  cooldownSeconds?: number;
  breaker?: { restarts: number; windowSeconds: number };
  /** Where it came from, for reasons and the audit: `<file> runbooks[i]`, or `built-in` when no entry matched. */
  source: string;
}

/**
 * Line (1-based) of the node at `path` in the document, or of its nearest ancestor that exists. A field of a map is
 * named by its key's line (a block value such as `breaker:` starts on the next line).
 */
function lineOf(doc: Document, counter: LineCounter, path: readonly PropertyKey[]): number | undefined {
  for (let n = path.length; n >= 0; n--) {
    const last = path[n - 1];
    if (n > 0 && typeof last === 'string') {
      const parent = n === 1 ? doc.contents : doc.getIn(path.slice(0, n - 1) as unknown[], true);
      if (isMap(parent)) {
        const pair = parent.items.find((item) => isScalar(item.key) && item.key.value === last);
        const range = (pair?.key as { range?: [number, number, number] } | undefined)?.range;
        if (range) return counter.linePos(range[0]).line;
      }
      continue;
    }
    const node = n === 0 ? doc.contents : doc.getIn(path.slice(0, n) as unknown[], true);
    const range = (node as { range?: [number, number, number] } | undefined)?.range;
    if (range) return counter.linePos(range[0]).line;
  }
  return undefined;
}

/** `runbooks[1].ladder[0]` */
function pathText(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : `${out ? '.' : ''}${String(p)}`;
  return out || '(file)';
}

/**
 * Parses and validates a runbooks file. Errors are one line each, `<name>:<line>: <field>: <what is wrong>`, every
 * problem listed (YAML syntax errors first, then the schema's), joined with newlines. Never throws.
 */
export function parseRunbooks(text: string, name: string): Result<RunbookFile> {
  const counter = new LineCounter();
  const doc = parseDocument(text, { lineCounter: counter, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const lines = doc.errors.map((e) => {
      const line = e.linePos?.[0]?.line ?? counter.linePos(e.pos[0]).line;
      return `${name}:${line}: ${e.message.split('\n')[0]}`;
    });
    return { ok: false, error: lines.join('\n') };
  }
  const parsed = fileSchema.safeParse(doc.toJS());
  if (parsed.success) return { ok: true, value: parsed.data as RunbookFile };
  const problems = parsed.error.issues.map((issue) => {
    let path: PropertyKey[] = [...issue.path];
    let message = issue.message;
    if (issue.code === 'unrecognized_keys') {
      path = [...path, issue.keys[0]!];
      message = `unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${k}"`).join(', ')}`;
    }
    const line = lineOf(doc, counter, path);
    return { line: line ?? 0, text: `${name}${line === undefined ? '' : `:${line}`}: ${pathText(path)}: ${message}` };
  });
  // In the order of the file (sort is stable: problems of one line keep the schema's order).
  problems.sort((a, b) => a.line - b.line);
  return { ok: false, error: problems.map((p) => p.text).join('\n') };
}

/**
 * The runbook of an anomaly: the first entry of its type whose `target` glob matches the target, else its type's
 * entry without a target, else the built-in ladder (ALLOWED_ACTIONS) with nothing else set.
 */
export function resolveRunbook(
  file: RunbookFile | undefined,
  type: AnomalyType,
  target: string,
  name = 'runbooks',
): ResolvedRunbook {
  const entries = (file?.runbooks ?? []).map((entry, i) => ({ entry, i })).filter(({ entry }) => entry.type === type);
  const match =
    entries.find(({ entry }) => entry.target !== undefined && globMatch(entry.target, target)) ??
    entries.find(({ entry }) => entry.target === undefined);
  if (!match) return { ladder: ALLOWED_ACTIONS[type], approval: 'policy', source: 'built-in' };
  const { entry, i } = match;
  return {
    ladder: entry.ladder ?? ALLOWED_ACTIONS[type],
    approval: entry.approval ?? 'policy',
    ...(entry.verifyDelaySeconds !== undefined ? { verifyDelaySeconds: entry.verifyDelaySeconds } : {}),
    ...(entry.cooldownSeconds !== undefined ? { cooldownSeconds: entry.cooldownSeconds } : {}),
    ...(entry.breaker ? { breaker: entry.breaker } : {}),
    source: `${name} runbooks[${i}]`,
  };
}
