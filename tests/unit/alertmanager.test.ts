/**
 * Alertmanager's webhook (payload version 4, the shape of Alertmanager's webhook_config documentation): the schema,
 * what each alert means for selfheal, the bearer checks of the HTTP server, and the links notices carry with
 * PUBLIC_URL.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { alertIntents, parseWebhook, type AlertmanagerWebhook } from '../../core/alertmanager';
import { buildEscalationJson, buildEscalationSlack, type EscalationInput } from '../../core/notify';
import { bearerToken, sameSecret } from '../../workers/http-approvals';
import { healingWorkflowId } from '../../workflows/definitions';

const NOW = 1_764_842_000_000;
const FIXTURE = path.join(__dirname, '../fixtures/alertmanager/firing-v4.json');
const raw = () =>
  JSON.parse(readFileSync(FIXTURE, 'utf8')) as Record<string, unknown> & { alerts: Record<string, unknown>[] };

function parsed(body: unknown): AlertmanagerWebhook {
  const r = parseWebhook(body);
  if (!r.ok) throw new Error(r.error);
  return r.value;
}

function withAlert(over: Record<string, unknown>, labels: Record<string, string> = {}) {
  const body = raw();
  const alert = body.alerts[0]!;
  body.alerts = [{ ...alert, ...over, labels: { ...(alert.labels as Record<string, string>), ...labels } }];
  return body;
}

describe('the v4 payload schema', () => {
  it('accepts the documented payload', () => {
    const p = parsed(raw());
    expect(p.version).toBe('4');
    expect(p.alerts).toHaveLength(1);
    expect(p.alerts[0]).toMatchObject({ status: 'firing', fingerprint: '1a30ba71cca2921f' });
  });

  it('accepts what Grafana adds (unknown fields are ignored) and defaults the optional maps', () => {
    const body = raw();
    body.orgId = 1;
    delete body.commonAnnotations;
    body.alerts = [{ ...body.alerts[0]!, silenceURL: 'http://x', values: { B: 1 }, annotations: undefined }];
    const p = parsed(body);
    expect(p.commonAnnotations).toEqual({});
    expect(p.alerts[0]!.annotations).toEqual({});
  });

  const bad: [string, (b: Record<string, unknown> & { alerts: Record<string, unknown>[] }) => unknown, RegExp][] = [
    ['not an object', () => 'firing', /^body: /],
    ['another version', (b) => ({ ...b, version: '3' }), /^version: expected version "4"/],
    ['no alerts', (b) => ({ ...b, alerts: undefined }), /^alerts: /],
    [
      'an alert of unknown status',
      (b) => ({ ...b, alerts: [{ ...b.alerts[0], status: 'pending' }] }),
      /^alerts\.0\.status: /,
    ],
    [
      'a label that is not a string',
      (b) => ({ ...b, alerts: [{ ...b.alerts[0], labels: { a: 1 } }] }),
      /^alerts\.0\.labels\.a: /,
    ],
    ['no startsAt', (b) => ({ ...b, alerts: [{ ...b.alerts[0], startsAt: undefined }] }), /^alerts\.0\.startsAt: /],
    ['too many alerts', (b) => ({ ...b, alerts: Array.from({ length: 1001 }, () => b.alerts[0]) }), /^alerts: /],
  ];
  it.each(bad)('refuses %s in one line', (_name, mutate, error) => {
    const r = parseWebhook(mutate(raw()));
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.error).toMatch(error);
      expect(r.error).not.toContain('\n');
    }
  });
});

describe('alert to anomaly', () => {
  it('a firing alert is the anomaly a detector would report, with the alert as evidence', () => {
    const r = alertIntents(parsed(raw()), healingWorkflowId, NOW);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.intents).toHaveLength(1);
    const intent = r.intents[0]!;
    if (intent.kind !== 'firing') throw new Error(intent.kind);
    expect(intent.workflowId).toBe('heal-unhealthy_container-pipeline-extract-1');
    expect(intent.occurrence).toEqual({ fingerprint: '1a30ba71cca2921f', startsAt: '2026-12-04T09:52:26.739Z' });
    expect(intent.anomaly).toEqual({
      type: 'unhealthy_container',
      target: 'pipeline-extract-1',
      severity: 'critical',
      // The detector's fingerprint: verification re-runs the detector and looks for exactly this one.
      fingerprint: 'unhealthy_container:pipeline-extract-1',
      summary: 'Worker pipeline-extract-1 is down',
      detectedAt: NOW,
      evidence: {
        source: 'alertmanager',
        alertname: 'PipelineWorkerDown',
        labels: {
          alertname: 'PipelineWorkerDown',
          instance: 'pipeline-extract-1:9100',
          job: 'pipeline',
          selfheal_anomaly: 'unhealthy_container',
          selfheal_target: 'pipeline-extract-1',
          severity: 'critical',
        },
        annotations: {
          description: 'pipeline-extract-1 has answered no scrape for 2 minutes.',
          summary: 'Worker pipeline-extract-1 is down',
        },
        startsAt: '2026-12-04T09:52:26.739Z',
        generatorURL: 'http://prometheus.example.org:9090/graph?g0.expr=up%7Bjob%3D%22pipeline%22%7D+%3D%3D+0&g0.tab=1',
        fingerprint: '1a30ba71cca2921f',
        receiver: 'selfheal',
        externalURL: 'http://alertmanager.example.org:9093',
      },
    });
  });

  it('the id is the one a detected anomaly gets, for any case of the target', () => {
    const r = alertIntents(parsed(withAlert({}, { selfheal_target: 'Pipeline-Extract-1' })), healingWorkflowId, NOW);
    expect(r.ok && r.intents[0]).toMatchObject({
      workflowId: healingWorkflowId('unhealthy_container', 'Pipeline-Extract-1'),
    });
    expect(r.ok && r.intents[0]).toMatchObject({ anomaly: { target: 'Pipeline-Extract-1' } });
  });

  it('severity: the label when it is one of selfheal; warning otherwise', () => {
    for (const [label, want] of [
      ['info', 'info'],
      ['WARNING', 'warning'],
      ['page', 'warning'],
    ] as const) {
      const r = alertIntents(parsed(withAlert({}, { severity: label })), healingWorkflowId, NOW);
      expect(r.ok && r.intents[0]).toMatchObject({ anomaly: { severity: want } });
    }
  });

  it('summary: the summary annotation, else the description, else the alert name; sanitized and bounded', () => {
    const noSummary = alertIntents(
      parsed(withAlert({ annotations: { description: 'see `rm -rf /` token=hunter2hunter2' } })),
      healingWorkflowId,
      NOW,
    );
    const summary =
      noSummary.ok && noSummary.intents[0]!.kind === 'firing' ? noSummary.intents[0]!.anomaly.summary : '';
    expect(summary).not.toContain('`');
    expect(summary).not.toContain('hunter2');
    const none = alertIntents(parsed(withAlert({ annotations: {} })), healingWorkflowId, NOW);
    expect(none.ok && none.intents[0]).toMatchObject({
      anomaly: { summary: 'PipelineWorkerDown fired in Alertmanager' },
    });
    const long = alertIntents(
      parsed(withAlert({ annotations: { summary: 'x'.repeat(5_000) } })),
      healingWorkflowId,
      NOW,
    );
    const text = long.ok && long.intents[0]!.kind === 'firing' ? long.intents[0]!.anomaly.summary : '';
    expect(text.length).toBeLessThan(340);
  });

  it('evidence hides secret-named labels and bounds long values', () => {
    const r = alertIntents(
      parsed(withAlert({}, { api_token: 'abcdefabcdefabcdef', note: 'y'.repeat(2_000) })),
      healingWorkflowId,
      NOW,
    );
    const evidence = r.ok && r.intents[0]!.kind === 'firing' ? r.intents[0]!.anomaly.evidence : {};
    const labels = evidence.labels as Record<string, string>;
    expect(labels.api_token).toBe('[REDACTED]');
    expect(labels.note!.length).toBeLessThan(400);
  });

  it('a resolved alert records its resolution on the same id', () => {
    const r = alertIntents(
      parsed(withAlert({ status: 'resolved', endsAt: '2026-12-04T10:02:26Z' })),
      healingWorkflowId,
      NOW,
    );
    expect(r.ok && r.intents).toEqual([
      {
        kind: 'resolved',
        workflowId: 'heal-unhealthy_container-pipeline-extract-1',
        anomalyType: 'unhealthy_container',
        target: 'pipeline-extract-1',
        occurrence: {
          fingerprint: '1a30ba71cca2921f',
          startsAt: '2026-12-04T09:52:26.739Z',
          endsAt: '2026-12-04T10:02:26Z',
        },
      },
    ]);
  });

  it('an alert with neither label is not for selfheal: ignored', () => {
    const body = withAlert({});
    const labels = body.alerts[0]!.labels as Record<string, string>;
    delete labels.selfheal_anomaly;
    delete labels.selfheal_target;
    const r = alertIntents(parsed(body), healingWorkflowId, NOW);
    expect(r.ok && r.intents).toEqual([
      { kind: 'ignored', fingerprint: '1a30ba71cca2921f', why: 'no selfheal_anomaly or selfheal_target label' },
    ]);
  });

  const refused: [string, Record<string, string>, RegExp][] = [
    ['an unknown anomaly type', { selfheal_anomaly: 'disk_full' }, /unknown anomaly type "disk_full"/],
    ['a type without a target', { selfheal_target: '' }, /selfheal_anomaly without selfheal_target/],
    ['a target without a type', { selfheal_anomaly: '' }, /selfheal_target without selfheal_anomaly/],
    ['a target that is no name', { selfheal_target: 'a b; rm -rf /' }, /selfheal_target must be a name/],
    ['an inherited property as type', { selfheal_anomaly: 'toString' }, /unknown anomaly type/],
  ];
  it.each(refused)('%s refuses the whole notification', (_name, labels, error) => {
    const body = raw();
    // A good alert first: it must not start either.
    body.alerts = [
      body.alerts[0]!,
      { ...body.alerts[0]!, fingerprint: 'bad', labels: { ...(body.alerts[0]!.labels as object), ...labels } },
    ];
    const r = alertIntents(parsed(body), healingWorkflowId, NOW);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.problem.error).toMatch(new RegExp(`^alert bad: ${error.source}`));
  });
});

describe('bearer checks', () => {
  it('reads only a Bearer header', () => {
    expect(bearerToken('Bearer abc.def')).toBe('abc.def');
    expect(bearerToken('bearer  abc ')).toBe('abc');
    expect(bearerToken('Basic abc')).toBeUndefined();
    expect(bearerToken('Bearer a b')).toBeUndefined();
    expect(bearerToken(undefined)).toBeUndefined();
  });
  it('compares secrets of any length', () => {
    expect(sameSecret('a-long-enough-token', 'a-long-enough-token')).toBe(true);
    expect(sameSecret('a-long-enough-token', 'a-long-enough-tokeN')).toBe(false);
    expect(sameSecret('short', 'a-long-enough-token')).toBe(false);
    expect(sameSecret('', 'a-long-enough-token')).toBe(false);
  });
});

describe('notices with PUBLIC_URL', () => {
  const plan = {
    id: 'plan-1',
    anomalyType: 'unhealthy_container' as const,
    action: 'restart_worker' as const,
    target: 'pipeline-extract-1',
    params: { container: 'pipeline-extract-1' },
    reasoning: 'restart it',
    confidence: 0.8,
    source: 'runbook' as const,
    rung: 0,
  };
  const input = (over: Partial<EscalationInput> = {}): EscalationInput => ({
    workflowId: 'heal-unhealthy_container-pipeline-extract-1',
    plan,
    at: NOW,
    ...over,
  });

  it('a request for approval carries the healing URL and its approve and reject endpoints', () => {
    const body = buildEscalationJson(input({ publicUrl: 'https://selfheal.example.org/', awaitingApproval: true }));
    const url = 'https://selfheal.example.org/healings/heal-unhealthy_container-pipeline-extract-1';
    expect(body.url).toBe(url);
    expect(body.endpoints).toEqual({ approve: `${url}/approve`, reject: `${url}/reject` });
    expect(body.text).toContain(`Over HTTP: POST ${url}/approve or ${url}/reject`);
    const slack = JSON.stringify(
      buildEscalationSlack(input({ publicUrl: 'https://selfheal.example.org', awaitingApproval: true })),
    );
    expect(slack).toContain(`POST ${url}/approve`);
    expect(slack).toContain(`<${url}|Open in selfheal>`);
  });

  it('an escalation carries the URL, no endpoints; without PUBLIC_URL neither field is there', () => {
    const body = buildEscalationJson(input({ publicUrl: 'https://selfheal.example.org' }));
    expect(body.url).toMatch(/\/healings\/heal-unhealthy_container-pipeline-extract-1$/);
    expect(body.endpoints).toBeNull();
    const plain = buildEscalationJson(input({ awaitingApproval: true }));
    expect(plain).not.toHaveProperty('url');
    expect(plain).not.toHaveProperty('endpoints');
  });
});
