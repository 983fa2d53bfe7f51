/**
 * Everything the client receives on one channel, behind one server-side subscription:
 * its deltas (a log channel, through a [`ChannelLog`]), its document (a state channel,
 * through a [`StateView`]) and its members (either kind, through a [`PresenceView`]).
 *
 * It keeps the server's subscription in line with what is watched: one `subscribe` or
 * `unsubscribe` in flight at a time (the server runs a connection's frames in parallel,
 * so two in flight could be applied in either order), the newest wish sent once the one
 * in flight is answered. It routes the channel's frames to the part they are for, and
 * asks for what a part is missing: `history` for a gap, `state` for a lost patch,
 * `members` pages for the list (once the subscription is stored). App callbacks that
 * throw do not stop delivery: their errors are thrown again on their own.
 */

import { type Delta, ChannelLog, type Step } from "./channel_log.js";
import type { ServerFrame } from "./connection.js";
import type { DeltacastError } from "./errors.js";
import { type Member, type MembersPage, type PresencePatch, PresenceView } from "./presence_view.js";
import { type JsonObject, StateView } from "./state_view.js";


/** Where a subscription stands when the server has answered it. */
export interface SubscribedHead {
  /** The channel's head seq. */
  readonly seq: number;
  /** Its epoch (absent while the channel has no history). */
  readonly epoch?: string;
  /** On a resume: whether every missed delta was sent. */
  readonly recovered?: boolean;
}

/** What a log subscription tells its app. */
export interface SubscriptionHandlers {
  /** A delta, once, in seq order. */
  readonly onDelta: (delta: Delta) => void;
  /** Deltas were missed for good (expired, or the channel started a new epoch): reload. */
  readonly onReset?: (reset: { readonly epoch: string | undefined; readonly seq: number }) => void;
  /** The server answered a subscribe (the first, and each after a reconnect). */
  readonly onSubscribed?: (head: SubscribedHead) => void;
  /** The subscription was refused for good (`forbidden`, too many subscriptions). */
  readonly onError?: (error: DeltacastError) => void;
  /** Deliver live deltas several to a frame when they come together. */
  readonly coalesce?: boolean;
  /** Start after this seq (of `epoch`): deltas after it are caught up first. */
  readonly since?: number;
  /** The epoch `since` counts in. */
  readonly epoch?: string;
}

/** What a watch needs of its client. */
export interface WatchLink {
  /** Sends a request; settles with its answer (`resend: false`: rejected with `closed`
   * when the connection drops first). */
  request(frame: Record<string, unknown>, options?: { resend?: boolean }): Promise<ServerFrame>;
  /** Whether a socket is open. */
  connected(): boolean;
  /** A refusal of the subscription nobody else is told of. */
  refused(error: DeltacastError): void;
  /** The watch is empty and the server knows it: forget it. */
  done(): void;
  /** How many deltas a gap's `history` asks for at once. */
  readonly historyPage: number;
  /** What becomes of an error an app callback throws. */
  readonly callbackError: (error: unknown) => void;
}

/** One channel's watched parts. */
export class ChannelWatch {
  readonly channel: string;
  readonly #link: WatchLink;
  #log: { readonly log: ChannelLog; readonly handlers: SubscriptionHandlers } | undefined;
  #state: { readonly view: StateView; readonly onChange: (value: JsonObject, version: number) => void } | undefined;
  #presence: { readonly view: PresenceView; readonly onChange: (members: readonly Member[]) => void } | undefined;
  /** Counts listings, so that a page of an older one is not taken for the current one's. */
  #listings = 0;
  /** List the members once the server answers the subscribe: a list read before the
   * subscription is stored could miss a change sent before it was. */
  #listAfterSubscribe = false;
  /** A subscribe or unsubscribe is in flight; `#again`: the wish changed meanwhile. */
  #syncing = false;
  #again = false;
  #snapshotAsked = false;

  constructor(channel: string, link: WatchLink) {
    this.channel = channel;
    this.#link = link;
  }

  /** Whether anything is watched. */
  get empty(): boolean {
    return this.#log === undefined && this.#state === undefined && this.#presence === undefined;
  }

  /** Whether the log, the document or the members are watched. */
  watches(part: "log" | "state" | "presence"): boolean {
    return (part === "log" ? this.#log : part === "state" ? this.#state : this.#presence) !== undefined;
  }

  /** Watches the log (`undefined`: stops). */
  setLog(handlers: SubscriptionHandlers | undefined): void {
    if (handlers === undefined) {
      this.#log = undefined;
      return;
    }
    const log = new ChannelLog();
    if (handlers.since !== undefined) {
      log.startAt(handlers.since, handlers.epoch);
    }
    this.#log = { log, handlers };
  }

  /** Watches the document (`undefined`: stops). */
  setState(onChange: ((value: JsonObject, version: number) => void) | undefined): void {
    this.#state = onChange === undefined ? undefined : { view: new StateView(), onChange };
  }

  /** Watches the members (`undefined`: stops). */
  setPresence(onChange: ((members: readonly Member[]) => void) | undefined): void {
    this.#presence = onChange === undefined ? undefined : { view: new PresenceView(), onChange };
  }

  /** A socket opened: nothing is in flight on it. */
  opened(): void {
    this.#syncing = false;
    this.#again = false;
    this.#snapshotAsked = false;
    this.sync();
  }

  /** Tells the server what is watched now: a `subscribe`, or an `unsubscribe` when nothing
   * is. One at a time; a change while one is in flight is sent after its answer. */
  sync(): void {
    if (!this.#link.connected()) {
      return;
    }
    if (this.#syncing) {
      this.#again = true;
      return;
    }
    this.#syncing = true;
    const empty = this.empty;
    const frame = empty ? { action: "unsubscribe", channel: this.channel } : this.#subscribeFrame();
    this.#link.request(frame, { resend: false }).then(
      () => this.#synced(empty),
      (error: DeltacastError) => {
        if (error.code !== "closed") {
          this.#refused(error);
          this.#synced(this.empty);
        }
      },
    );
  }

  #subscribeFrame(): Record<string, unknown> {
    const frame: Record<string, unknown> = { action: "subscribe", channel: this.channel };
    const resume = this.#log?.log.subscribing();
    if (resume !== undefined) {
      frame["since"] = resume.since;
      if (resume.epoch !== undefined) frame["epoch"] = resume.epoch;
    }
    if (this.#log?.handlers.coalesce === true) frame["coalesce"] = true;
    if (this.#presence !== undefined) {
      frame["presence"] = true;
      this.#presence.view.relist(); // patches are held from now on
      this.#listAfterSubscribe = true;
    }
    return frame;
  }

  #synced(wasEmpty: boolean): void {
    this.#syncing = false;
    if (this.#again) {
      this.#again = false;
      this.sync();
    } else if (wasEmpty && this.empty) {
      this.#link.done();
    }
  }

  /** A refusal for good: the parts it was for stop, and the app is told. */
  #refused(error: DeltacastError): void {
    const onError = this.#log?.handlers.onError;
    this.#log = undefined;
    this.#state = undefined;
    this.#presence = undefined;
    if (onError !== undefined) {
      this.#call(() => onError(error));
    } else {
      this.#link.refused(error);
    }
  }

  /** A frame about this channel. */
  frame(frame: ServerFrame): void {
    switch (frame.type) {
      case "delta":
        this.#logStep((log) => log.delta(frame as unknown as Delta));
        return;
      case "deltas":
        for (const delta of (frame["deltas"] as Delta[] | undefined) ?? []) {
          this.#logStep((log) => log.delta(delta));
        }
        return;
      case "subscribed": {
        const head = frame as unknown as SubscribedHead;
        this.#logStep((log) => log.subscribed(head));
        const onSubscribed = this.#log?.handlers.onSubscribed;
        if (onSubscribed !== undefined) this.#call(() => onSubscribed(head));
        this.#subscribed();
        return;
      }
      case "state":
        this.#snapshotAsked = false;
        this.#stateStep((view) => view.snapshot(Number(frame["version"]), frame["value"]));
        this.#subscribed();
        return;
      case "patch":
        this.#stateStep((view) => view.patch(Number(frame["version"]), frame["patch"]));
        return;
      case "presence_patch":
        if (this.#presence !== undefined) {
          const { view, onChange } = this.#presence;
          const step = view.patch(frame as unknown as PresencePatch);
          if (step.changed) this.#call(() => onChange(view.members));
          if (step.list !== undefined) this.#listings += 1;
          this.#list(step.list);
        }
        return;
      default:
        return;
    }
  }

  /** The server answered the `subscribe`: the members can be listed. */
  #subscribed(): void {
    if (this.#listAfterSubscribe && this.#presence !== undefined) {
      this.#listAfterSubscribe = false;
      this.#listings += 1;
      this.#list("");
    }
  }

  #logStep(input: (log: ChannelLog) => Step): void {
    const part = this.#log;
    if (part === undefined) {
      return;
    }
    const { handlers, log } = part;
    const step = input(log);
    if (step.reset !== undefined) {
      const reset = step.reset;
      this.#call(() => handlers.onReset?.(reset));
    }
    for (const delta of step.deliver) {
      this.#call(() => handlers.onDelta(delta));
    }
    if (step.resubscribe === true) {
      this.sync();
    }
    if (step.history !== undefined) {
      const frame = { action: "history", channel: this.channel, since: step.history, limit: this.#link.historyPage };
      this.#link.request(frame, { resend: false }).then(
        (page) => {
          if (this.#log === part) {
            this.#logStep((same) => same.history(page as unknown as Parameters<ChannelLog["history"]>[0]));
          }
        },
        (error: DeltacastError) => {
          // Dropped: the resubscribe resumes from the last seq. Refused for good: say so.
          if (error.code !== "closed" && this.#log === part) this.#refused(error);
        },
      );
    }
  }

  #stateStep(input: (view: StateView) => "changed" | "unchanged" | "snapshot_needed"): void {
    if (this.#state === undefined) {
      return;
    }
    const { view, onChange } = this.#state;
    const step = input(view);
    if (step === "changed") {
      this.#call(() => onChange(view.value, view.version ?? 0));
    } else if (step === "snapshot_needed" && !this.#snapshotAsked) {
      this.#snapshotAsked = true;
      // The answer is a `state` frame, taken as any other.
      this.#link.request({ action: "state", channel: this.channel }, { resend: false }).catch(() => {
        this.#snapshotAsked = false;
      });
    }
  }

  /** Asks for the members page after `after` (`""`: the first), if set. */
  #list(after: string | undefined): void {
    const presence = this.#presence;
    if (after === undefined || presence === undefined) {
      return;
    }
    const listing = this.#listings;
    const frame: Record<string, unknown> = { action: "members", channel: this.channel };
    if (after !== "") frame["after"] = after;
    // A listing belongs to its connection: the next one subscribes and lists again.
    this.#link.request(frame, { resend: false }).then(
      (answer) => {
        if (this.#presence !== presence || this.#listings !== listing) return;
        const step = presence.view.page(answer as unknown as MembersPage);
        if (step.changed) this.#call(() => presence.onChange(presence.view.members));
        if (step.list === "") this.#listings += 1;
        this.#list(step.list);
      },
      () => {
        // Closed: the next open lists again.
      },
    );
  }

  /** Calls an app callback; what it throws goes to `callbackError`, delivery goes on. */
  #call(callback: () => void): void {
    try {
      callback();
    } catch (error) {
      this.#link.callbackError(error);
    }
  }
}
