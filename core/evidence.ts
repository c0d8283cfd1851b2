/**
 * Evidence for the model beyond the anomaly itself: what an SRE would look at for the anomaly's target — a few
 * recent document error messages and the last lines of the container's log. Gathered on the actions worker (the
 * only one with Docker), carried through the workflow's history, so every part is bounded here; untrusted, so every
 * string is redacted and fence-neutralized here and again when the prompt is built.
 */
import { sanitizeUntrusted } from './redact';

/** Distinct document error messages kept, most recent first. */
export const EVIDENCE_ERRORS_MAX = 5;
/** Characters kept of each document error message. */
export const EVIDENCE_ERROR_CHARS = 300;
/** Container log lines asked of Docker (`tail`). */
export const EVIDENCE_LOG_LINES = 20;
/** Characters kept of each log line. */
export const EVIDENCE_LOG_LINE_CHARS = 200;
/** Characters kept of the whole log tail (the last lines win). */
export const EVIDENCE_LOG_CHARS = 2_000;

/** Anomaly types never put to the LLM (their only remedy is escalation): no evidence is gathered for them. */
export const EVIDENCE_SKIPPED_TYPES: readonly string[] = ['llm_unavailable', 'monitoring_degraded'];

export interface DocumentErrorEvidence {
  /** A document that failed this way (the most recent). */
  documentId: number;
  status: string;
  /** The error message, redacted and bounded. */
  error: string;
  /** Documents with this same message among those read. */
  count: number;
}

export interface AnalysisEvidence {
  /** Up to EVIDENCE_ERRORS_MAX distinct recent error messages of the target's documents or stage. */
  documentErrors: DocumentErrorEvidence[];
  /** The last lines of the target's container log, when there is a container to read. */
  containerLog?: { container: string; lines: string[] };
  /** What could not be read (one short line each), so the model and the audit know the evidence is partial. */
  unavailable?: string[];
}

/** Document rows as read from `documents`, most recent first. */
export interface ErrorRow {
  id: number | string;
  status: string;
  error: string | null;
}

/** Distinct messages (compared after redaction and trimming), most recent first, bounded. */
export function distinctDocumentErrors(rows: readonly ErrorRow[], max = EVIDENCE_ERRORS_MAX): DocumentErrorEvidence[] {
  const byText = new Map<string, DocumentErrorEvidence>();
  for (const row of rows) {
    if (typeof row.error !== 'string' || row.error.trim() === '') continue;
    const error = sanitizeUntrusted(row.error.trim(), EVIDENCE_ERROR_CHARS);
    const seen = byText.get(error);
    if (seen) {
      seen.count += 1;
      continue;
    }
    if (byText.size >= max) continue;
    const id = Number(row.id);
    byText.set(error, {
      documentId: Number.isSafeInteger(id) ? id : -1,
      status: sanitizeUntrusted(String(row.status), 20),
      error,
      count: 1,
    });
  }
  return [...byText.values()];
}

/**
 * Docker's log stream of a container without a TTY is multiplexed: frames of an 8-byte header (stream 0/1/2, three
 * zero bytes, a big-endian length) and the payload. With a TTY it is raw text. Either way: the text.
 */
export function demuxDockerLog(buf: Uint8Array): string {
  const looksFramed = (at: number) =>
    at + 8 <= buf.length && buf[at]! <= 2 && buf[at + 1] === 0 && buf[at + 2] === 0 && buf[at + 3] === 0;
  const decoder = new TextDecoder('utf-8');
  if (!looksFramed(0)) return decoder.decode(buf);
  let text = '';
  let at = 0;
  while (looksFramed(at)) {
    const len = buf[at + 4]! * 0x1000000 + (buf[at + 5]! << 16) + (buf[at + 6]! << 8) + buf[at + 7]!;
    text += decoder.decode(buf.subarray(at + 8, Math.min(buf.length, at + 8 + len)), { stream: true });
    at += 8 + len;
  }
  if (at < buf.length) text += decoder.decode(buf.subarray(at), { stream: true });
  return text + decoder.decode();
}

/** The last lines of a log, each redacted and bounded, the whole at most EVIDENCE_LOG_CHARS (the last lines win). */
export function logTail(text: string, maxLines = EVIDENCE_LOG_LINES, maxChars = EVIDENCE_LOG_CHARS): string[] {
  // Only the end matters: never split megabytes.
  const end = text.length > maxLines * 4_000 ? text.slice(-maxLines * 4_000) : text;
  const lines = end
    .split(/\r?\n/)
    .map((l) => l.trimEnd())
    .filter((l) => l.trim() !== '')
    .slice(-maxLines)
    .map((l) => sanitizeUntrusted(l, EVIDENCE_LOG_LINE_CHARS));
  const kept: string[] = [];
  let total = 0;
  for (let i = lines.length - 1; i >= 0; i--) {
    total += lines[i]!.length + 1;
    if (total > maxChars) break;
    kept.unshift(lines[i]!);
  }
  return kept;
}

/**
 * Evidence re-bounded (whatever produced it: it crossed a worker boundary): at most EVIDENCE_ERRORS_MAX errors,
 * the log within its limits, every string sanitized. Never throws.
 */
export function boundEvidence(evidence: unknown): AnalysisEvidence | undefined {
  if (typeof evidence !== 'object' || evidence === null) return undefined;
  const e = evidence as Record<string, unknown>;
  const errors = Array.isArray(e.documentErrors) ? e.documentErrors.slice(0, EVIDENCE_ERRORS_MAX) : [];
  const documentErrors: DocumentErrorEvidence[] = errors.flatMap((d: unknown) => {
    if (typeof d !== 'object' || d === null) return [];
    const r = d as Record<string, unknown>;
    if (typeof r.error !== 'string') return [];
    const id = Number(r.documentId);
    const count = Number(r.count);
    return [
      {
        documentId: Number.isSafeInteger(id) ? id : -1,
        status: sanitizeUntrusted(typeof r.status === 'string' ? r.status : '', 20),
        error: sanitizeUntrusted(r.error, EVIDENCE_ERROR_CHARS),
        count: Number.isSafeInteger(count) && count > 0 ? Math.min(count, 1_000_000) : 1,
      },
    ];
  });
  const out: AnalysisEvidence = { documentErrors };
  const log = e.containerLog as { container?: unknown; lines?: unknown } | undefined;
  if (log && typeof log.container === 'string' && Array.isArray(log.lines)) {
    out.containerLog = {
      container: sanitizeUntrusted(log.container, 100),
      lines: logTail(log.lines.filter((l): l is string => typeof l === 'string').join('\n')),
    };
  }
  if (Array.isArray(e.unavailable)) {
    out.unavailable = e.unavailable
      .filter((u): u is string => typeof u === 'string')
      .slice(0, 3)
      .map((u) => sanitizeUntrusted(u, 160));
  }
  return out;
}
