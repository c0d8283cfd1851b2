/** A small helper shared by the pipeline's modules (worker, runner, chaos). */

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
