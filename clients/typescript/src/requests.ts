/**
 * Requests answered by id: `subscribe`, `unsubscribe`, `history`, `members`, `state` and
 * `presence`. Each gets an id of its own (`q.<n>`, never one of the client's write ids),
 * is sent when connected, and is sent again on the next connection until answered (these
 * requests are idempotent), unless it belongs to one connection (`resend: false`: then
 * the drop rejects it with `closed`). Its answer, or its error, settles it; a refusal a
 * retry can change (`rate_limited`, `internal`, `token_expired`) is sent again after the
 * server's `retryAfterMs`, and refused again after a growing jittered backoff on top. A
 * request the server does not answer within `answerTimeoutMs` is sent again (its
 * invocation may have failed).
 */

import { backoffDelay } from "./backoff.js";
import type { ServerFrame } from "./connection.js";
import { DeltacastError, errorFrom } from "./errors.js";


interface Request {
  readonly frame: Record<string, unknown>;
  readonly resend: boolean;
  /** Sent on the current connection. */
  sent: boolean;
  readonly resolve: (answer: ServerFrame) => void;
  readonly reject: (error: DeltacastError) => void;
  retry?: ReturnType<typeof setTimeout>;
  deadline?: ReturnType<typeof setTimeout>;
  refusals: number;
}

/** The requests waiting for their answers. */
export class Requests {
  readonly #send: (frame: Record<string, unknown>) => boolean;
  readonly #waiting = new Map<string, Request>();
  readonly #answerTimeoutMs: number;
  #next = 0;

  /** `send` sends a frame, answering false when not connected. */
  constructor(send: (frame: Record<string, unknown>) => boolean, answerTimeoutMs = 10_000) {
    this.#send = send;
    this.#answerTimeoutMs = answerTimeoutMs;
  }

  /** Sends `frame` with an id of its own; settles with the answer (any frame with the id
   * but an `error`), or rejects with the error. */
  request(frame: Record<string, unknown>, options: { resend?: boolean } = {}): Promise<ServerFrame> {
    this.#next += 1;
    const id = `q.${this.#next}`;
    return new Promise<ServerFrame>((resolve, reject) => {
      const request: Request = { frame: { ...frame, id }, resend: options.resend ?? true, sent: false, refusals: 0, resolve, reject };
      this.#waiting.set(id, request);
      this.#transmit(request);
    });
  }

  /** Sends `request` and arms its answer deadline. */
  #transmit(request: Request): void {
    clearTimeout(request.deadline);
    request.sent = this.#send(request.frame);
    if (request.sent) {
      request.deadline = setTimeout(() => {
        delete request.deadline;
        if (request.sent && request.retry === undefined && this.#waiting.get(String(request.frame["id"])) === request) {
          this.#transmit(request);
        }
      }, this.#answerTimeoutMs);
    }
  }

  /** Whether a request matching `frame`'s fields is waiting. */
  waiting(matches: (frame: Record<string, unknown>) => boolean): boolean {
    return [...this.#waiting.values()].some((request) => matches(request.frame));
  }

  /** The connection dropped: what was sent on it is sent again on the next one. */
  dropped(): void {
    for (const [id, request] of this.#waiting) {
      if (!request.sent) {
        continue;
      }
      clearTimeout(request.deadline);
      if (request.resend) {
        request.sent = false;
      } else {
        this.#waiting.delete(id);
        clearTimeout(request.retry);
        request.reject(new DeltacastError("closed", "the connection dropped before the answer"));
      }
    }
  }

  /** A socket opened: sends every request not sent on it yet. */
  opened(): void {
    for (const request of this.#waiting.values()) {
      if (request.retry === undefined && !request.sent) {
        this.#transmit(request);
      }
    }
  }

  /** A frame arrived; returns whether it answered a request. */
  answer(frame: ServerFrame): boolean {
    const id = frame["id"];
    const request = typeof id === "string" ? this.#waiting.get(id) : undefined;
    if (request === undefined || typeof id !== "string") {
      return false;
    }
    clearTimeout(request.deadline);
    if (frame.type !== "error") {
      this.#waiting.delete(id);
      request.resolve(frame);
      return true;
    }
    const error = errorFrom(frame, String(frame["message"] ?? ""));
    if (error.retryable) {
      request.refusals += 1;
      const backoff = request.refusals > 1 ? backoffDelay(request.refusals - 2) : 0;
      clearTimeout(request.retry);
      request.retry = setTimeout(() => {
        delete request.retry;
        this.#transmit(request);
      }, (error.details.retryAfterMs ?? 1000) + backoff);
    } else {
      this.#waiting.delete(id);
      request.reject(error);
    }
    return true;
  }

  /** Rejects every waiting request: the client closed. */
  close(): void {
    for (const request of this.#waiting.values()) {
      clearTimeout(request.retry);
      clearTimeout(request.deadline);
      request.reject(new DeltacastError("closed", "the client was closed"));
    }
    this.#waiting.clear();
  }
}
