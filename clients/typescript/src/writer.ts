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
 * `retryAfterMs` (and, refused again, after a growing jittered backoff on top), holding
 * its channel's place. A write the server does not answer within `answerTimeoutMs` (its
 * invocation failed, its ack was lost) is sent again with its id. A write that could
 * never be sent (not JSON, or over the size limits) is refused before it is queued.
 */

import { backoffDelay } from "./backoff.js";
import type { ServerFrame } from "./connection.js";
import { DeltacastError } from "./errors.js";
import { type Ack, Outbox, type PendingPublish, type PendingStore, publishKey, type Updated } from "./outbox.js";

/** The largest `data`, serialised (MAX_DATA_BYTES), and the largest frame (API Gateway's). */
const MAX_DATA_BYTES = 24 * 1024;
const MAX_FRAME_BYTES = 32 * 1024;

/** How the writer behaves. */
export interface WriterOptions {
  readonly store?: PendingStore | undefined;
  readonly inOrder?: boolean | undefined;
  /** How long a sent write may go unanswered before it is sent again (default 10 s). */
  readonly answerTimeoutMs?: number | undefined;
  /** Told when the store fails to load or save. */
  readonly onStoreError?: ((error: unknown) => void) | undefined;
  /** Random numbers in [0, 1) for the jitter. */
  readonly random?: (() => number) | undefined;
}


/** The writes on their way. */
export class Writer {
  readonly #outbox: Outbox;
  readonly #send: (frame: Record<string, unknown>) => boolean;
  readonly #inOrder: boolean;
  /** Writes sent on the current connection and not settled. */
  readonly #sent = new Set<string>();
  readonly #retries = new Map<string, ReturnType<typeof setTimeout>>();
  readonly #deadlines = new Map<string, ReturnType<typeof setTimeout>>();
  /** Refusals in a row, per write: the backoff on top of `retryAfterMs`. */
  readonly #refusals = new Map<string, number>();
  readonly #options: WriterOptions;

  constructor(send: (frame: Record<string, unknown>) => boolean, options: WriterOptions = {}) {
    this.#send = send;
    this.#options = options;
    this.#outbox = new Outbox(options.store, options.onStoreError);
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
    const refusal = unsendable(write);
    if (refusal !== undefined) {
      return Promise.reject(refusal);
    }
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

  /** Stops sending (the client closed): the promises reject with `closed`; the writes
   * stay in the store. */
  close(): void {
    this.#clearRetries();
    this.#outbox.abandon(new DeltacastError("closed", "the client was closed; the write stays in its store"));
  }

  /** An `ack` or `updated`: settles its write. */
  answered(frame: ServerFrame): void {
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
  refused(frame: ServerFrame, error: DeltacastError): boolean {
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
    const refusals = (this.#refusals.get(key) ?? 0) + 1;
    this.#refusals.set(key, refusals);
    // Refused again: many writers refused together would all come back at once.
    const backoff = refusals > 1 ? backoffDelay(refusals - 2, undefined, this.#options.random) : 0;
    clearTimeout(this.#deadlines.get(key));
    clearTimeout(this.#retries.get(key));
    this.#retries.set(
      key,
      setTimeout(() => {
        this.#retries.delete(key);
        const write = this.#outbox.pending().find((p) => p.channel === channel && p.id === id);
        if (write !== undefined && this.#sent.has(key)) {
          this.#sendWrite(write);
        }
      }, (error.details.retryAfterMs ?? 1000) + backoff),
    );
    return true;
  }

  #settled(channel: string, id: string): void {
    const key = publishKey(channel, id);
    clearTimeout(this.#retries.get(key));
    this.#retries.delete(key);
    clearTimeout(this.#deadlines.get(key));
    this.#deadlines.delete(key);
    this.#refusals.delete(key);
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
    if (!this.#send(frame)) {
      return false;
    }
    // No answer in time: the same id again (the server answers a stored one with its ack).
    const key = publishKey(write.channel, write.id);
    clearTimeout(this.#deadlines.get(key));
    this.#deadlines.set(
      key,
      setTimeout(() => {
        this.#deadlines.delete(key);
        if (this.#sent.has(key) && !this.#retries.has(key) && this.#outbox.has(write.channel, write.id)) {
          this.#sendWrite(write);
        }
      }, this.#options.answerTimeoutMs ?? 10_000),
    );
    return true;
  }

  #clearRetries(): void {
    for (const timer of [...this.#retries.values(), ...this.#deadlines.values()]) {
      clearTimeout(timer);
    }
    this.#retries.clear();
    this.#deadlines.clear();
  }
}

/** Why `write` could never be sent, if it could not: data that is not JSON, or over the
 * server's limits (which would close the socket, again and again). */
function unsendable(write: Omit<PendingPublish, "queuedAt">): DeltacastError | undefined {
  let text: string | undefined;
  try {
    text = JSON.stringify(write.ops === undefined ? write.data : write.ops);
  } catch (error) {
    return new DeltacastError("bad_request", `data is not JSON: ${String(error)}`, { channel: write.channel, id: write.id });
  }
  if (text === undefined && write.ops === undefined) {
    return new DeltacastError("bad_request", "data is not JSON (undefined, a function or a symbol)", {
      channel: write.channel,
      id: write.id,
    });
  }
  const bytes = utf8Length(text ?? "");
  const [limit, what] = write.ops === undefined ? [MAX_DATA_BYTES, "data"] : [MAX_FRAME_BYTES - 512, "ops"];
  if (bytes > limit) {
    return new DeltacastError("too_large", `${what} is ${bytes} bytes serialised; at most ${limit}`, {
      channel: write.channel,
      id: write.id,
    });
  }
  return undefined;
}

/** The UTF-8 length of `text` (without TextEncoder, which older React Native lacks). */
function utf8Length(text: string): number {
  let bytes = 0;
  for (let i = 0; i < text.length; i += 1) {
    const code = text.charCodeAt(i);
    if (code < 0x80) bytes += 1;
    else if (code < 0x800) bytes += 2;
    else if (code >= 0xd800 && code <= 0xdbff) {
      bytes += 4;
      i += 1;
    } else bytes += 3;
  }
  return bytes;
}
