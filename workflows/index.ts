// Every workflow the selfheal workers host; bundled once per worker process.
export { healingWorkflow } from './healing';
export { monitoringCycleWorkflow } from './monitoring';
