/** Lower-cases and replaces everything outside `[a-z0-9:._-]` so any target makes a valid, stable id part. */
export function sanitizeTargetPart(target: string): string {
  return target.toLowerCase().replace(/[^a-z0-9:._-]/g, '-');
}
