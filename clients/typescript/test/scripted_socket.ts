/** A WebSocket the tests script: they open it, feed it frames and drop it. */

import type { SocketFactory, SocketLike } from "../src/transport.js";

/** One scripted socket. */
export class ScriptedSocket implements SocketLike {
  readyState = 0;
  readonly sent: Record<string, unknown>[] = [];
  closedWith: number | undefined;
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { readonly data: unknown }) => void) | null = null;
  onclose: ((event: { readonly code: number; readonly reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;

  constructor(
    readonly url: string,
    readonly protocols: string[] | undefined,
  ) {}

  send(data: string): void {
    this.sent.push(JSON.parse(data) as Record<string, unknown>);
  }

  close(code = 1000): void {
    this.closedWith = code;
    this.readyState = 3;
  }

  /** The server accepts the handshake. */
  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }

  /** The server sends `frame`. */
  receive(frame: Record<string, unknown>): void {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }

  /** The network drops the socket. */
  drop(code = 1006): void {
    this.readyState = 3;
    this.onclose?.({ code, reason: "" });
  }
}

/** A factory recording every socket it opens. */
export function scriptedFactory(): { factory: SocketFactory; sockets: ScriptedSocket[] } {
  const sockets: ScriptedSocket[] = [];
  const factory: SocketFactory = (url, protocols) => {
    const socket = new ScriptedSocket(url, protocols);
    sockets.push(socket);
    return socket;
  };
  return { factory, sockets };
}

/** Lets pending promise callbacks (the token provider's) run. */
export async function settle(): Promise<void> {
  for (let i = 0; i < 5; i += 1) {
    await Promise.resolve();
  }
}
