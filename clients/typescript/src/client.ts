/**
 * The client an app holds: a [`Connection`] kept open, what it watches per channel (a
 * [`ChannelWatch`]: deltas once and in order, a state channel's document, a channel's
 * members), its writes (an [`Outbox`] of publishes and updates, sent again with the same
 * id after a reconnect, so each is stored once), its presence, and its requests.
 *
 * On every (re)open it subscribes again to each channel from where it left off, enters
 * again the channels it is present on (a member is a connection), sends every write not
 * acknowledged yet, oldest first, and every request not answered. A write refused for a
 * reason a retry can change (`rate_limited`, `in_flight`, `internal`) is sent again after
 * the server's `retryAfterMs`; one refused for good settles its promise with a
 * [`DeltacastError`]. Errors that answer nothing the client waits for (an update's
 * `not applied`, after its `updated`) are emitted as `refused`.
 */

import type { Delta } from "./channel_log.js";
import { ChannelWatch, type SubscriptionHandlers } from "./channel_watch.js";
import { Connection, type ConnectionOptions, type ConnectionState, type ServerFrame } from "./connection.js";
import { Emitter, type ListenerErrorHandler, rethrowLater } from "./emitter.js";
import { DeltacastError, errorFrom } from "./errors.js";
import { newId } from "./ids.js";
import type { Ack, PendingPublish, PendingStore, Updated } from "./outbox.js";
import type { Member } from "./presence_view.js";
import { Requests } from "./requests.js";
import type { JsonObject, StateOp } from "./state_view.js";
import { Writer } from "./writer.js";

/** How the client behaves: the connection's options, and where writes are kept. */
export interface ClientOptions extends ConnectionOptions {
  /** Keeps writes not acknowledged yet (default: in memory). */
  readonly store?: PendingStore;
  /** Deltas a gap's `history` request asks for at once (default 100). */
  readonly historyPage?: number;
  /** Send a channel's writes one at a time, so they are stored in the order they were
   * made (default true; false sends them all at once, and they may be stored in any
   * order). */
  readonly inOrder?: boolean;
  /** How long a write or request may go unanswered before it is sent again with its id
   * (default 10 s). */
  readonly answerTimeoutMs?: number;
  /** What becomes of an error thrown by an app callback or event listener (default: thrown
   * again on its own, so delivery goes on and the error still reaches the console). */
  readonly onCallbackError?: ListenerErrorHandler;
}

/** Something the app receives; `unsubscribe` stops it. */
export interface Subscription {
  /** The channel. */
  readonly channel: string;
  /** Stops receiving it. */
  unsubscribe(): void;
}

/** A page of a channel's history. */
export interface HistoryPage {
  readonly channel: string;
  /** The epoch the seqs count in (absent while the channel has no history). */
  readonly epoch?: string;
  /** The channel's head seq. */
  readonly seq: number;
  readonly deltas: readonly Delta[];
  /** Whether there is more: ask again with `since: next`. */
  readonly more: boolean;
  readonly next?: number;
}

/** The client's events. */
export type ClientEvents = {
  /** The connection's state changed. */
  state: ConnectionState;
  /** The server refused something no promise was waiting for (an update `not applied`). */
  refused: DeltacastError;
  /** The store of pending writes failed to load (the client started without them) or to
   * save (they are kept in memory). */
  storeError: unknown;
};

/** The client. */
export class DeltacastClient extends Emitter<ClientEvents> {
  readonly #connection: Connection;
  readonly #writer: Writer;
  readonly #requests: Requests;
  readonly #watches = new Map<string, ChannelWatch>();
  readonly #present = new Map<string, unknown>();
  readonly #presenceOps = new Map<string, Promise<void>>();
  #closed = false;
  readonly #callbackError: ListenerErrorHandler;
  readonly #historyPage: number;

  constructor(options: ClientOptions) {
    super(options.onCallbackError);
    this.#callbackError = options.onCallbackError ?? rethrowLater;
    this.#connection = new Connection(options);
    const send = (frame: Record<string, unknown>) => this.#connection.send(frame);
    this.#writer = new Writer(send, {
      store: options.store,
      inOrder: options.inOrder,
      answerTimeoutMs: options.answerTimeoutMs,
      onStoreError: (error) => this.emit("storeError", error),
      random: options.random,
    });
    this.#requests = new Requests(send, options.answerTimeoutMs);
    this.#historyPage = options.historyPage ?? 100;
    this.#connection.on("state", (state) => {
      if (state !== "connected") {
        this.#writer.dropped();
        this.#requests.dropped();
      }
      this.emit("state", state);
    });
    this.#connection.on("open", () => this.#onOpen());
    this.#connection.on("frame", (frame) => this.#onFrame(frame));
  }

  /** The connection's state. */
  get state(): ConnectionState {
    return this.#connection.state;
  }

  /** Connects (and keeps connected) once the kept writes are read back. */
  async connect(): Promise<void> {
    this.#closed = false;
    await this.#writer.ready();
    if (!this.#closed) {
      this.#connection.connect();
    }
  }

  /**
   * Replaces the socket now (no backoff): call it when the app comes back to the
   * foreground or the device back online, rather than wait for the heartbeat to find a
   * dead socket. Does nothing unless connecting or connected.
   */
  reconnect(): void {
    this.#connection.reconnect();
  }

  /** Disconnects for good: the promises of pending writes reject with `closed` (the
   * writes stay in the store, sent again by the next client), requests are rejected. */
  close(): void {
    this.#closed = true;
    this.#writer.close();
    this.#requests.close();
    this.#connection.close();
  }

  /** Receives a log channel's deltas, each once and in order, across reconnects. */
  subscribe(channel: string, handlers: SubscriptionHandlers): Subscription {
    return this.#watch(channel, "log", (watch) => watch.setLog(handlers), (watch) => watch.setLog(undefined));
  }

  /**
   * Watches a state channel's document: `onChange` gets it whole (a snapshot at first and
   * after every reconnect, then each change) with its version.
   */
  watchState(channel: string, onChange: (value: JsonObject, version: number) => void): Subscription {
    return this.#watch(channel, "state", (watch) => watch.setState(onChange), (watch) => watch.setState(undefined));
  }

  /** Watches a channel's members: `onChange` gets the whole list, earliest first, when it
   * changes. */
  watchPresence(channel: string, onChange: (members: readonly Member[]) => void): Subscription {
    return this.#watch(channel, "presence", (watch) => watch.setPresence(onChange), (watch) => watch.setPresence(undefined));
  }

  /**
   * Publishes `data` on `channel`; settles with the ack once stored. Made offline, it is
   * sent once connected; made before a drop, it is sent again with the same `id` (yours,
   * or one the client makes), and stored once. Data that is not JSON, or over 24 KiB
   * serialised, is refused at once (`bad_request`, `too_large`), never queued.
   */
  publish(channel: string, data: unknown, options: { id?: string; expectSeq?: number } = {}): Promise<Ack> {
    const id = options.id ?? newId();
    const publish = options.expectSeq === undefined ? { channel, id, data } : { channel, id, data, expectSeq: options.expectSeq };
    return this.#writer.write<Ack>(publish);
  }

  /**
   * Changes a state channel's document: `ops` apply together, exactly once per `id` (yours,
   * e.g. `vote` for one vote per user, or one the client makes), across reconnects like a
   * publish. Settles once stored; the document changes at the next fold.
   */
  update(channel: string, ops: readonly StateOp[], options: { id?: string } = {}): Promise<Updated> {
    return this.#writer.write<Updated>({ channel, id: options.id ?? newId(), data: undefined, ops });
  }

  /** Writes made and not acknowledged yet, oldest first. */
  pending(): readonly PendingPublish[] {
    return this.#writer.pending();
  }

  /** Reads a page of a log channel's history: deltas after `since`, in order. */
  async history(channel: string, options: { since: number; limit?: number }): Promise<HistoryPage> {
    const frame: Record<string, unknown> = { action: "history", channel, since: options.since };
    if (options.limit !== undefined) frame["limit"] = options.limit;
    const page = await this.#requests.request(frame);
    return page as unknown as HistoryPage;
  }

  /** Enters `channel`'s presence with `data` (again after every reconnect), or updates it.
   * A channel's presence changes go one at a time, in the order made. */
  enter(channel: string, data?: unknown): Promise<void> {
    this.#present.set(channel, data);
    return this.#presenceOp(channel, presenceFrame(channel, "enter", data));
  }

  /** Leaves `channel`'s presence. */
  leave(channel: string): Promise<void> {
    this.#present.delete(channel);
    return this.#presenceOp(channel, { action: "presence", channel, op: "leave" });
  }

  #presenceOp(channel: string, frame: Record<string, unknown>): Promise<void> {
    const before = this.#presenceOps.get(channel) ?? Promise.resolve();
    const op = before
      .catch(() => {})
      .then(() => this.#requests.request(frame))
      .then(
        () => {},
        (error: DeltacastError) => {
          if (!error.retryable && frame["op"] === "enter" && this.#present.get(channel) === frame["data"]) {
            this.#present.delete(channel); // refused for good: not entered again on reconnect
          }
          throw error;
        },
      );
    this.#presenceOps.set(channel, op);
    void op.catch(() => {}).then(() => {
      if (this.#presenceOps.get(channel) === op) this.#presenceOps.delete(channel);
    });
    return op;
  }

  #watch(
    channel: string,
    part: "log" | "state" | "presence",
    start: (watch: ChannelWatch) => void,
    stop: (watch: ChannelWatch) => void,
  ): Subscription {
    let watch = this.#watches.get(channel);
    if (watch?.watches(part) === true) {
      throw new DeltacastError("bad_request", `${channel} is watched already (${part})`);
    }
    if (watch === undefined) {
      const made: ChannelWatch = new ChannelWatch(channel, {
        request: (frame, options) => this.#requests.request(frame, options),
        connected: () => this.#connection.state === "connected",
        refused: (error) => this.emit("refused", error),
        done: () => {
          if (this.#watches.get(channel) === made) this.#watches.delete(channel);
        },
        historyPage: this.#historyPage,
        callbackError: (error) => this.#callbackError(error),
      });
      watch = made;
      this.#watches.set(channel, watch);
    }
    start(watch);
    watch.sync();
    const watched = watch;
    let active = true;
    return {
      channel,
      unsubscribe: () => {
        if (!active || !watched.watches(part)) {
          return;
        }
        active = false;
        stop(watched);
        watched.sync();
      },
    };
  }

  #onOpen(): void {
    for (const watch of this.#watches.values()) {
      watch.opened();
    }
    for (const [channel, data] of this.#present) {
      const entering = (frame: Record<string, unknown>) => frame["action"] === "presence" && frame["channel"] === channel;
      if (!this.#requests.waiting(entering)) {
        this.#connection.send(presenceFrame(channel, "enter", data));
      }
    }
    this.#writer.opened();
    this.#requests.opened();
  }

  #onFrame(frame: ServerFrame): void {
    if (frame.type === "ack" || frame.type === "updated") {
      this.#writer.answered(frame);
      return;
    }
    if (frame.type === "error") {
      const error = errorFrom(frame, String(frame["message"] ?? ""));
      if (!this.#writer.refused(frame, error) && !this.#requests.answer(frame)) {
        this.emit("refused", error);
      }
      return;
    }
    const channel = typeof frame["channel"] === "string" ? frame["channel"] : "";
    this.#watches.get(channel)?.frame(frame);
    this.#requests.answer(frame);
  }
}

function presenceFrame(channel: string, op: "enter" | "leave", data: unknown): Record<string, unknown> {
  return data === undefined ? { action: "presence", channel, op } : { action: "presence", channel, op, data };
}
