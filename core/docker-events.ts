/**
 * The Docker event stream, read for detection (workers/docker-events.ts subscribes): which container events make
 * a monitoring cycle run at once, and which say that a container was stopped on purpose. Pure.
 */

/** The container events subscribed to. */
export const WATCHED_EVENTS = ['health_status', 'die', 'start', 'stop', 'kill', 'oom', 'destroy'] as const;

/** One event of `GET /events` (the fields read here). */
export interface DockerEventMessage {
  Type?: string;
  Action?: string;
  status?: string;
  Actor?: { ID?: string; Attributes?: Record<string, string> };
  /** epoch ns. */
  timeNano?: number;
  time?: number;
}

/** A container stopped on purpose: when, and how it was told (`docker stop`, or a kill with SIGTERM or SIGINT). */
export interface StoppedOnPurpose {
  at: number;
  how: string;
}

export type EventMeaning =
  /** Something to detect now: it died, ran out of memory, or its HEALTHCHECK says unhealthy. */
  | { kind: 'detect'; name: string; why: string }
  /** Stopped on purpose: left alone until it starts again (or is removed). */
  | { kind: 'stopped'; name: string; stop: StoppedOnPurpose }
  /** It (re)started: whatever stop was recorded no longer holds. */
  | { kind: 'started'; name: string }
  /** It was removed: its stop record goes with it (a container of the same name later is another one). */
  | { kind: 'removed'; name: string }
  | { kind: 'ignore' };

/** Signals `docker stop` sends, and what `docker kill -s` sends when a human stops a container by hand. */
const STOP_SIGNALS = new Set(['15', '2', 'SIGTERM', 'SIGINT', 'TERM', 'INT']);

/** What an event means for detection. `health_status: healthy|starting` and the rest are ignored. */
export function eventMeaning(e: DockerEventMessage, now: number): EventMeaning {
  if (e.Type !== undefined && e.Type !== 'container') return { kind: 'ignore' };
  const name = e.Actor?.Attributes?.name;
  const action = e.Action ?? e.status ?? '';
  if (!name) return { kind: 'ignore' };
  const at = e.timeNano ? Math.floor(e.timeNano / 1e6) : e.time ? e.time * 1000 : now;
  if (action === 'start') return { kind: 'started', name };
  if (action === 'destroy') return { kind: 'removed', name };
  if (action === 'stop') return { kind: 'stopped', name, stop: { at, how: 'docker stop' } };
  if (action === 'kill') {
    const signal = e.Actor?.Attributes?.signal ?? '';
    return STOP_SIGNALS.has(signal)
      ? { kind: 'stopped', name, stop: { at, how: `docker kill with signal ${signal}` } }
      : { kind: 'ignore' };
  }
  if (action === 'die') {
    return { kind: 'detect', name, why: `died (exit code ${e.Actor?.Attributes?.exitCode ?? '?'})` };
  }
  if (action === 'oom') return { kind: 'detect', name, why: 'out of memory' };
  if (action.startsWith('health_status') && /unhealthy/.test(action)) {
    return { kind: 'detect', name, why: 'Docker health status unhealthy' };
  }
  return { kind: 'ignore' };
}

/**
 * Splits the event stream's newline-delimited JSON, whatever the chunking: `push` each chunk, `onMessage` gets every
 * complete object in order (a line that is not JSON is skipped).
 */
export function jsonLines<T>(onMessage: (message: T) => void): (chunk: Buffer | string) => void {
  let buffered = '';
  // A multi-byte character split between two chunks is decoded whole, when its last byte arrives.
  const decoder = new TextDecoder();
  return (chunk) => {
    buffered += typeof chunk === 'string' ? chunk : decoder.decode(chunk, { stream: true });
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl).trim();
      buffered = buffered.slice(nl + 1);
      if (!line) continue;
      let message: T;
      try {
        message = JSON.parse(line) as T;
      } catch {
        continue;
      }
      onMessage(message);
    }
  };
}

/** The delay before reconnecting to the event stream after `failures` failures in a row: 0.5 s doubling to 30 s. */
export function reconnectDelayMs(failures: number): number {
  return Math.min(30_000, 500 * 2 ** Math.max(0, failures - 1));
}
