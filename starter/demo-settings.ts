/** The demo's settings, apart from its code: the CLI's help names the approver without loading the demo. */

/**
 * Demo-scaled settings, used only for variables the environment does not set: 1 s cycles, thresholds of a few
 * seconds, a short verification delay, no restart cooldown, a budget the scripted faults cannot spend, and an
 * approval wait a person at the terminal can meet.
 */
export const DEMO_DEFAULTS: Readonly<Record<string, string>> = {
  MONITOR_INTERVAL: '1',
  QUEUE_STALL_THRESHOLD: '5',
  ERROR_RATE_MIN_SAMPLES: '10',
  ERROR_RATE_WINDOW: '5',
  SLOWDOWN_MIN_SAMPLES: '5',
  STUCK_DOCUMENT_THRESHOLD: '5',
  HEALTH_FAILURES_BEFORE_UNHEALTHY: '2',
  VERIFY_DELAY: '3',
  RESTART_COOLDOWN: '0',
  MAX_ACTIONS_PER_HOUR: '100',
  APPROVAL_TIMEOUT: '300',
};

/** Who approves with `--auto-approve` (must be in APPROVERS when that is set). */
export const DEMO_APPROVER = 'selfheal-demo';
