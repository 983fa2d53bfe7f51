/**
 * Publishes (and state channel updates) not acknowledged yet. Each keeps its id, so sending it again after a
 * reconnect (or an app restart, with a persistent store) stores it once: the server
 * answers a repeated id with the original ack. An entry leaves the outbox when it is
 * acked, or refused for a reason that sending again cannot change.
 */

import { DeltacastError } from "./errors.js";
import type { StateOp } from "./state_view.js";

/** A publish on its way. */
export interface PendingPublish {
  /** The channel. */
  readonly channel: string;
  /** Its id: the idempotency key. */
  readonly id: string;
  /** The payload. */
  readonly data: unknown;
  /** Publish only if the channel's head is this seq. */
  readonly expectSeq?: number;
  /** Set for an `update` of a state channel: its ops (`data` is then unused). */
  readonly ops?: readonly StateOp[];
  /** When it was first queued, Unix ms. */
  readonly queuedAt: number;
}

/** Where pending publishes are kept, so that a message written offline survives a restart. */
export interface PendingStore {
  /** The publishes saved last. */
  load(): Promise<readonly PendingPublish[]> | readonly PendingPublish[];
  /** Saves the publishes now pending (all of them, in order). */
  save(pending: readonly PendingPublish[]): Promise<void> | void;
}

/** Keeps pending publishes in memory only (the default). */
export class MemoryStore implements PendingStore {
  #saved: readonly PendingPublish[] = [];

  load(): readonly PendingPublish[] {
    return this.#saved;
  }

  save(pending: readonly PendingPublish[]): void {
    this.#saved = [...pending];
  }
}

/** A stored publish's place, as the server's `ack` tells it. */
export interface Ack {
  /** The channel. */
  readonly channel: string;
  /** The publish's id. */
  readonly id: string;
  /** Its seq. */
  readonly seq: number;
  /** Its epoch. */
  readonly epoch: string;
}

/** A stored `update`, as the server's `updated` tells it. */
export interface Updated {
  /** The channel. */
  readonly channel: string;
  /** The update's id. */
  readonly id: string;
  /** Whether the id had been stored before (the ops were not applied again). */
  readonly duplicate: boolean;
}

interface Waiter {
  resolve: (answer: Ack | Updated) => void;
  reject: (error: DeltacastError) => void;
}

/** A publish's key among the pending: its channel and id. */
export const publishKey = (channel: string, id: string): string => `${channel}\u0000${id}`;

/**
 * The publishes not acknowledged yet, in the order they were made. It takes back what
 * its store kept (publishes made before a restart) as it starts, ahead of any made
 * since, and saves nothing before that, so a restart never overwrites them.
 */
export class Outbox {
  readonly #store: PendingStore;
  readonly #pending = new Map<string, PendingPublish>();
  readonly #waiters = new Map<string, Waiter>();
  readonly #restored: Promise<void>;

  readonly #onStoreError: (error: unknown) => void;

  /** `onStoreError` is told when the store fails to load (the outbox starts empty) or to
   * save (the outbox goes on in memory). */
  constructor(store: PendingStore = new MemoryStore(), onStoreError: (error: unknown) => void = () => {}) {
    this.#store = store;
    this.#onStoreError = onStoreError;
    this.#restored = this.#restore();
  }

  /**
   * Resolves once the store's publishes are back (to be sent again with their ids;
   * nobody waits for their acks) and the outbox saved.
   */
  async ready(): Promise<void> {
    await this.#restored;
    await this.#save();
  }

  async #restore(): Promise<void> {
    let saved: readonly PendingPublish[] = [];
    try {
      saved = await this.#store.load();
    } catch (error) {
      this.#onStoreError(error);
    }
    const made = [...this.#pending.values()];
    this.#pending.clear();
    for (const publish of [...saved, ...made]) {
      this.#pending.set(publishKey(publish.channel, publish.id), publish);
    }
  }

  /** Queues `publish`; the promise settles with its ack, or its refusal. */
  add<A extends Ack | Updated = Ack>(publish: Omit<PendingPublish, "queuedAt">, now: number = Date.now()): Promise<A> {
    const k = publishKey(publish.channel, publish.id);
    if (this.#pending.has(k)) {
      return Promise.reject(
        new DeltacastError("bad_request", `a publish with id ${publish.id} is already pending on ${publish.channel}`),
      );
    }
    this.#pending.set(k, { ...publish, queuedAt: now });
    const acked = new Promise<A>((resolve, reject) => {
      this.#waiters.set(k, { resolve: resolve as (answer: Ack | Updated) => void, reject });
    });
    void this.#save();
    return acked;
  }

  /** The pending publishes, oldest first: what to send (again) once connected. */
  pending(): readonly PendingPublish[] {
    return [...this.#pending.values()];
  }

  /** Whether `channel`'s publish `id` is pending. */
  has(channel: string, id: string): boolean {
    return this.#pending.has(publishKey(channel, id));
  }

  /** Settles a publish with its ack (an update with its `updated`); returns whether it
   * was pending. */
  acked(ack: Ack | Updated): boolean {
    const k = publishKey(ack.channel, ack.id);
    if (!this.#pending.delete(k)) {
      return false;
    }
    this.#waiters.get(k)?.resolve(ack);
    this.#waiters.delete(k);
    void this.#save();
    return true;
  }

  /**
   * Settles a publish with a refusal, unless sending it again may succeed (the error is
   * retryable): then it stays pending. Returns whether it left the outbox.
   */
  refused(channel: string, id: string, error: DeltacastError): boolean {
    const k = publishKey(channel, id);
    if (error.retryable || !this.#pending.delete(k)) {
      return false;
    }
    this.#waiters.get(k)?.reject(error);
    this.#waiters.delete(k);
    void this.#save();
    return true;
  }

  /** Rejects every promise still waiting (the client closed); the writes stay pending
   * and in the store. */
  abandon(error: DeltacastError): void {
    for (const waiter of this.#waiters.values()) {
      waiter.reject(error);
    }
    this.#waiters.clear();
  }

  async #save(): Promise<void> {
    await this.#restored;
    try {
      await this.#store.save(this.pending());
    } catch (error) {
      this.#onStoreError(error);
    }
  }
}
