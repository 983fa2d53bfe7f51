/**
 * What the client needs of a WebSocket, so any implementation can be passed in: the
 * browser's and React Native's `WebSocket`, Node's (22+) or the `ws` package's, or a
 * scripted one in tests.
 */

/**
 * A handler of a socket's event. Checked both ways (as a method is), so that a socket
 * whose handlers take a richer event (the browser's `MessageEvent`, `ws`'s) fits.
 */
type Handler<E> = { bivariant(event: E): void }["bivariant"];

/** The subset of the WebSocket interface the client uses. */
export interface SocketLike {
  /** 1 while open. */
  readonly readyState: number;
  /** Sends a text frame. */
  send(data: string): void;
  /** Closes the socket. */
  close(code?: number, reason?: string): void;
  /** Called once open. */
  onopen: Handler<unknown> | null;
  /** Called with each message; `data` is the frame's text. */
  onmessage: Handler<{ readonly data: unknown }> | null;
  /** Called once closed, whoever closed it. */
  onclose: Handler<{ readonly code: number; readonly reason: string }> | null;
  /** Called on an error (a close follows). */
  onerror: Handler<unknown> | null;
}

/** Opens a socket to `url` offering `protocols`. */
export type SocketFactory = (url: string, protocols: string[] | undefined) => SocketLike;

/** `readyState` of an open socket. */
export const OPEN = 1;

/** The platform's `WebSocket`, when it has one. */
export function defaultSocketFactory(): SocketFactory | undefined {
  const WebSocketClass = (globalThis as { WebSocket?: new (url: string, protocols?: string[]) => SocketLike })
    .WebSocket;
  if (WebSocketClass === undefined) {
    return undefined;
  }
  return (url, protocols) => new WebSocketClass(url, protocols);
}
