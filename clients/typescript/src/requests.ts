/**
 * Requests answered by id: `history`, `members`, `state` and `presence` frames. Each
 * request gets an id of its own (`q.<n>`, never one of the client's publish ids), is sent
 * when connected, and is sent again on the next connection until answered (these
 * requests are idempotent), unless it belongs to one connection (`resend: false`, a
 * members listing that the next connection starts again): then the next connection
 * rejects it with `closed`. Its answer, or its error, settles it; a refusal a retry can change
 * (`rate_limited`, `internal`) is sent again after the server's `retryAfterMs`.
 */

import { DeltacastError, errorFrom } from "./errors.js";

/** A frame from the server: a JSON object with a `type`. */
type Frame = { readonly type: string } & Record<string, unknown>;

interface Request {
  readonly frame: Record<string, unknown>;
  readonly resend: boolean;
  /** Sent on the current connection. */
  sent: boolean;
  readonly resolve: (answer: Frame) => void;
  readonly reject: (error: DeltacastError) => void;
  retry?: ReturnType<typeof setTimeout>;
}

/** The requests waiting for their answers. */
export class Requests {
  readonly #send: (frame: Record<string, unknown>) => boolean;
  readonly #waiting = new Map<string, Request>();
  #next = 0;

  /** `send` sends a frame, answering false when not connected. */
  constructor(send: (frame: Record<string, unknown>) => boolean) {
    this.#send = send;
  }

  /** Sends `frame` with an id of its own; settles with the answer (any frame with the id
   * but an `error`), or rejects with the error. */
  request(frame: Record<string, unknown>, options: { resend?: boolean } = {}): Promise<Frame> {
    this.#next += 1;
    const id = `q.${this.#next}`;
    return new Promise<Frame>((resolve, reject) => {
      const request: Request = { frame: { ...frame, id }, resend: options.resend ?? true, sent: false, resolve, reject };
      this.#waiting.set(id, request);
      request.sent = this.#send(request.frame);
    });
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
        request.sent = this.#send(request.frame);
      }
    }
  }

  /** A frame arrived; returns whether it answered a request. */
  answer(frame: Frame): boolean {
    const id = frame["id"];
    const request = typeof id === "string" ? this.#waiting.get(id) : undefined;
    if (request === undefined || typeof id !== "string") {
      return false;
    }
    if (frame.type !== "error") {
      this.#waiting.delete(id);
      request.resolve(frame);
      return true;
    }
    const error = errorFrom(frame, String(frame["message"] ?? ""));
    if (error.retryable) {
      request.retry = setTimeout(() => {
        delete request.retry;
        request.sent = this.#send(request.frame);
      }, error.details.retryAfterMs ?? 1000);
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
      request.reject(new DeltacastError("closed", "the client was closed"));
    }
    this.#waiting.clear();
  }
}
