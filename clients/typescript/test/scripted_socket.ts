/** A WebSocket the tests script: they open it, feed it frames and drop it. */

import { mock } from "node:test";

import { type ClientOptions, DeltacastClient } from "../src/client.js";
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

  /** The server answers the last `action` frame sent: `reply`, with that frame's id. */
  answer(action: string, reply: Record<string, unknown>): void {
    const request = [...this.sent].reverse().find((frame) => frame["action"] === action);
    this.receive(request?.["id"] === undefined ? reply : { ...reply, id: request["id"] });
  }

  /** The frames sent, without the ids the client gave its own requests (`q.<n>`). */
  frames(): Record<string, unknown>[] {
    return this.sent.map((frame) => {
      if (typeof frame["id"] === "string" && frame["id"].startsWith("q.")) {
        const { id: _id, ...rest } = frame;
        return rest;
      }
      return frame;
    });
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

/** A client on scripted sockets, with no jitter and no heartbeat in the way. */
export function scriptedClient(options: Partial<ClientOptions> = {}): { client: DeltacastClient; sockets: ScriptedSocket[] } {
  const { factory, sockets } = scriptedFactory();
  const client = new DeltacastClient({
    url: "ws://127.0.0.1:3001/local",
    token: () => "t",
    socket: factory,
    random: () => 0,
    heartbeatMs: 10_000_000,
    ...options,
  });
  return { client, sockets };
}

/** Connects `client` and opens its first socket. */
export async function connected(client: DeltacastClient, sockets: readonly ScriptedSocket[]): Promise<void> {
  await client.connect();
  await settle();
  sockets[0]?.open();
}

/** Drops the current socket, lets the (mocked, jitter-free) backoff pass and opens the
 * next one. */
export async function reconnect(sockets: readonly ScriptedSocket[]): Promise<ScriptedSocket> {
  sockets.at(-1)?.drop();
  await settle();
  mock.timers.tick(0);
  await settle();
  const next = sockets.at(-1)!;
  next.open();
  return next;
}
