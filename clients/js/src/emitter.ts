/**
 * A small typed event emitter (no dependency on Node's `events` or the DOM's `EventTarget`,
 * so the same code runs in browsers and Node).
 *
 * Listeners are kept in a `Set` per event: registering the same function twice is a no-op, so
 * code that registers its listeners again after a reconnect cannot get every event twice.
 * Listeners belong to the object (the client or a room), not to a connection, and survive
 * reconnects.
 *
 * @module
 */

/** A map from event names to listener signatures. */
export type EventMap<Events> = { [K in keyof Events]: (...args: any[]) => void };

/** A typed event emitter. */
export class Emitter<Events extends EventMap<Events>> {
  #listeners = new Map<keyof Events, Set<(...args: any[]) => void>>();

  /**
   * Calls `listener` on every `event` until removed. Returns a function that removes it.
   * Adding a listener that is already registered does nothing.
   */
  on<K extends keyof Events>(event: K, listener: Events[K]): () => void {
    let set = this.#listeners.get(event);
    if (set === undefined) {
      set = new Set();
      this.#listeners.set(event, set);
    }
    set.add(listener);
    return () => this.off(event, listener);
  }

  /** Calls `listener` on the next `event` only. Returns a function that removes it. */
  once<K extends keyof Events>(event: K, listener: Events[K]): () => void {
    const wrapper = ((...args: Parameters<Events[K]>) => {
      this.off(event, wrapper);
      listener(...args);
    }) as Events[K];
    return this.on(event, wrapper);
  }

  /** Removes `listener` from `event` (nothing happens if it was not registered). */
  off<K extends keyof Events>(event: K, listener: Events[K]): void {
    this.#listeners.get(event)?.delete(listener);
  }

  /** Removes every listener of `event`, or of every event when called without one. */
  removeAllListeners(event?: keyof Events): void {
    if (event === undefined) this.#listeners.clear();
    else this.#listeners.delete(event);
  }

  /** How many listeners `event` has. */
  listenerCount(event: keyof Events): number {
    return this.#listeners.get(event)?.size ?? 0;
  }

  /**
   * Calls the listeners of `event` in the order they were added. A listener that throws does
   * not stop the others nor the client: the exception is rethrown from a fresh task, where it
   * surfaces like one thrown by any DOM event listener (`window.onerror`, or Node's
   * `uncaughtException`).
   *
   * @internal
   */
  protected emit<K extends keyof Events>(event: K, ...args: Parameters<Events[K]>): void {
    const set = this.#listeners.get(event);
    if (set === undefined || set.size === 0) return;
    // A copy: listeners may add or remove listeners while being called.
    for (const listener of [...set]) {
      try {
        listener(...args);
      } catch (err) {
        setTimeout(() => {
          throw err;
        }, 0);
      }
    }
  }
}
