/** Docker's own record of what happens to containers (the Engine's event stream), for tests to count on. */
import type Docker from 'dockerode';
import { jsonLines } from '../../core/docker-events';

export interface DockerEvent {
  Action?: string;
  Actor?: { Attributes?: { name?: string } };
  time?: number;
  /** epoch ns. */
  timeNano?: number;
}

/**
 * The container events of `names` (or of the containers carrying every one of `{ labels }`) from now until `stop()`;
 * `onEvent` sees each one as it arrives (e.g. to kill a process at the right moment).
 *
 * Watched live, never asked for afterwards: the Engine keeps only its last 256 events for `since`/`until` queries,
 * and while other files run beside a test (the compose deployment's healthchecks alone add several a second) a
 * minute's events can be gone by the time the test asks.
 */
export async function watchDockerEvents(
  docker: Docker,
  scope: string[] | { labels: string[] },
  onEvent?: (e: DockerEvent) => void,
) {
  const events: DockerEvent[] = [];
  const stream = (await docker.getEvents({
    filters: Array.isArray(scope)
      ? { container: scope, type: ['container'] }
      : { label: scope.labels, type: ['container'] },
  })) as NodeJS.ReadableStream & { destroy(): void };
  stream.on(
    'data',
    jsonLines<DockerEvent>((e) => {
      events.push(e);
      onEvent?.(e);
    }),
  );
  const ofName = (name: string) => events.filter((e) => e.Actor?.Attributes?.name === name);
  return {
    events,
    /** Events of one container, of one action. */
    of: (name: string, action: string) => ofName(name).filter((e) => e.Action === action),
    /** Events of an action, over every watched container. */
    count: (action: string) => events.filter((e) => e.Action === action).length,
    /** The actions in order, of one container or of all. */
    actions: (name?: string) => (name === undefined ? events : ofName(name)).map((e) => e.Action),
    stop: () => stream.destroy(),
  };
}

/** A running watch (`watchDockerEvents`). */
export type DockerWatch = Awaited<ReturnType<typeof watchDockerEvents>>;
