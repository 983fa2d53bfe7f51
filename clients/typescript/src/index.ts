/**
 * deltacast's client. What is here so far (issue 15 is being built): `DeltacastClient`
 * (subscriptions delivered once and in order across reconnects, publishes acknowledged
 * once across reconnects and restarts), the connection
 * (tokens, reconnects with backoff, heartbeats, renewal before API Gateway's limit or the
 * token's expiry), reconnect backoff, a typed emitter, the protocol's errors, client-made
 * ids, and the outbox of publishes that survive reconnects.
 */

export { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from "./backoff.js";
export { Emitter, type Listener, type ListenerErrorHandler } from "./emitter.js";
export { DeltacastError, type ErrorCode, type ErrorDetails } from "./errors.js";
export { newId } from "./ids.js";
export { MemoryStore, Outbox, type Ack, type PendingPublish, type PendingStore } from "./outbox.js";
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
export { DeltacastClient, type ClientEvents, type ClientOptions, type Subscription, type SubscriptionHandlers } from "./client.js";
