/**
 * The client an app holds: a [`Connection`] kept open, its subscriptions (each a
 * [`ChannelLog`]: deltas once, in order, across reconnects) and its publishes (an
 * [`Outbox`]: sent again with the same id after a reconnect, so each is stored once).
 *
 * On every (re)open it subscribes again to each channel from where it left off, then
 * sends every publish not acknowledged yet, oldest first. A publish refused for a reason
 * a retry can change (`rate_limited`, `in_flight`, `internal`) is sent again after the
 * server's `retryAfterMs`; one refused for good settles its promise with a
 * [`DeltacastError`].
 */

import { type Delta, ChannelLog, type Step } from "./channel_log.js";
import { Connection, type ConnectionOptions, type ConnectionState, type ServerFrame } from "./connection.js";
import { Emitter } from "./emitter.js";
import { DeltacastError, type ErrorCode } from "./errors.js";
import { newId } from "./ids.js";
import { type Ack, Outbox, type PendingPublish, type PendingStore, publishKey } from "./outbox.js";

/** How the client behaves: the connection's options, and where publishes are kept. */
export interface ClientOptions extends ConnectionOptions {
  /** Keeps publishes not acknowledged yet (default: in memory). */
  readonly store?: PendingStore;
  /** Deltas a gap's `history` request asks for at once (default 100). */
  readonly historyPage?: number;
}

/** What a subscription tells its app. */
export interface SubscriptionHandlers {
  /** A delta, once, in seq order. */
  readonly onDelta: (delta: Delta) => void;
  /** Deltas were missed for good (expired, or the channel started a new epoch): reload. */
  readonly onReset?: (reset: { readonly epoch: string | undefined; readonly seq: number }) => void;
  /** Deliver live deltas several to a frame when they come together. */
  readonly coalesce?: boolean;
}

/** A channel the app receives. */
export interface Subscription {
  /** The channel. */
  readonly channel: string;
  /** Stops receiving it. */
  unsubscribe(): void;
}

/** The client's events. */
export type ClientEvents = {
  /** The connection's state changed. */
  state: ConnectionState;
};

interface Subscribed {
  readonly log: ChannelLog;
  readonly handlers: SubscriptionHandlers;
}

/** The client. */
export class DeltacastClient extends Emitter<ClientEvents> {
  readonly #connection: Connection;
  readonly #outbox: Outbox;
  readonly #subscriptions = new Map<string, Subscribed>();
  readonly #historyPage: number;
  readonly #retries = new Map<string, ReturnType<typeof setTimeout>>();

  constructor(options: ClientOptions) {
    super();
    this.#connection = new Connection(options);
    this.#outbox = new Outbox(options.store);
    this.#historyPage = options.historyPage ?? 100;
    this.#connection.on("state", (state) => this.emit("state", state));
    this.#connection.on("open", () => this.#onOpen());
    this.#connection.on("frame", (frame) => this.#onFrame(frame));
  }

  /** The connection's state. */
  get state(): ConnectionState {
    return this.#connection.state;
  }

  /** Connects (and keeps connected) once the kept publishes are read back. */
  async connect(): Promise<void> {
    await this.#outbox.ready();
    this.#connection.connect();
  }

  /** Disconnects for good; pending publishes stay in the store. */
  close(): void {
    for (const timer of this.#retries.values()) {
      clearTimeout(timer);
    }
    this.#retries.clear();
    this.#connection.close();
  }

  /** Receives `channel`'s deltas, each once and in order, across reconnects. */
  subscribe(channel: string, handlers: SubscriptionHandlers): Subscription {
    if (this.#subscriptions.has(channel)) {
      throw new DeltacastError("bad_request", `already subscribed to ${channel}`);
    }
    const subscribed: Subscribed = { log: new ChannelLog(), handlers };
    this.#subscriptions.set(channel, subscribed);
    this.#sendSubscribe(channel, subscribed);
    return {
      channel,
      unsubscribe: () => {
        if (this.#subscriptions.get(channel) === subscribed) {
          this.#subscriptions.delete(channel);
          this.#connection.send({ action: "unsubscribe", channel });
        }
      },
    };
  }

  /**
   * Publishes `data` on `channel`; settles with the ack once stored. Made offline, it is
   * sent once connected; made before a drop, it is sent again with the same `id` (yours,
   * or one the client makes), and stored once.
   */
  publish(channel: string, data: unknown, options: { id?: string; expectSeq?: number } = {}): Promise<Ack> {
    const id = options.id ?? newId();
    const publish =
      options.expectSeq === undefined ? { channel, id, data } : { channel, id, data, expectSeq: options.expectSeq };
    const acked = this.#outbox.add(publish);
    this.#sendPublish({ ...publish, queuedAt: Date.now() });
    return acked;
  }

  /** Publishes made and not acknowledged yet, oldest first. */
  pending(): readonly PendingPublish[] {
    return this.#outbox.pending();
  }

  #onOpen(): void {
    for (const [channel, subscribed] of this.#subscriptions) {
      this.#sendSubscribe(channel, subscribed);
    }
    for (const publish of this.#outbox.pending()) {
      this.#sendPublish(publish);
    }
  }

  #sendSubscribe(channel: string, subscribed: Subscribed): void {
    if (this.#connection.state !== "connected") {
      return;
    }
    const resume = subscribed.log.subscribing();
    const frame: Record<string, unknown> = { action: "subscribe", channel };
    if (resume !== undefined) {
      frame["since"] = resume.since;
      if (resume.epoch !== undefined) {
        frame["epoch"] = resume.epoch;
      }
    }
    if (subscribed.handlers.coalesce === true) {
      frame["coalesce"] = true;
    }
    this.#connection.send(frame);
  }

  #sendPublish(publish: PendingPublish): void {
    const frame: Record<string, unknown> = {
      action: "publish",
      channel: publish.channel,
      id: publish.id,
      data: publish.data,
    };
    if (publish.expectSeq !== undefined) {
      frame["expectSeq"] = publish.expectSeq;
    }
    this.#connection.send(frame);
  }

  #onFrame(frame: ServerFrame): void {
    const channel = typeof frame["channel"] === "string" ? frame["channel"] : undefined;
    const subscribed = channel === undefined ? undefined : this.#subscriptions.get(channel);
    switch (frame.type) {
      case "delta":
        if (subscribed !== undefined) {
          this.#apply(channel ?? "", subscribed, subscribed.log.delta(frame as unknown as Delta));
        }
        return;
      case "deltas":
        if (subscribed !== undefined) {
          for (const delta of (frame["deltas"] as Delta[] | undefined) ?? []) {
            this.#apply(channel ?? "", subscribed, subscribed.log.delta(delta));
          }
        }
        return;
      case "subscribed":
        if (subscribed !== undefined) {
          const head = frame as unknown as { seq: number; epoch?: string; recovered?: boolean };
          this.#apply(channel ?? "", subscribed, subscribed.log.subscribed(head));
        }
        return;
      case "history":
        if (subscribed !== undefined && frame["id"] === GAP_ID) {
          const page = frame as unknown as { deltas: Delta[]; more: boolean; next?: number; seq: number };
          this.#apply(channel ?? "", subscribed, subscribed.log.history(page));
        }
        return;
      case "ack": {
        const ack: Ack = {
          channel: channel ?? "",
          id: String(frame["id"]),
          seq: Number(frame["seq"]),
          epoch: String(frame["epoch"]),
        };
        this.#settleRetry(ack.channel, ack.id);
        this.#outbox.acked(ack);
        return;
      }
      case "error":
        this.#onError(frame);
        return;
      default:
        return;
    }
  }

  #apply(channel: string, subscribed: Subscribed, step: Step): void {
    if (step.reset !== undefined) {
      subscribed.handlers.onReset?.(step.reset);
    }
    for (const delta of step.deliver) {
      subscribed.handlers.onDelta(delta);
    }
    if (step.history !== undefined) {
      this.#connection.send({
        action: "history",
        channel,
        since: step.history,
        limit: this.#historyPage,
        id: GAP_ID,
      });
    }
  }

  #onError(frame: ServerFrame): void {
    const channel = typeof frame["channel"] === "string" ? frame["channel"] : undefined;
    const id = typeof frame["id"] === "string" ? frame["id"] : undefined;
    if (channel === undefined || id === undefined || !this.#outbox.has(channel, id)) {
      return;
    }
    const details: { seq?: number; epoch?: string; retryAfterMs?: number; id: string; channel: string } = {
      id,
      channel,
    };
    if (typeof frame["seq"] === "number") details.seq = frame["seq"];
    if (typeof frame["epoch"] === "string") details.epoch = frame["epoch"];
    if (typeof frame["retryAfterMs"] === "number") details.retryAfterMs = frame["retryAfterMs"];
    const error = new DeltacastError(frame["code"] as ErrorCode, String(frame["message"] ?? ""), details);
    if (this.#outbox.refused(channel, id, error)) {
      return;
    }
    // Retryable: the same id again, after the server's wait (or a second).
    const publish = this.#outbox.pending().find((p) => p.channel === channel && p.id === id);
    if (publish !== undefined) {
      const key = publishKey(channel, id);
      clearTimeout(this.#retries.get(key));
      this.#retries.set(
        key,
        setTimeout(() => {
          this.#retries.delete(key);
          if (this.#outbox.has(channel, id)) {
            this.#sendPublish(publish);
          }
        }, details.retryAfterMs ?? 1000),
      );
    }
  }

  #settleRetry(channel: string, id: string): void {
    const key = publishKey(channel, id);
    clearTimeout(this.#retries.get(key));
    this.#retries.delete(key);
  }
}

/** The id of the `history` requests that fill a channel's gaps (the answer names the
 * channel). */
const GAP_ID = "gap";
