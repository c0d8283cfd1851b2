/** The outcome of a pure function that refuses instead of throwing (e.g. `parsePlan`). Plain JSON. */
export type Result<T> = { ok: true; value: T } | { ok: false; error: string };

export const ok = <T>(value: T): Result<T> => ({ ok: true, value });
export const err = <T = never>(error: string): Result<T> => ({ ok: false, error });
