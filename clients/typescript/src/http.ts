/**
 * Publishing over deltacast's HTTP API (docs/http.md), for servers and scripts without a
 * socket: `POST /v1/channels/{channel}/messages` and the batch `POST /v1/messages`. Every
 * publish carries an id (yours, or one made here), so a publish retried after a timeout,
 * a `429`, a `500` or a `503 in_flight` is stored once; refusals become
 * `DeltacastError`s with the protocol's codes.
 */

import { backoffDelay, type BackoffOptions } from "./backoff.js";
import { DeltacastError, type ErrorCode, errorFrom } from "./errors.js";
import { newId } from "./ids.js";
import type { Ack } from "./outbox.js";
import type { TokenProvider } from "./token.js";

/** How the HTTP publisher behaves. */
export interface HttpPublisherOptions {
  /** The API's base URL, before `/v1` (the function URL, or `http://127.0.0.1:3001`). */
  readonly baseUrl: string;
  /** Gives a bearer token for each request. */
  readonly token: TokenProvider;
  /** Sends requests (default: the platform's `fetch`). */
  readonly fetch?: typeof fetch;
  /** How many times a retryable failure is tried again (default 4). */
  readonly retries?: number;
  /** Delays between tries when the server names none (default 0.5 s doubling, jittered). */
  readonly backoff?: BackoffOptions;
  /** How long a request may take before it is given up (`timeout`) and tried again
   * (default 15 s; a publish on a busy channel waits up to `HTTP_PUBLISH_WAIT_MS`, 10 s). */
  readonly timeoutMs?: number;
}

/** One publish. */
export interface HttpPublish {
  readonly channel: string;
  readonly data: unknown;
  readonly id?: string;
  readonly expectSeq?: number;
}

/** A batch item's outcome: its ack, or its refusal. */
export type BatchResult = { readonly ok: true; readonly ack: Ack } | { readonly ok: false; readonly error: DeltacastError };

/** Publishes over HTTP. */
export class HttpPublisher {
  readonly #options: HttpPublisherOptions;

  constructor(options: HttpPublisherOptions) {
    this.#options = options;
  }

  /** Publishes one message; settles with its ack once stored. */
  async publish(channel: string, data: unknown, options: { id?: string; expectSeq?: number } = {}): Promise<Ack> {
    const body: Record<string, unknown> = { id: options.id ?? newId(), data };
    if (options.expectSeq !== undefined) body["expectSeq"] = options.expectSeq;
    const answer = await this.#post(`/v1/channels/${encodeURIComponent(channel)}/messages`, body);
    return answer as unknown as Ack;
  }

  /** Publishes up to 100 messages; each is answered on its own, in order. The batch is
   * tried again as a whole when it fails as a whole; an item refused on its own is not
   * (send the refused ones again, with their ids, if they are `retryable`). */
  async publishBatch(messages: readonly HttpPublish[]): Promise<BatchResult[]> {
    const items = messages.map((message) => {
      const item: Record<string, unknown> = { channel: message.channel, id: message.id ?? newId(), data: message.data };
      if (message.expectSeq !== undefined) item["expectSeq"] = message.expectSeq;
      return item;
    });
    const answer = await this.#post("/v1/messages", { messages: items });
    const results = Array.isArray(answer["results"]) ? (answer["results"] as Record<string, unknown>[]) : [];
    return results.map((result) =>
      result["status"] === 200
        ? { ok: true, ack: { channel: String(result["channel"]), id: String(result["id"]), seq: Number(result["seq"]), epoch: String(result["epoch"]) } }
        : { ok: false, error: problemError(result) },
    );
  }

  async #post(path: string, body: unknown): Promise<Record<string, unknown>> {
    const send = this.#options.fetch ?? globalThis.fetch;
    const retries = this.#options.retries ?? 4;
    for (let attempt = 0; ; attempt += 1) {
      let error: DeltacastError;
      let waitMs: number | undefined;
      try {
        const timeoutMs = this.#options.timeoutMs ?? 15_000;
        const response = await send(`${this.#options.baseUrl.replace(/\/$/, "")}${path}`, {
          method: "POST",
          headers: { "content-type": "application/json", authorization: `Bearer ${await this.#options.token()}` },
          body: JSON.stringify(body),
          ...(typeof AbortSignal.timeout === "function" ? { signal: AbortSignal.timeout(timeoutMs) } : {}),
        });
        const answer = (await response.json().catch(() => ({}))) as Record<string, unknown>;
        if (response.ok) {
          return answer;
        }
        error = problemError({ status: response.status, ...answer });
        const retryAfter = Number(response.headers.get("retry-after"));
        waitMs = error.details.retryAfterMs ?? (Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter * 1000 : undefined);
      } catch (failure) {
        const timedOut = failure instanceof Error && failure.name === "TimeoutError";
        error = timedOut
          ? new DeltacastError("timeout", "the request took too long")
          : new DeltacastError("closed", `the request failed: ${String(failure)}`);
      }
      if (!error.retryable || attempt >= retries) {
        throw error;
      }
      await new Promise((resolve) => setTimeout(resolve, waitMs ?? backoffDelay(attempt, this.#options.backoff)));
    }
  }
}

/** The code of an answer without one (a proxy's, or AWS's own `{"Message":...}`). */
const BY_STATUS: Readonly<Record<number, ErrorCode>> = {
  400: "bad_request",
  401: "unauthorized",
  403: "forbidden",
  404: "not_found",
  405: "method_not_allowed",
  409: "conflict",
  413: "too_large",
  415: "unsupported_media_type",
  429: "rate_limited",
  503: "in_flight",
};

/** A problem document (or a batch item's) as an error. */
function problemError(problem: Record<string, unknown>): DeltacastError {
  if (typeof problem["code"] !== "string") {
    const status = Number(problem["status"]);
    problem = { ...problem, code: BY_STATUS[status] ?? (status >= 500 ? "internal" : "bad_request") };
  }
  return errorFrom(problem, String(problem["detail"] ?? problem["title"] ?? problem["Message"] ?? problem["message"] ?? `HTTP ${String(problem["status"])}`));
}
