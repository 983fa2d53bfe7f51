/**
 * deltacast's client: `DeltacastClient` (log channels delivered once and in order across
 * reconnects, publishes and state updates acknowledged once across reconnects and
 * restarts, live state, presence, history), `Optimistic` (values shown before the server
 * confirms them, rolled back when it refuses), `HttpPublisher` (publishing from servers
 * over the HTTP API), and the pieces they are built from.
 */

export { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from "./backoff.js";
export { Emitter, type Listener, type ListenerErrorHandler } from "./emitter.js";
export { DeltacastError, type ErrorCode, type ErrorDetails } from "./errors.js";
export { newId } from "./ids.js";
export { MemoryStore, Outbox, type Ack, type PendingPublish, type PendingStore, type Updated } from "./outbox.js";
export {
  Connection,
  type ConnectionEvents,
  type ConnectionOptions,
  type ConnectionState,
  type ServerFrame,
} from "./connection.js";
export { SUBPROTOCOL, expiresAt, handshake, type TokenProvider } from "./token.js";
export { OPEN, defaultSocketFactory, type SocketFactory, type SocketLike } from "./transport.js";
export { ChannelLog, type Delta, type Resume, type Step } from "./channel_log.js";
export { type SubscriptionHandlers } from "./channel_watch.js";
export { StateView, mergePatch, type JsonObject, type StateOp, type StateStep } from "./state_view.js";
export { PresenceView, type Member, type MembersPage, type PresencePatch, type PresenceStep } from "./presence_view.js";
export { Optimistic, type OptimisticOptions, type Publisher } from "./optimistic.js";
export { HttpPublisher, type BatchResult, type HttpPublish, type HttpPublisherOptions } from "./http.js";
export { DeltacastClient, type ClientEvents, type ClientOptions, type HistoryPage, type Subscription } from "./client.js";
