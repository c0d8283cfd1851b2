/**
 * Talking to a Temporal server that someone else runs: is it there, its search attributes, are workers polling.
 * Used by the workers (the HTTP server's /health), the CLI and the tests alike.
 */
import net from 'node:net';
import { Connection } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { SearchAttr } from '../workflows/definitions';

/** True when something accepts TCP connections at host:port within the timeout. */
export function isPortOpen(address: string, timeoutMs = 1_000): Promise<boolean> {
  const i = address.lastIndexOf(':');
  const host = address.slice(0, i) || '127.0.0.1';
  const port = Number(address.slice(i + 1));
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/** True when a Temporal frontend answers a health check at the address. */
export async function temporalAnswers(address: string, timeoutMs = 2_000): Promise<boolean> {
  if (!(await isPortOpen(address, timeoutMs))) return false;
  let connection: Connection | undefined;
  try {
    connection = await Connection.connect({ address, connectTimeout: timeoutMs });
    await connection.healthService.check({});
    return true;
  } catch {
    return false;
  } finally {
    await connection?.close().catch(() => undefined);
  }
}

const INDEXED_TYPE = {
  KEYWORD: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
  DOUBLE: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_DOUBLE,
} as const;

/**
 * Registers the search attributes of workflows/definitions.ts through the operator API. Idempotent: existing attributes
 * are left alone; an attribute that exists with another type is an error that says so.
 * Returns the names it added.
 */
export async function registerSearchAttributes(connection: Connection, namespace: string): Promise<string[]> {
  let custom: Record<string, temporal.api.enums.v1.IndexedValueType>;
  try {
    custom = (await connection.operatorService.listSearchAttributes({ namespace })).customAttributes ?? {};
  } catch (err) {
    // The time-skipping test server implements AddSearchAttributes but not ListSearchAttributes.
    if ((err as { code?: number }).code !== 12 /* UNIMPLEMENTED */) throw err;
    custom = {};
  }
  const missing: Record<string, temporal.api.enums.v1.IndexedValueType> = {};
  for (const key of Object.values(SearchAttr)) {
    const want = INDEXED_TYPE[key.type];
    const have = custom[key.name];
    if (have === undefined || have === null) missing[key.name] = want;
    else if (have !== want) {
      throw new Error(`search attribute ${key.name} exists with another type (${String(have)}); expected ${key.type}`);
    }
  }
  if (Object.keys(missing).length > 0) {
    await connection.operatorService.addSearchAttributes({ namespace, searchAttributes: missing });
  }
  return Object.keys(missing);
}

/**
 * Waits until every task queue has a poller of the given type, i.e. the workers are really serving it (their
 * workflow bundle built, connected, polling). Throws naming the queues still without one.
 */
export async function waitForPollers(
  connection: Connection,
  namespace: string,
  queues: { name: string; type: 'workflow' | 'activity' }[],
  // Generous: on a loaded 2-core machine three workers loading the SDK took over a minute to poll.
  timeoutMs = 180_000,
): Promise<void> {
  const { TASK_QUEUE_TYPE_WORKFLOW, TASK_QUEUE_TYPE_ACTIVITY } = temporal.api.enums.v1.TaskQueueType;
  const deadline = Date.now() + timeoutMs;
  let waiting = queues;
  while (waiting.length > 0) {
    const results = await Promise.all(
      waiting.map(async (q) => {
        const res = await connection.workflowService.describeTaskQueue({
          namespace,
          taskQueue: { name: q.name },
          taskQueueType: q.type === 'workflow' ? TASK_QUEUE_TYPE_WORKFLOW : TASK_QUEUE_TYPE_ACTIVITY,
        });
        return (res.pollers?.length ?? 0) > 0;
      }),
    );
    waiting = waiting.filter((_, i) => !results[i]);
    if (waiting.length === 0) return;
    if (Date.now() > deadline) {
      throw new Error(
        `no worker polls ${waiting.map((q) => `${q.name} (${q.type})`).join(', ')} after ${timeoutMs} ms`,
      );
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}
