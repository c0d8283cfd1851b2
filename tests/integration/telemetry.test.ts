/**
 * Logs and telemetry of the real worker processes (`selfheal up --no-pipeline`): every line they write is pino JSON,
 * lines from workflow code and from activity code carry workflowId and runId, and each worker serves the SDK's
 * Prometheus metrics on its own port (SDK_METRICS_PORT + 0/1/2).
 *
 * Ollama points at a closed port, so `llm_unavailable` fires and its healing escalates: the healing workflow runs,
 * and the actions worker's escalateToHuman posts to a receiver here that fails once (503) and then accepts. That
 * gives a workflow of the healing worker, activity-code log lines (the webhook attempts, through the activity
 * logger) of the actions worker, and the real body of an escalation.
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EscalationJson } from '../../core/notify';
import { createTestEnv, waitFor, type TestEnv, heldPort } from '../helpers/env';
import { startSelfheal, type RunningSelfheal } from '../helpers/selfheal';
import { allocateNamespace } from '../helpers/temporal';

const HEALING_ID = 'heal-llm_unavailable-ollama';

type Line = Record<string, unknown>;

/** A worker's log file: every non-empty line parsed; a line that is not JSON is returned as an error. */
function readLog(selfheal: RunningSelfheal, name: string): { lines: Line[]; notJson: string[] } {
  const file = path.join(selfheal.env.SELFHEAL_DATA_DIR!, 'logs', `${name}.log`);
  const lines: Line[] = [];
  const notJson: string[] = [];
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return { lines, notJson };
  }
  // The last line may be half written.
  const complete = text.endsWith('\n') ? text : text.slice(0, text.lastIndexOf('\n') + 1);
  for (const raw of complete.split('\n')) {
    if (!raw.trim()) continue;
    try {
      const parsed: unknown = JSON.parse(raw);
      if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) lines.push(parsed as Line);
      else notJson.push(raw);
    } catch {
      notJson.push(raw);
    }
  }
  return { lines, notJson };
}

const WORKERS = ['selfheal-monitor', 'selfheal-healing', 'selfheal-actions'] as const;

describe('logs and SDK metrics of the real workers', () => {
  let t: TestEnv;
  let selfheal: RunningSelfheal;
  let metricsBase: number;
  const hookBodies: unknown[] = [];
  let hookRequests = 0;
  let hook: http.Server;

  beforeAll(async () => {
    t = await createTestEnv();
    const namespace = await allocateNamespace();
    hook = http.createServer((req, res) => {
      let raw = '';
      req.on('data', (d: Buffer) => (raw += d.toString()));
      req.on('end', () => {
        hookRequests++;
        if (hookRequests === 1) return void res.writeHead(503).end();
        hookBodies.push(JSON.parse(raw));
        res.writeHead(200).end('ok');
      });
    });
    await new Promise<void>((resolve) => hook.listen(0, '127.0.0.1', resolve));
    metricsBase = await heldPort(3);
    selfheal = await startSelfheal(t, namespace, {
      LOG_LEVEL: 'debug',
      SDK_METRICS_PORT: String(metricsBase),
      OLLAMA_HOST: `http://127.0.0.1:${await heldPort()}`,
      LLM_TIMEOUT_MS: '2000',
      ESCALATION_WEBHOOK_URL: `http://127.0.0.1:${(hook.address() as AddressInfo).port}/hook`,
      TEMPORAL_UI_URL: 'http://127.0.0.1:8233',
    });
  });

  afterAll(async () => {
    await selfheal?.stop();
    hook?.closeAllConnections();
    await new Promise((resolve) => hook?.close(resolve));
    await t?.cleanup();
  });

  it('workflow and activity lines are JSON and carry workflowId and runId', async () => {
    // The escalation's activity-code lines: the failed attempt (503) and the delivery, through Context.current().log.
    const delivered = await waitFor(
      () =>
        readLog(selfheal, 'selfheal-actions').lines.find(
          (l) => l.msg === 'escalation webhook delivered' && l.workflowId === HEALING_ID,
        ),
      { timeoutMs: 90_000, intervalMs: 500, what: 'the escalation webhook delivered line of the actions worker' },
    );
    const runId = delivered.runId;
    expect(runId).toEqual(expect.stringMatching(/^[0-9a-f-]{36}$/));
    expect(delivered).toMatchObject({
      level: 30,
      service: 'selfheal-actions',
      sdkComponent: 'activity',
      activityType: 'escalateToHuman',
      workflowType: 'healingWorkflow',
      workflowId: HEALING_ID,
      workflowRunId: runId,
      attempt: 1,
      webhookAttempt: 2,
      status: 200,
      format: 'json',
    });
    expect(delivered).not.toHaveProperty('taskToken');
    const actions = readLog(selfheal, 'selfheal-actions').lines;
    expect(actions.find((l) => l.msg === 'escalation webhook attempt failed' && l.runId === runId)).toMatchObject({
      level: 40,
      sdkComponent: 'activity',
      workflowId: HEALING_ID,
      status: 503,
      retryInMs: 500,
    });

    // Lines from the healing workflow's code (the workflow logger, through the sink) in the healing worker.
    const fromWorkflow = await waitFor(
      () => {
        const lines = readLog(selfheal, 'selfheal-healing').lines.filter(
          (l) => l.workflowId === HEALING_ID && l.runId === runId && l.workflowType === 'healingWorkflow',
        );
        return lines.some((l) => l.msg === 'Workflow completed') ? lines : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 500, what: "the healing workflow's log lines" },
    );
    expect(fromWorkflow.map((l) => l.msg)).toContain('Workflow started');
    for (const l of fromWorkflow) {
      expect(l).toMatchObject({
        service: 'selfheal-healing',
        taskQueue: 'selfheal-healing',
        namespace: expect.any(String),
      });
      expect(typeof l.time).toBe('number');
      expect(typeof l.sdkTime).toBe('number');
    }

    // The monitor: a monitoring cycle's workflow lines and its activities' lines name the same run.
    const monitor = await waitFor(
      () => {
        const { lines } = readLog(selfheal, 'selfheal-monitor');
        const activity = lines.find(
          (l) => l.activityType === 'collectMetrics' && typeof l.workflowId === 'string' && typeof l.runId === 'string',
        );
        const workflow =
          activity &&
          lines.find(
            (l) =>
              l.workflowType === 'monitoringCycleWorkflow' &&
              l.workflowId === activity.workflowId &&
              l.runId === activity.runId &&
              l.activityType === undefined,
          );
        return workflow && { activity, workflow };
      },
      { timeoutMs: 30_000, intervalMs: 500, what: 'a monitoring cycle logged by its workflow and its activity' },
    );
    expect(monitor.activity).toMatchObject({ service: 'selfheal-monitor', workflowRunId: monitor.activity.runId });

    // Nothing but JSON in any worker's log.
    for (const name of WORKERS) {
      const { lines, notJson } = readLog(selfheal, name);
      expect(notJson, `${name}: lines that are not JSON`).toEqual([]);
      expect(lines.length).toBeGreaterThan(0);
      for (const l of lines) {
        expect(l).toMatchObject({ level: expect.any(Number), msg: expect.any(String), time: expect.any(Number) });
        // The worker's logger names its service; loggers made inside activity factories name themselves.
        expect(l.service ?? l.name).toBe(name);
      }
    }

    // The escalation that was delivered: the documented JSON body, severity from the detection, a Web UI link.
    expect(hookRequests).toBe(2);
    expect(hookBodies[0]).toMatchObject({
      schema: 'selfheal.escalation.v1',
      workflowId: HEALING_ID,
      runId,
      anomalyType: 'llm_unavailable',
      target: 'ollama',
      severity: 'warning',
      // Escalated (llm_unavailable escalates and ends): nothing to approve, only the show command.
      commands: { approve: null, reject: null, show: `selfheal show ${HEALING_ID}` },
      webUiUrl: expect.stringContaining(`/workflows/${HEALING_ID}/${runId as string}/history`),
    } satisfies Partial<Record<keyof EscalationJson, unknown>>);
  });

  it("each worker serves the SDK's Prometheus metrics on its own port", async () => {
    const scrape = async (port: number) => {
      const res = await fetch(`http://127.0.0.1:${port}/metrics`);
      return { status: res.status, text: await res.text() };
    };
    const expectations: [string, number, RegExp[]][] = [
      [
        'selfheal-monitor',
        metricsBase,
        [
          /^temporal_workflow_task_execution_latency\w*\{[^}]*worker="selfheal-monitor"/m,
          /^temporal_activity_execution_latency\w*\{/m,
        ],
      ],
      [
        'selfheal-healing',
        metricsBase + 1,
        [/^temporal_workflow_task_execution_latency\w*\{[^}]*task_queue="selfheal-healing"/m],
      ],
      [
        'selfheal-actions',
        metricsBase + 2,
        [/^temporal_activity_execution_latency\w*\{[^}]*activity_type="escalateToHuman"/m],
      ],
    ];
    for (const [name, port, patterns] of expectations) {
      const { text } = await waitFor(
        async () => {
          const r = await scrape(port);
          return r.status === 200 && patterns.every((p) => p.test(r.text)) ? r : undefined;
        },
        { timeoutMs: 60_000, intervalMs: 500, what: `${name}'s SDK metrics on ${port}` },
      );
      const names = new Set(
        text
          .split('\n')
          .filter((l) => /^temporal_/.test(l))
          .map((l) => /^[a-z_]+/.exec(l)![0]),
      );
      expect(names.size, name).toBeGreaterThan(5);
      expect([...names].every((n) => n.startsWith('temporal_'))).toBe(true);
      expect(text).toContain(`worker="${name}"`);
    }
  });
});
