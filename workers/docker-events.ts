/**
 * Event-driven detection: the actions worker (the only process with Docker access) follows Docker's event stream.
 * A container that dies, runs out of memory or turns unhealthy makes the Schedule `selfheal-monitor` run a cycle at
 * once (trigger, overlap BUFFER_ONE: after the running one, never two at a time), so detection and the healing
 * workflow it starts (deduplicated by its workflow id, as from a scheduled cycle) do not wait for the next interval.
 * A container stopped on purpose is recorded (in Redis and in memory, activities/docker-stops.ts) until it starts
 * again or is removed, so the cycle leaves it alone.
 *
 * Polling stays the safety net: when the stream drops, it reconnects with backoff, replaying from the last event
 * seen (`since`), and triggers one cycle for whatever happened meanwhile.
 */
import type Docker from 'dockerode';
import type pino from 'pino';
import { errorFirstLine } from '../core/errors';
import {
  eventMeaning,
  jsonLines,
  reconnectDelayMs,
  WATCHED_EVENTS,
  type DockerEventMessage,
} from '../core/docker-events';
import type { StopRecords } from '../activities/docker-stops';

export interface DockerEventWatcherOptions {
  docker: Pick<Docker, 'getEvents'>;
  /** Where the stops on purpose are recorded (Redis and this process's memory); shared with the inspection. */
  stops: Pick<StopRecords, 'stopped' | 'forget'>;
  /** Label filters (one pipeline among several on a host), as the cycle's inspection uses them. */
  labels: string[];
  /** Runs a monitoring cycle now (or after the running one). */
  trigger: (why: string) => Promise<void>;
  log: pino.Logger;
}

export interface DockerEventWatcher {
  /** Events read, cycles triggered, reconnections. */
  stats(): { events: number; triggers: number; reconnects: number; connected: boolean };
  stop(): Promise<void>;
}

/** A connection that lasted this long was fine: its end resets the backoff. */
const STABLE_MS = 30_000;

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => (clearTimeout(timer), resolve()), { once: true });
  });

export function startDockerEventWatcher(opts: DockerEventWatcherOptions): DockerEventWatcher {
  const { docker, stops, log } = opts;
  const abort = new AbortController();
  const counts = { events: 0, triggers: 0, reconnects: 0, connected: false };
  let lastEventSeconds: number | undefined;
  let current: (NodeJS.ReadableStream & { destroy?: () => void }) | undefined;

  // One trigger at a time; events that arrive meanwhile make one more afterwards (a burst is one or two cycles).
  let triggering: Promise<void> | undefined;
  let again: string | undefined;
  function requestCycle(why: string): void {
    if (triggering) {
      again = why;
      return;
    }
    counts.triggers++;
    triggering = opts
      .trigger(why)
      .catch((err: unknown) => log.warn({ err: errorFirstLine(err), why }, 'could not trigger a monitoring cycle'))
      .finally(() => {
        triggering = undefined;
        if (again !== undefined) {
          const next = again;
          again = undefined;
          requestCycle(next);
        }
      });
  }

  async function handle(e: DockerEventMessage): Promise<void> {
    counts.events++;
    if (e.time) lastEventSeconds = e.time;
    const meaning = eventMeaning(e, Date.now());
    try {
      if (meaning.kind === 'stopped') {
        await stops.stopped(meaning.name, meaning.stop);
      } else if (meaning.kind === 'started' || meaning.kind === 'removed') {
        await stops.forget(meaning.name);
      }
    } catch (err) {
      log.warn(
        { err: errorFirstLine(err), container: meaning.kind !== 'ignore' ? meaning.name : undefined },
        'could not record a stop',
      );
    }
    if (meaning.kind === 'detect') {
      log.info({ container: meaning.name, why: meaning.why }, 'docker event: monitoring cycle now');
      requestCycle(`${meaning.name} ${meaning.why}`);
    }
  }

  /** Reads one connection of the stream until it ends; events are handled in order. */
  async function consume(stream: NodeJS.ReadableStream): Promise<void> {
    let chain = Promise.resolve();
    await new Promise<void>((resolve) => {
      stream.on(
        'data',
        jsonLines<DockerEventMessage>((e) => {
          chain = chain.then(() => handle(e));
        }),
      );
      stream.once('end', resolve);
      stream.once('close', resolve);
      stream.once('error', (err: Error) => {
        log.warn({ err: errorFirstLine(err) }, 'docker event stream failed');
        resolve();
      });
    });
    await chain;
  }

  async function run(): Promise<void> {
    let failures = 0;
    while (!abort.signal.aborted) {
      let connectedAt: number | undefined;
      try {
        const stream = (await docker.getEvents({
          ...(lastEventSeconds !== undefined ? { since: lastEventSeconds } : {}),
          filters: {
            type: ['container'],
            event: [...WATCHED_EVENTS],
            ...(opts.labels.length > 0 ? { label: opts.labels } : {}),
          },
        })) as NodeJS.ReadableStream & { destroy?: () => void };
        if (abort.signal.aborted) {
          // Stopped while connecting: the stream that came after is not followed.
          stream.destroy?.();
          break;
        }
        current = stream;
        counts.connected = true;
        connectedAt = Date.now();
        if (counts.reconnects > 0) {
          log.info({ afterFailures: failures }, 'docker event stream reconnected');
          // Whatever happened while it was down (and was not replayed) is looked at now.
          requestCycle('event stream reconnected');
        } else log.info('docker event stream connected');
        await consume(stream);
      } catch (err) {
        log.warn({ err: errorFirstLine(err) }, 'docker event stream unavailable');
      }
      counts.connected = false;
      current = undefined;
      if (abort.signal.aborted) break;
      // A stream that stayed up a while and ended (a proxy's idle timeout) is routine: reconnect at once. One that
      // drops right away, or never came up, backs off.
      const stayedUp = connectedAt !== undefined && Date.now() - connectedAt > STABLE_MS;
      failures = stayedUp ? 0 : failures + 1;
      counts.reconnects++;
      const delay = stayedUp ? 0 : reconnectDelayMs(failures);
      if (stayedUp) log.info('docker event stream ended; reconnecting');
      else log.warn({ retryInMs: delay }, 'docker event stream dropped; polling covers the gap');
      await sleep(delay, abort.signal);
    }
  }

  const running = run();
  return {
    stats: () => ({ ...counts }),
    async stop() {
      abort.abort();
      current?.destroy?.();
      await running;
      await triggering;
    },
  };
}
