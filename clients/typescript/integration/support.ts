/**
 * What the integration tests share: the local stack's URL (`DELTACAST_URL`, set by
 * `integration/run`), development tokens, sockets a test can cut, and bounded waits.
 */

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";

import WebSocket from "ws";

import type { SocketFactory } from "../src/index.js";

/** The stack's WebSocket URL. */
export const URL = process.env["DELTACAST_URL"] ?? "ws://127.0.0.1:3001/local";
/** The HTTP API's base, on the same port. */
export const HTTP = URL.replace(/^ws/, "http").replace(/\/local$/, "");
const SECRET = process.env["JWT_SECRET"] || "deltacast-local-dev-secret-not-for-production";

/** A development token for `sub`, every capability on every channel, for an hour. */
export function token(sub: string): string {
  const part = (value: object) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const body = `${part({ alg: "HS256", typ: "JWT" })}.${part({
    sub,
    exp: Math.floor(Date.now() / 1000) + 3600,
    channels: { "*": ["subscribe", "publish", "history", "presence"] },
  })}`;
  return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
}

/** Node's `ws` sockets, each kept so the test can cut it, and the type of every frame
 * they received. */
export function sockets(): { factory: SocketFactory; open: WebSocket[]; frames: string[] } {
  const open: WebSocket[] = [];
  const frames: string[] = [];
  const factory: SocketFactory = (url, protocols) => {
    const socket = new WebSocket(url, protocols);
    socket.on("message", (data: Buffer) => frames.push(String(JSON.parse(data.toString())["type"])));
    open.push(socket);
    return socket; // ws's WebSocket fits SocketLike as it is
  };
  return { factory, open, frames };
}

/** Waits until `done`, for at most `ms`. */
export async function until(done: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!done()) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}
