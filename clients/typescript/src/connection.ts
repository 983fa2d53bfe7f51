/**
 * One WebSocket to deltacast, kept open: the token is asked for at every (re)connect; a
 * lost socket is reopened after an exponential, fully jittered backoff; a silent socket
 * is pinged, and one that stays silent (a phone back from the background, a dead NAT
 * entry) is given up and reopened; and the connection is renewed before API Gateway's
 * 2-hour limit or its token's expiry, whichever comes first. Every change of state is an
 * event.
 *
 * States: `idle` → `connecting` → `connected` → (`disconnected` → `connecting` → ...) and
 * `closed` once `close()` is called.
 */

import { type BackoffOptions, DEFAULT_BACKOFF, backoffDelay } from "./backoff.js";
import { Emitter } from "./emitter.js";
import { type SocketFactory, type SocketLike, OPEN, defaultSocketFactory } from "./transport.js";
import { type TokenProvider, expiresAt, handshake } from "./token.js";

/** Where the connection is. */
export type ConnectionState = "idle" | "connecting" | "connected" | "disconnected" | "closed";

/** A frame from the server: a JSON object with a `type`. */
export type ServerFrame = { readonly type: string } & Record<string, unknown>;

/** How a connection behaves. */
export interface ConnectionOptions {
  /** The WebSocket URL (`wss://.../prod`, or `ws://127.0.0.1:3001/local`). */
  readonly url: string;
  /** Gives a token; called again before every reconnect. */
  readonly token: TokenProvider;
  /** Where the handshake carries the token (default `query`; `subprotocol` in browsers
   * keeps it out of URLs and logs). */
  readonly tokenIn?: "query" | "subprotocol";
  /** Opens sockets (default: the platform's `WebSocket`). */
  readonly socket?: SocketFactory;
  /** Reconnect delays (default 0.5 s doubling to 30 s, full jitter). */
  readonly backoff?: BackoffOptions;
  /** Silence after which a `ping` goes out (default 25 s; API Gateway drops a
   * connection idle for 10 minutes). */
  readonly heartbeatMs?: number;
  /** How long a ping may go unanswered before the socket counts as dead (default 10 s). */
  readonly heartbeatTimeoutMs?: number;
  /** When to renew a connection (default 1 h 55 min; API Gateway closes at 2 h). */
  readonly maxConnectionMs?: number;
  /** How long before the token's `exp` to renew (default 60 s). */
  readonly tokenRefreshMarginMs?: number;
  /** The clock (default `Date.now`). */
  readonly now?: () => number;
  /** Random numbers in [0, 1) for the jitter (default `Math.random`). */
  readonly random?: () => number;
}

/** The connection's events. */
export type ConnectionEvents = {
  /** Its state changed. */
  state: ConnectionState;
  /** A socket opened (`reconnected` after the first). */
  open: { readonly reconnected: boolean };
  /** A frame arrived. */
  frame: ServerFrame;
};

/** Codes the client closes its own sockets with. */
const HEARTBEAT_TIMEOUT = 4000;
const RENEW = 4001;

/** A WebSocket to deltacast, reopened whenever it is lost, until `close()`. */
export class Connection extends Emitter<ConnectionEvents> {
  readonly #options: ConnectionOptions;
  readonly #factory: SocketFactory;
  #state: ConnectionState = "idle";
  #socket: SocketLike | undefined;
  #attempt = 0;
  /** Counts opening attempts: only the newest may open a socket. */
  #opening = 0;
  #opened = false;
  #timers = new Map<string, ReturnType<typeof setTimeout>>();

  constructor(options: ConnectionOptions) {
    super();
    this.#options = options;
    const factory = options.socket ?? defaultSocketFactory();
    if (factory === undefined) {
      throw new Error("no WebSocket on this platform: pass one as `socket`");
    }
    this.#factory = factory;
  }

  /** Where the connection is. */
  get state(): ConnectionState {
    return this.#state;
  }

  /** Opens the connection (and keeps it open); does nothing if it is already. */
  connect(): void {
    if (this.#state === "idle" || this.#state === "closed") {
      void this.#open();
    }
  }

  /** Replaces the socket now, without backoff (the app came back to the foreground, the
   * device back online); does nothing unless connecting or connected. */
  reconnect(): void {
    if (this.#state !== "idle" && this.#state !== "closed") {
      this.#renew();
    }
  }

  /** Closes the connection for good. */
  close(): void {
    this.#opening += 1;
    this.#setState("closed");
    this.#clearTimers();
    const socket = this.#detach();
    socket?.close(1000, "closed by the client");
  }

  /** Sends a frame; false when no socket is open (the caller sends it again on `open`). */
  send(frame: Record<string, unknown>): boolean {
    if (this.#state !== "connected" || this.#socket?.readyState !== OPEN) {
      return false;
    }
    this.#socket.send(JSON.stringify(frame));
    return true;
  }

  async #open(): Promise<void> {
    // Only the newest attempt goes on: a close, or another open, while the token
    // provider runs makes this one moot.
    this.#opening += 1;
    const attempt = this.#opening;
    this.#setState("connecting");
    let token: string;
    try {
      token = await this.#options.token();
    } catch {
      if (attempt === this.#opening) this.#lost();
      return;
    }
    if (this.#state !== "connecting" || attempt !== this.#opening) {
      return;
    }
    const { url, protocols } = handshake(this.#options.url, token, this.#options.tokenIn ?? "query");
    let socket: SocketLike;
    try {
      socket = this.#factory(url, protocols);
    } catch {
      this.#lost();
      return;
    }
    this.#socket = socket;
    socket.onopen = () => this.#onOpen(token);
    socket.onmessage = (event) => this.#onMessage(event.data);
    socket.onclose = () => {
      if (this.#socket === socket) {
        this.#lost();
      }
    };
    socket.onerror = () => {};
  }

  #onOpen(token: string): void {
    const reconnected = this.#opened;
    this.#opened = true;
    this.#attempt = 0;
    this.#setState("connected");
    this.#armHeartbeat();
    const now = (this.#options.now ?? Date.now)();
    let renewIn = this.#options.maxConnectionMs ?? 6_900_000;
    const exp = expiresAt(token);
    if (exp !== undefined) {
      const beforeMargin = exp - (this.#options.tokenRefreshMarginMs ?? 60_000) - now;
      // A token already within the margin (a provider that caches tokens) is renewed at
      // half its remaining life, not every second.
      renewIn = Math.min(renewIn, beforeMargin >= 5_000 ? beforeMargin : (exp - now) / 2);
    }
    this.#timer("renew", Math.max(renewIn, 1_000), () => this.#renew());
    this.emit("open", { reconnected });
  }

  #onMessage(data: unknown): void {
    this.#armHeartbeat();
    if (typeof data !== "string") {
      return;
    }
    let frame: unknown;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (typeof frame !== "object" || frame === null || typeof (frame as { type?: unknown }).type !== "string") {
      return;
    }
    const server = frame as ServerFrame;
    // The token expired since connecting: nothing more is accepted or arrives on this
    // socket. An unsolicited one is for the connection; one that answers a request is
    // passed on too (what it answered is sent again on the new socket).
    if (server.type === "error" && server["code"] === "token_expired") {
      this.#renew();
      if (server["id"] === undefined) {
        return;
      }
    }
    this.emit("frame", server);
  }

  /** After `heartbeatMs` of silence a ping goes out; a socket silent `heartbeatTimeoutMs`
   * longer is given up. */
  #armHeartbeat(): void {
    this.#clearTimer("dead");
    this.#timer("beat", this.#options.heartbeatMs ?? 25_000, () => {
      this.send({ action: "ping", id: "heartbeat" });
      this.#timer("dead", this.#options.heartbeatTimeoutMs ?? 10_000, () => {
        const socket = this.#detach();
        socket?.close(HEARTBEAT_TIMEOUT, "heartbeat timeout");
        this.#lost();
      });
    });
  }

  /** Replaces the socket now (a fresh token, a fresh 2 hours), without backoff. */
  #renew(): void {
    this.#clearTimers();
    const socket = this.#detach();
    socket?.close(RENEW, "renewing");
    void this.#open();
  }

  /** The socket is gone (or never opened): try again after a backoff. */
  #lost(): void {
    this.#clearTimers();
    this.#detach();
    if (this.#state === "closed") {
      return;
    }
    this.#setState("disconnected");
    const delay = backoffDelay(this.#attempt, this.#options.backoff ?? DEFAULT_BACKOFF, this.#options.random);
    this.#attempt += 1;
    this.#timer("reconnect", delay, () => void this.#open());
  }

  #detach(): SocketLike | undefined {
    const socket = this.#socket;
    this.#socket = undefined;
    if (socket !== undefined) {
      socket.onopen = null;
      socket.onmessage = null;
      socket.onclose = null;
      // Not null: `ws` throws an error event nobody listens to (closing a socket still
      // connecting raises one) as an uncaught exception.
      socket.onerror = () => {};
    }
    return socket;
  }

  #setState(state: ConnectionState): void {
    if (this.#state !== state) {
      this.#state = state;
      this.emit("state", state);
    }
  }

  #timer(name: string, ms: number, run: () => void): void {
    this.#clearTimer(name);
    this.#timers.set(
      name,
      setTimeout(() => {
        this.#timers.delete(name);
        run();
      }, ms),
    );
  }

  #clearTimer(name: string): void {
    const timer = this.#timers.get(name);
    if (timer !== undefined) {
      clearTimeout(timer);
      this.#timers.delete(name);
    }
  }

  #clearTimers(): void {
    for (const timer of this.#timers.values()) {
      clearTimeout(timer);
    }
    this.#timers.clear();
  }
}
