/**
 * Everything the client receives on one channel, behind one server-side subscription:
 * its deltas (a log channel, through a [`ChannelLog`]), its document (a state channel,
 * through a [`StateView`]) and its members (either kind, through a [`PresenceView`]).
 * It builds the channel's `subscribe` frame from what is watched, routes the channel's
 * frames to the part they are for, and asks for what a part is missing: `history` for a
 * gap, `state` for a lost patch, `members` pages for the list.
 */

import { type Delta, ChannelLog, type Step } from "./channel_log.js";
import { type Member, type MembersPage, type PresencePatch, PresenceView } from "./presence_view.js";
import { type JsonObject, StateView } from "./state_view.js";

/** A frame from the server: a JSON object with a `type`. */
type Frame = { readonly type: string } & Record<string, unknown>;

/** What a log subscription tells its app. */
export interface SubscriptionHandlers {
  /** A delta, once, in seq order. */
  readonly onDelta: (delta: Delta) => void;
  /** Deltas were missed for good (expired, or the channel started a new epoch): reload. */
  readonly onReset?: (reset: { readonly epoch: string | undefined; readonly seq: number }) => void;
  /** Deliver live deltas several to a frame when they come together. */
  readonly coalesce?: boolean;
}

/** What a watch needs of its client. */
export interface WatchLink {
  /** Sends a frame; false when not connected (the watch subscribes again on `open`). */
  send(frame: Record<string, unknown>): boolean;
  /** Sends a request and settles with its answer (`resend: false`: rejected when the
   * connection drops first, rather than sent again). */
  request(frame: Record<string, unknown>, options?: { resend?: boolean }): Promise<Frame>;
  /** How many deltas a gap's `history` asks for at once. */
  readonly historyPage: number;
}

/** The id of the `history` requests that fill a gap (their answers name the channel). */
const GAP_ID = "gap";

/** One channel's watched parts. */
export class ChannelWatch {
  readonly channel: string;
  readonly #link: WatchLink;
  #log: { readonly log: ChannelLog; readonly handlers: SubscriptionHandlers } | undefined;
  #state: { readonly view: StateView; readonly onChange: (value: JsonObject, version: number) => void } | undefined;
  #presence: { readonly view: PresenceView; readonly onChange: (members: readonly Member[]) => void } | undefined;
  /** Counts listings, so that a page of an older one (sent again after a reconnect) is
   * not taken for the current one's. */
  #listings = 0;
  /** The members are to be listed once the server answers the `subscribe`: it runs a
   * connection's frames in parallel, and a listing read before the subscription is
   * stored could miss a change sent before it was. */
  #listAfterSubscribe = false;

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
    this.#log = handlers === undefined ? undefined : { log: new ChannelLog(), handlers };
  }

  /** Watches the document (`undefined`: stops). */
  setState(onChange: ((value: JsonObject, version: number) => void) | undefined): void {
    this.#state = onChange === undefined ? undefined : { view: new StateView(), onChange };
  }

  /** Watches the members (`undefined`: stops). */
  setPresence(onChange: ((members: readonly Member[]) => void) | undefined): void {
    this.#presence = onChange === undefined ? undefined : { view: new PresenceView(), onChange };
  }

  /** Sends the channel's `subscribe` (on every open, and when the watched parts change). */
  subscribe(): void {
    const frame: Record<string, unknown> = { action: "subscribe", channel: this.channel };
    const resume = this.#log?.log.subscribing();
    if (resume !== undefined) {
      frame["since"] = resume.since;
      if (resume.epoch !== undefined) frame["epoch"] = resume.epoch;
    }
    if (this.#log?.handlers.coalesce === true) frame["coalesce"] = true;
    if (this.#presence !== undefined) frame["presence"] = true;
    if (!this.#link.send(frame)) {
      return;
    }
    if (this.#presence !== undefined) {
      this.#presence.view.relist(); // patches are held from now on
      this.#listAfterSubscribe = true;
    }
  }

  /** The server answered the `subscribe` (`subscribed`, or a state channel's `state`):
   * the members can be listed. */
  #subscribed(): void {
    if (this.#listAfterSubscribe && this.#presence !== undefined) {
      this.#listAfterSubscribe = false;
      this.#listings += 1;
      this.#list("");
    }
  }

  /** A frame about this channel. */
  frame(frame: Frame): void {
    switch (frame.type) {
      case "delta":
        this.#logStep((log) => log.delta(frame as unknown as Delta));
        return;
      case "deltas":
        for (const delta of (frame["deltas"] as Delta[] | undefined) ?? []) {
          this.#logStep((log) => log.delta(delta));
        }
        return;
      case "subscribed":
        this.#logStep((log) => log.subscribed(frame as unknown as { seq: number; epoch?: string; recovered?: boolean }));
        this.#subscribed();
        return;
      case "history":
        if (frame["id"] === GAP_ID) {
          this.#logStep((log) => log.history(frame as unknown as { deltas: Delta[]; more: boolean; next?: number; seq: number }));
        }
        return;
      case "state":
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
          if (step.changed) onChange(view.members);
          if (step.list !== undefined) this.#listings += 1;
          this.#list(step.list);
        }
        return;
      default:
        return;
    }
  }

  #logStep(input: (log: ChannelLog) => Step): void {
    if (this.#log === undefined) {
      return;
    }
    const { handlers } = this.#log;
    const step = input(this.#log.log);
    if (step.reset !== undefined) {
      handlers.onReset?.(step.reset);
    }
    for (const delta of step.deliver) {
      handlers.onDelta(delta);
    }
    if (step.history !== undefined) {
      this.#link.send({ action: "history", channel: this.channel, since: step.history, limit: this.#link.historyPage, id: GAP_ID });
    }
  }

  #stateStep(input: (view: StateView) => "changed" | "unchanged" | "snapshot_needed"): void {
    if (this.#state === undefined) {
      return;
    }
    const { view, onChange } = this.#state;
    const step = input(view);
    if (step === "changed") {
      onChange(view.value, view.version ?? 0);
    } else if (step === "snapshot_needed") {
      this.#link.send({ action: "state", channel: this.channel });
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
        if (step.changed) presence.onChange(presence.view.members);
        if (step.list === "") this.#listings += 1;
        this.#list(step.list);
      },
      () => {
        // Closed: the next open lists again.
      },
    );
  }
}
