// Values the integration globalSetup provides to tests through `inject()`.
import 'vitest';

declare module 'vitest' {
  export interface ProvidedContext {
    temporalAddress: string;
    temporalUiPort: number;
    temporalNamespaces: string[];
    testRunId: string;
    /** The workflow bundle built once for the run (SELFHEAL_WORKFLOW_BUNDLE of every `selfheal up`). */
    workflowBundle: string;
  }
}
