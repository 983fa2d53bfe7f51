/**
 * deltacast's client. What is here so far (issue 15 is being built): reconnect backoff,
 * a typed emitter, the protocol's errors, client-made ids, and the outbox of publishes
 * that survive reconnects.
 */

export { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from "./backoff.js";
export { Emitter, type Listener, type ListenerErrorHandler } from "./emitter.js";
export { DeltacastError, type ErrorCode, type ErrorDetails } from "./errors.js";
export { newId } from "./ids.js";
export { MemoryStore, Outbox, type Ack, type PendingPublish, type PendingStore } from "./outbox.js";
