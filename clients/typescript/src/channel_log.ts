/**
 * One channel's deltas as an app should see them: each once, in seq order, gaps filled
 * from history, across reconnects. Pure logic: it is told what arrived and answers what
 * to deliver and what to ask the server for; `channel_watch.ts` does the talking.
 *
 * - Deltas that arrive before `subscribed` are held (catch-up and live ones race).
 * - A delta at or below the last applied seq is a duplicate and dropped; one right after
 *   it is delivered, with any held ones that follow; one further ahead is held, and the
 *   gap is asked for with `history` (one request at a time).
 * - On `subscribed`: a first subscription starts at the head; a resubscription (with
 *   `since`) delivers the catch-up, and when it was not `recovered` in the same epoch,
 *   pages `history` from the last applied seq; in another epoch (the channel's history
 *   expired and started again) the log resets: the app reloads (`reset`), and the new
 *   epoch starts at its head.
 */

/** A delta as the server sends it. */
export interface Delta {
  readonly channel: string;
  readonly seq: number;
  readonly epoch: string;
  readonly id: string;
  readonly from: string;
  readonly ts: number;
  readonly data: unknown;
}

/** What the log asks of its owner after each input. */
export interface Step {
  /** Deltas to hand to the app, in order. */
  readonly deliver: Delta[];
  /** Ask for `history` after this seq (a gap to fill), if set. */
  readonly history?: number;
  /** The log skipped to `seq`: the channel's history restarted (another epoch, whose
   * head is `seq`), or deltas up to `seq` that were never delivered have expired. What
   * the app shows may miss them: reload it. */
  readonly reset?: { readonly epoch: string | undefined; readonly seq: number };
  /** Subscribe again (from the last seq and epoch): a delta or page of another epoch
   * came, and only the server can tell a new epoch from a late old one. */
  readonly resubscribe?: boolean;
}

/** Where a resubscription resumes. */
export interface Resume {
  readonly since: number;
  readonly epoch?: string;
}

/** One channel's delivery order. */
export class ChannelLog {
  #epoch: string | undefined;
  #applied = 0;
  #started = false;
  #subscribing = false;
  #held = new Map<number, Delta>();
  #historyAsked = false;
  /** A delta of another epoch came and a resubscribe was asked for. */
  #otherEpochSeen = false;

  /** The last seq handed to the app, and its epoch. */
  get position(): { readonly epoch: string | undefined; readonly seq: number } {
    return { epoch: this.#epoch, seq: this.#applied };
  }

  /** Starts the log after `seq` of `epoch` (what the app already has): the first
   * subscribe resumes from there. */
  startAt(seq: number, epoch: string | undefined): void {
    this.#started = true;
    this.#applied = seq;
    this.#epoch = epoch;
  }

  /** A `subscribe` is being sent: hold deltas until its `subscribed`; where to resume
   * from, once the log has started. */
  subscribing(): Resume | undefined {
    this.#subscribing = true;
    this.#historyAsked = false;
    if (!this.#started) {
      return undefined;
    }
    return this.#epoch === undefined ? { since: this.#applied } : { since: this.#applied, epoch: this.#epoch };
  }

  /** The `subscribed` answer. */
  subscribed(head: { seq: number; epoch?: string; recovered?: boolean }): Step {
    this.#subscribing = false;
    this.#otherEpochSeen = false;
    if (!this.#started) {
      this.#started = true;
      this.#epoch = head.epoch;
      this.#applied = head.seq;
      return this.#drain();
    }
    if (head.epoch !== undefined && this.#epoch !== undefined && head.epoch !== this.#epoch) {
      this.#epoch = head.epoch;
      this.#applied = head.seq;
      this.#held.clear();
      return { deliver: [], reset: { epoch: head.epoch, seq: head.seq } };
    }
    if (head.epoch === undefined && head.recovered === false) {
      // Nothing retained any more (the history expired): start over at the head; the
      // next delta begins a new epoch.
      const lost = this.#applied > 0 || this.#epoch !== undefined;
      this.#epoch = undefined;
      this.#applied = head.seq;
      this.#held.clear();
      return lost ? { deliver: [], reset: { epoch: undefined, seq: head.seq } } : { deliver: [] };
    }
    this.#epoch = head.epoch ?? this.#epoch;
    const step = this.#drain();
    if (head.recovered === false && this.#applied < head.seq) {
      return this.#ask(step);
    }
    return step;
  }

  /** A delta arrived (live, caught up, or from history). */
  delta(delta: Delta): Step {
    if (this.#epoch !== undefined && delta.epoch !== this.#epoch) {
      // Another epoch: a late delta of an old one (dropped), or the channel's history
      // started again (the server tells which when asked from where this log is).
      if (this.#subscribing || this.#otherEpochSeen || !this.#started) {
        return { deliver: [] };
      }
      this.#otherEpochSeen = true;
      return { deliver: [], resubscribe: true };
    }
    if (delta.seq > this.#applied) {
      this.#held.set(delta.seq, delta);
    }
    if (this.#subscribing || !this.#started) {
      return { deliver: [] };
    }
    return this.#drain();
  }

  /**
   * A `history` page arrived (the answer to a `history` step). Deltas it skips (expired,
   * so no longer anywhere) are lost to this client: the log moves past them and says so
   * with `reset`.
   */
  history(page: { deltas: readonly Delta[]; more: boolean; next?: number; seq: number; epoch?: string }): Step {
    this.#historyAsked = false;
    // Another epoch's page, or (no epoch, nothing retained, the head behind this log)
    // a history that expired whole.
    const moved =
      page.epoch !== undefined ? page.epoch !== this.#epoch : page.deltas.length === 0 && page.seq < this.#applied;
    if (this.#epoch !== undefined && moved) {
      // Not this log's epoch any more: the subscribe's answer says where to go on.
      return this.#subscribing ? { deliver: [] } : { deliver: [], resubscribe: true };
    }
    let skippedTo: number | undefined;
    const first = page.deltas[0];
    if (first !== undefined && first.seq > this.#applied + 1) {
      this.#applied = first.seq - 1;
      skippedTo = this.#applied;
    } else if (first === undefined && page.more && page.next !== undefined && page.next > this.#applied) {
      this.#applied = page.next;
      skippedTo = this.#applied;
    }
    for (const delta of page.deltas) {
      if (delta.seq > this.#applied) {
        this.#held.set(delta.seq, delta);
      }
    }
    const deliver = this.#advance();
    if (!page.more && this.#held.size > 0) {
      // History ends before the held deltas: the ones between are gone.
      this.#applied = Math.min(...this.#held.keys()) - 1;
      skippedTo = this.#applied;
      deliver.push(...this.#advance());
    }
    let step: Step = { deliver };
    if (skippedTo !== undefined) {
      step = { ...step, reset: { epoch: this.#epoch, seq: skippedTo } };
    }
    const behind = page.more && this.#applied < page.seq;
    return behind || this.#held.size > 0 ? this.#ask(step) : step;
  }

  /** Delivers held deltas that follow the last applied, in order; asks for a gap. */
  #drain(): Step {
    const step: Step = { deliver: this.#advance() };
    return this.#held.size > 0 ? this.#ask(step) : step;
  }

  /** Takes the held deltas that follow the last applied, in order. */
  #advance(): Delta[] {
    const deliver: Delta[] = [];
    for (const seq of [...this.#held.keys()]) {
      if (seq <= this.#applied) {
        this.#held.delete(seq);
      }
    }
    for (;;) {
      const next = this.#held.get(this.#applied + 1);
      if (next === undefined) {
        return deliver;
      }
      this.#held.delete(next.seq);
      this.#applied = next.seq;
      this.#epoch = next.epoch;
      deliver.push(next);
    }
  }

  /** Adds a history request to `step`, unless one is outstanding. */
  #ask(step: Step): Step {
    if (this.#historyAsked) {
      return step;
    }
    this.#historyAsked = true;
    return { ...step, history: this.#applied };
  }
}
