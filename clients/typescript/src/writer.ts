/**
 * The client's writes (publishes and state updates) on their way: kept in the
 * [`Outbox`] until acknowledged, sent when connected, and sent again with the same id on
 * the next connection, so each is stored once.
 *
 * In order (the default), a channel's writes are sent one at a time, the next once the
 * one before is acknowledged or refused for good: API Gateway runs the frames of one
 * connection in parallel, so writes sent together can be stored in any order, and a
 * burst sent after a reconnect (messages written offline) would be. Writes to different
 * channels go in parallel. A write refused for a reason a retry can change
 * (`rate_limited`, `in_flight`, `internal`) is sent again after the server's
 * `retryAfterMs`, holding its channel's place.
 */

import type { DeltacastError } from "./errors.js";
import { type Ack, Outbox, type PendingPublish, type PendingStore, publishKey, type Updated } from "./outbox.js";

/** A frame from the server: a JSON object with a `type`. */
type Frame = { readonly type: string } & Record<string, unknown>;

/** The writes on their way. */
export class Writer {
  readonly #outbox: Outbox;
  readonly #send: (frame: Record<string, unknown>) => boolean;
  readonly #inOrder: boolean;
  /** Writes sent on the current connection and not settled. */
  readonly #sent = new Set<string>();
  readonly #retries = new Map<string, ReturnType<typeof setTimeout>>();

  constructor(
    send: (frame: Record<string, unknown>) => boolean,
    options: { readonly store?: PendingStore | undefined; readonly inOrder?: boolean | undefined } = {},
  ) {
    this.#send = send;
    this.#outbox = new Outbox(options.store);
    this.#inOrder = options.inOrder ?? true;
  }

  /** Resolves once the store's writes are back. */
  ready(): Promise<void> {
    return this.#outbox.ready();
  }

  /** Writes made and not acknowledged yet, oldest first. */
  pending(): readonly PendingPublish[] {
    return this.#outbox.pending();
  }

  /** Queues a write and sends it if its turn has come; settles with its answer. */
  write<A extends Ack | Updated>(write: Omit<PendingPublish, "queuedAt">): Promise<A> {
    const answered = this.#outbox.add<A>(write);
    this.#pump();
    return answered;
  }

  /** A socket opened: sends what is due. */
  opened(): void {
    this.#pump();
  }

  /** The socket dropped: nothing is in flight any more. */
  dropped(): void {
    this.#sent.clear();
    this.#clearRetries();
  }

  /** Stops retrying (the client closed). */
  close(): void {
    this.#clearRetries();
  }

  /** An `ack` or `updated`: settles its write. */
  answered(frame: Frame): void {
    const channel = String(frame["channel"] ?? "");
    const id = String(frame["id"]);
    const answer: Ack | Updated =
      frame.type === "ack"
        ? { channel, id, seq: Number(frame["seq"]), epoch: String(frame["epoch"]) }
        : { channel, id, duplicate: frame["duplicate"] === true };
    this.#outbox.acked(answer);
    this.#settled(channel, id);
  }

  /** An `error`: returns whether it was about a write (settled, or to be retried). */
  refused(frame: Frame, error: DeltacastError): boolean {
    const channel = frame["channel"];
    const id = frame["id"];
    if (typeof channel !== "string" || typeof id !== "string" || !this.#outbox.has(channel, id)) {
      return false;
    }
    if (this.#outbox.refused(channel, id, error)) {
      this.#settled(channel, id);
      return true;
    }
    const key = publishKey(channel, id);
    clearTimeout(this.#retries.get(key));
    this.#retries.set(
      key,
      setTimeout(() => {
        this.#retries.delete(key);
        const write = this.#outbox.pending().find((p) => p.channel === channel && p.id === id);
        if (write !== undefined && this.#sent.has(key)) {
          this.#sendWrite(write);
        }
      }, error.details.retryAfterMs ?? 1000),
    );
    return true;
  }

  #settled(channel: string, id: string): void {
    const key = publishKey(channel, id);
    clearTimeout(this.#retries.get(key));
    this.#retries.delete(key);
    if (this.#sent.delete(key)) {
      this.#pump();
    }
  }

  /** Sends every write that is due: all not sent yet, or in order the oldest of each
   * channel with nothing in flight. */
  #pump(): void {
    const busy = new Set<string>();
    for (const write of this.#outbox.pending()) {
      const key = publishKey(write.channel, write.id);
      if (this.#sent.has(key)) {
        busy.add(write.channel);
        continue;
      }
      if (this.#inOrder && busy.has(write.channel)) {
        continue;
      }
      if (!this.#sendWrite(write)) {
        return;
      }
      this.#sent.add(key);
      busy.add(write.channel);
    }
  }

  #sendWrite(write: PendingPublish): boolean {
    const frame: Record<string, unknown> =
      write.ops === undefined
        ? { action: "publish", channel: write.channel, id: write.id, data: write.data }
        : { action: "update", channel: write.channel, id: write.id, ops: write.ops };
    if (write.expectSeq !== undefined) {
      frame["expectSeq"] = write.expectSeq;
    }
    return this.#send(frame);
  }

  #clearRetries(): void {
    for (const timer of this.#retries.values()) {
      clearTimeout(timer);
    }
    this.#retries.clear();
  }
}
