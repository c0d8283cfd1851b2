/** The message of anything thrown: an Error's message, anything else as a string. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The first line of a thrown value's message (driver errors append stack-like detail on later lines). */
export function errorFirstLine(err: unknown): string {
  return errorMessage(err).split('\n')[0]!;
}
