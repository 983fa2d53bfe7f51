/**
 * How long to wait before the next reconnect: exponential backoff with full jitter
 * (a random delay between 0 and the exponential cap), so that clients that lost their
 * connections together do not all come back at the same moment.
 */

/** Backoff settings, in milliseconds. */
export interface BackoffOptions {
  /** The cap of the first retry's delay. */
  readonly baseMs: number;
  /** The largest cap. */
  readonly maxMs: number;
}

/** The defaults: 0.5 s doubling up to 30 s. */
export const DEFAULT_BACKOFF: BackoffOptions = { baseMs: 500, maxMs: 30_000 };

/**
 * The delay before retry number `attempt` (0 for the first): uniform in
 * [0, min(maxMs, baseMs × 2^attempt)]. `random` returns a number in [0, 1).
 */
export function backoffDelay(
  attempt: number,
  options: BackoffOptions = DEFAULT_BACKOFF,
  random: () => number = Math.random,
): number {
  const exponent = Math.min(Math.max(attempt, 0), 30);
  const cap = Math.min(options.maxMs, options.baseMs * 2 ** exponent);
  return Math.floor(random() * cap);
}
