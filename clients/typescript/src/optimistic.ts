/**
 * Optimistic updates over a log channel: a value the app shows, built from the channel's
 * deltas (confirmed) with its own changes not yet confirmed applied on top, at once.
 *
 * A change is applied locally when made; it stays on top of the confirmed value until
 * its own delta arrives (then it is part of the confirmed value), and is rolled back when
 * the server refuses it for good, `conflict` included: with `guard`, each publish carries
 * `expectSeq`, so a change made against a value someone else changed meanwhile is
 * refused with the server's head, rolled back, and the others' deltas (already arriving)
 * show what won. Pure logic but for `publish`, which goes through the client.
 */

import type { Delta } from "./channel_log.js";
import type { SubscriptionHandlers } from "./channel_watch.js";
import type { DeltacastError } from "./errors.js";
import { newId } from "./ids.js";
import type { Ack } from "./outbox.js";

/** How an optimistic value is built. */
export interface OptimisticOptions<T, C> {
  /** The value before any delta. */
  readonly initial: T;
  /** The value after a change (a delta's `data`); must not modify `value`. */
  readonly apply: (value: T, change: C) => T;
  /** Called with the value shown whenever it changes. */
  readonly onChange?: (value: T) => void;
  /** Send `expectSeq` with each change, so one made against a stale value is refused
   * (`conflict`) and rolled back, rather than applied after the others (default false). */
  readonly guard?: boolean;
}

/** What publishing needs of a client (`DeltacastClient` has it). */
export interface Publisher {
  publish(channel: string, data: unknown, options?: { id?: string; expectSeq?: number }): Promise<Ack>;
}

interface Change<C> {
  readonly id: string;
  readonly change: C;
  /** Its seq, once acked: its delta brings it into the confirmed value. */
  seq?: number;
}

/** A value shown optimistically. */
export class Optimistic<T, C> {
  readonly #options: OptimisticOptions<T, C>;
  #confirmed: T;
  #seq = 0;
  #pending: Change<C>[] = [];

  constructor(options: OptimisticOptions<T, C>) {
    this.#options = options;
    this.#confirmed = options.initial;
  }

  /** The value to show: the confirmed one with the changes still pending on top. */
  get value(): T {
    return this.#pending.reduce((value, pending) => this.#options.apply(value, pending.change), this.#confirmed);
  }

  /** The confirmed value: what the channel's deltas say. */
  get confirmed(): T {
    return this.#confirmed;
  }

  /** The last delta's seq in the confirmed value. */
  get seq(): number {
    return this.#seq;
  }

  /** Changes made and not yet in the confirmed value. */
  get pending(): number {
    return this.#pending.length;
  }

  /**
   * Subscription handlers that feed the value (pass to `client.subscribe`). Without
   * `since`, the subscription starts at the channel's head, and `initial` must be the
   * value there; with `since` (0: every retained delta), it is caught up from that seq,
   * and `initial` is the value at it. `onReset`: deltas were lost (the app reloads the
   * value and calls `reset`).
   */
  handlers(
    options: {
      since?: number;
      epoch?: string;
      onReset?: (reset: { readonly epoch: string | undefined; readonly seq: number }) => void;
    } = {},
  ): SubscriptionHandlers {
    if (options.since !== undefined) {
      this.#seq = options.since;
    }
    const started = options.since !== undefined;
    let first = true;
    return {
      onDelta: (delta) => this.delta(delta),
      onReset: (reset) => options.onReset?.(reset),
      onSubscribed: (head) => {
        // Subscribed at the head: the guard counts from there.
        if (first && !started) this.#seq = head.seq;
        first = false;
      },
      ...(options.since === undefined ? {} : { since: options.since }),
      ...(options.epoch === undefined ? {} : { epoch: options.epoch }),
    };
  }

  /** A delta of the channel, in order: into the confirmed value. */
  delta(delta: Delta): void {
    this.#confirmed = this.#options.apply(this.#confirmed, delta.data as C);
    this.#seq = delta.seq;
    this.#pending = this.#pending.filter((p) => p.id !== delta.id && (p.seq === undefined || p.seq > delta.seq));
    this.#changed();
  }

  /** Starts again from a value the app reloaded (after a subscription's `reset`). */
  reset(value: T, seq: number): void {
    this.#confirmed = value;
    this.#seq = seq;
    this.#pending = this.#pending.filter((p) => p.seq === undefined || p.seq > seq);
    this.#changed();
  }

  /**
   * Applies `change` now and publishes it on `channel`; settles with its ack, or rolls it
   * back and rejects with the refusal (a `DeltacastError`; on `conflict` its details carry
   * the head seq and epoch).
   */
  async publish(client: Publisher, channel: string, change: C, options: { id?: string } = {}): Promise<Ack> {
    const pending: Change<C> = { id: options.id ?? newId(), change };
    const expectSeq = this.#options.guard === true ? this.#seq + this.#pending.length : undefined;
    this.#pending.push(pending);
    this.#changed();
    try {
      const ack = await client.publish(
        channel,
        change,
        expectSeq === undefined ? { id: pending.id } : { id: pending.id, expectSeq },
      );
      if (ack.seq <= this.#seq) {
        // Its delta came before its ack: it is in the confirmed value already.
        this.#pending = this.#pending.filter((p) => p !== pending);
      } else {
        pending.seq = ack.seq;
      }
      return ack;
    } catch (error) {
      this.#rollBack(pending);
      throw error as DeltacastError;
    }
  }

  #rollBack(pending: Change<C>): void {
    const before = this.#pending.length;
    this.#pending = this.#pending.filter((p) => p !== pending);
    if (this.#pending.length !== before) {
      this.#changed();
    }
  }

  #changed(): void {
    this.#options.onChange?.(this.value);
  }
}
