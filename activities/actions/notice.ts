import { Context } from '@temporalio/activity';
import type { EscalationInput } from '../../core/notify';
import type { Plan } from '../../core/plan';
import { createEscalationNotifier, loadDetectedAnomaly, type WebhookDelivery } from '../notify';
import type { ActionContext } from './context';
import { activityRun } from './helpers';

/**
 * A notice about the running healing on the escalation webhook (ESCALATION_WEBHOOK_URL, in its format): an
 * escalation, a request for approval, or a restart done. The anomaly's facts come from the run's `detected` row.
 */
export function createNotice({ pool, config }: Pick<ActionContext, 'pool' | 'config'>) {
  const notifier = createEscalationNotifier({
    url: config.escalationWebhookUrl,
    format: config.escalationWebhookFormat,
    attempts: config.webhookAttempts,
    timeoutMs: config.webhookTimeoutMs,
    backoffMs: config.webhookBackoffMs,
  });
  return async function notice(
    plan: Plan,
    kind: Pick<EscalationInput, 'awaitingApproval' | 'restarted'>,
  ): Promise<WebhookDelivery> {
    const { workflowId, runId } = activityRun();
    const anomaly = await loadDetectedAnomaly(pool, workflowId, runId);
    return notifier.notify({
      workflowId,
      runId,
      namespace: Context.current().info.namespace,
      plan,
      anomaly,
      webUiUrl: config.temporalUiUrl,
      publicUrl: config.publicUrl,
      at: Date.now(),
      ...kind,
    });
  };
}
