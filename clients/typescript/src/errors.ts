/**
 * Errors carrying the protocol's codes (docs/protocol.md), so an app can tell a
 * `conflict` from a `rate_limited` without parsing messages.
 */

/** The server's error codes (the HTTP API's own among them), and the client's own
 * (`closed`, `timeout`). */
export type ErrorCode =
  | "bad_request"
  | "forbidden"
  | "too_large"
  | "conflict"
  | "rate_limited"
  | "in_flight"
  | "internal"
  | "presence_full"
  | "token_expired"
  | "unauthorized"
  | "not_found"
  | "method_not_allowed"
  | "unsupported_media_type"
  | "closed"
  | "timeout";

/** The codes after which the same request may succeed if sent again (with the same id;
 * `token_expired`: on a new connection, with a fresh token). */
const RETRYABLE: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  "rate_limited",
  "in_flight",
  "internal",
  "token_expired",
  "closed",
  "timeout",
]);

/** What the server said about a refused request, besides its code and message. */
export interface ErrorDetails {
  /** The channel's head seq, on `conflict`. */
  readonly seq?: number;
  /** The channel's epoch, on `conflict`. */
  readonly epoch?: string;
  /** When to try again, on `rate_limited` and `in_flight`. */
  readonly retryAfterMs?: number;
  /** The request's id. */
  readonly id?: string;
  /** The channel the request was about. */
  readonly channel?: string;
}

/** A refused or failed request. */
export class DeltacastError extends Error {
  /** The code. */
  readonly code: ErrorCode;
  /** What came with it. */
  readonly details: ErrorDetails;

  constructor(code: ErrorCode, message: string, details: ErrorDetails = {}) {
    super(message);
    this.name = "DeltacastError";
    this.code = code;
    this.details = details;
  }

  /** Whether sending the same request again (the same id) may succeed. */
  get retryable(): boolean {
    return RETRYABLE.has(this.code);
  }
}

/**
 * The error a server's answer describes: an `error` frame, or a problem document of the
 * HTTP API (`code`, and `seq`, `epoch`, `retryAfterMs`, `id`, `channel` when present).
 */
export function errorFrom(fields: Readonly<Record<string, unknown>>, message: string): DeltacastError {
  const details: { -readonly [K in keyof ErrorDetails]: ErrorDetails[K] } = {};
  if (typeof fields["seq"] === "number") details.seq = fields["seq"];
  if (typeof fields["epoch"] === "string") details.epoch = fields["epoch"];
  if (typeof fields["retryAfterMs"] === "number") details.retryAfterMs = fields["retryAfterMs"];
  if (typeof fields["id"] === "string") details.id = fields["id"];
  if (typeof fields["channel"] === "string") details.channel = fields["channel"];
  const code = typeof fields["code"] === "string" ? (fields["code"] as ErrorCode) : "internal";
  return new DeltacastError(code, message, details);
}
