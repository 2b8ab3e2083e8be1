/**
 * Reconnect delays: exponential backoff with full jitter, as in centrifuge-js.
 *
 * @module
 */

/**
 * The delay before reconnect attempt number `attempt` (0 for the first after a loss):
 * `min + random(0, min(max, min * 2^attempt))`, capped at `max`. The random part ("full
 * jitter") spreads the clients of a restarted server over the whole interval instead of
 * bringing them back at once; the floor of `min` keeps a client from hammering a server
 * that refuses it at once. With the defaults (500 ms, 20 s) the first retry comes after
 * 0.5-1 s, the fifth after 0.5-8.5 s, and from the seventh on after 0.5-20 s.
 *
 * `random` returns a number in [0, 1) (default `Math.random`; tests pass their own).
 */
export function backoffDelay(
  attempt: number,
  min: number,
  max: number,
  random: () => number = Math.random,
): number {
  const step = Math.min(Math.max(attempt, 0), 31);
  const spread = Math.min(max, min * 2 ** step);
  return Math.min(max, min + Math.floor(random() * spread));
}
