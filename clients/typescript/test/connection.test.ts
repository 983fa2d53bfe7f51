import assert from "node:assert/strict";
import { afterEach, beforeEach, mock, test } from "node:test";

import { Connection, type ConnectionOptions, type ConnectionState } from "../src/connection.js";
import { scriptedFactory, settle } from "./scripted_socket.js";

beforeEach(() => mock.timers.enable({ apis: ["setTimeout"] }));
afterEach(() => mock.timers.reset());

/** A connection on scripted sockets, its states and its tokens handed out. */
function setup(options: Partial<ConnectionOptions> = {}) {
  const { factory, sockets } = scriptedFactory();
  const tokens: string[] = [];
  const states: ConnectionState[] = [];
  const connection = new Connection({
    url: "ws://127.0.0.1:3001/local",
    token: async () => {
      const token = `t${tokens.length + 1}`;
      tokens.push(token);
      return token;
    },
    socket: factory,
    random: () => 0.5,
    now: () => 0,
    ...options,
  });
  connection.on("state", (state) => states.push(state));
  return { connection, sockets, tokens, states };
}

/** A JWT whose `exp` is `exp` (Unix seconds); the signature is not checked here. */
function jwt(exp: number): string {
  const part = (value: object) => Buffer.from(JSON.stringify(value)).toString("base64url");
  return `${part({ alg: "HS256" })}.${part({ sub: "alice", exp })}.sig`;
}

test("the token goes in the query, or beside the subprotocol for browsers", async () => {
  const query = setup();
  query.connection.connect();
  await settle();
  assert.equal(query.sockets[0]?.url, "ws://127.0.0.1:3001/local?token=t1");
  assert.equal(query.sockets[0]?.protocols, undefined);
  const browser = setup({ tokenIn: "subprotocol" });
  browser.connection.connect();
  await settle();
  assert.equal(browser.sockets[0]?.url, "ws://127.0.0.1:3001/local");
  assert.deepEqual(browser.sockets[0]?.protocols, ["deltacast.v1", "bearer.t1"]);
});

test("a lost socket is reopened after a growing jittered backoff, with a fresh token each time", async () => {
  const { connection, sockets, tokens, states } = setup({ backoff: { baseMs: 1000, maxMs: 60_000 } });
  const opens: boolean[] = [];
  connection.on("open", ({ reconnected }) => opens.push(reconnected));
  connection.connect();
  await settle();
  sockets[0]?.open();
  assert.equal(connection.state, "connected");
  // WHEN the network drops it, and the next two handshakes fail
  sockets[0]?.drop();
  assert.equal(connection.state, "disconnected");
  mock.timers.tick(499);
  await settle();
  assert.equal(sockets.length, 1, "waits half the first cap (jitter 0.5)");
  mock.timers.tick(1);
  await settle();
  assert.equal(sockets.length, 2);
  sockets[1]?.drop();
  mock.timers.tick(999);
  await settle();
  assert.equal(sockets.length, 2, "the second wait is twice as long");
  mock.timers.tick(1);
  await settle();
  sockets[2]?.drop();
  mock.timers.tick(2000);
  await settle();
  // THEN the fourth opens, and a later loss starts again from the first delay
  sockets[3]?.open();
  assert.deepEqual(tokens, ["t1", "t2", "t3", "t4"]);
  assert.deepEqual(opens, [false, true]);
  sockets[3]?.drop();
  mock.timers.tick(500);
  await settle();
  assert.equal(sockets.length, 5);
  assert.deepEqual(states.slice(0, 4), ["connecting", "connected", "disconnected", "connecting"]);
});

test("a silent socket is pinged, and given up when the ping goes unanswered", async () => {
  const { connection, sockets } = setup({ heartbeatMs: 25_000, heartbeatTimeoutMs: 10_000 });
  connection.connect();
  await settle();
  sockets[0]?.open();
  // Frames keep it alive; silence brings a ping, and an answer keeps it.
  mock.timers.tick(20_000);
  sockets[0]?.receive({ type: "delta", channel: "chat:a", seq: 1 });
  mock.timers.tick(20_000);
  assert.deepEqual(sockets[0]?.sent, []);
  mock.timers.tick(5_000);
  assert.deepEqual(sockets[0]?.sent, [{ action: "ping", id: "heartbeat" }]);
  sockets[0]?.receive({ type: "pong", id: "heartbeat" });
  mock.timers.tick(10_000);
  assert.equal(connection.state, "connected");
  // A ping that goes unanswered: the socket is closed and replaced.
  mock.timers.tick(15_000);
  assert.equal(sockets[0]?.sent.length, 2);
  mock.timers.tick(10_000);
  assert.equal(sockets[0]?.closedWith, 4000);
  assert.equal(connection.state, "disconnected");
  mock.timers.tick(250);
  await settle();
  assert.equal(sockets.length, 2);
});

test("a connection is renewed before API Gateway's two hours and before its token expires", async () => {
  // The token expires in an hour: renewed a minute before, with a new token.
  const expiring = setup({ token: () => jwt(3600), maxConnectionMs: 6_900_000 });
  expiring.connection.connect();
  await settle();
  expiring.sockets[0]?.open();
  mock.timers.tick(3_540_000 - 1);
  await settle();
  assert.equal(expiring.sockets.length, 1);
  mock.timers.tick(1);
  await settle();
  assert.equal(expiring.sockets[0]?.closedWith, 4001);
  assert.equal(expiring.sockets.length, 2, "at once, no backoff");
  // A token without `exp`: renewed at maxConnectionMs.
  const lasting = setup({ maxConnectionMs: 6_900_000, heartbeatMs: 10_000_000 });
  lasting.connection.connect();
  await settle();
  lasting.sockets[0]?.open();
  mock.timers.tick(6_900_000);
  await settle();
  assert.equal(lasting.sockets.length, 2);
  // A token already within the margin (40 s left): renewed at half its life, not every second.
  const cached = setup({ token: () => jwt(40), heartbeatMs: 10_000_000 });
  cached.connection.connect();
  await settle();
  cached.sockets[0]?.open();
  mock.timers.tick(19_000);
  await settle();
  assert.equal(cached.sockets.length, 1, "not within the first 19 s");
  mock.timers.tick(1_000);
  await settle();
  assert.equal(cached.sockets.length, 2, "at 20 s");
});

test("an unsolicited token_expired reconnects at once with a fresh token", async () => {
  const { connection, sockets, tokens } = setup();
  const frames: string[] = [];
  connection.on("frame", (frame) => frames.push(frame.type));
  connection.connect();
  await settle();
  sockets[0]?.open();
  sockets[0]?.receive({ type: "error", code: "token_expired", message: "token expired" });
  await settle();
  assert.deepEqual(tokens, ["t1", "t2"]);
  assert.equal(sockets.length, 2);
  assert.deepEqual(frames, [], "handled by the connection");
  // The answer to a request is the app's to handle.
  sockets[1]?.open();
  sockets[1]?.receive({ type: "error", code: "token_expired", id: "r1", message: "token expired" });
  assert.deepEqual(frames, ["error"]);
});

test("close() ends it for good", async () => {
  const { connection, sockets, states } = setup();
  connection.connect();
  await settle();
  sockets[0]?.open();
  assert.equal(connection.send({ action: "ping" }), true);
  connection.close();
  assert.equal(sockets[0]?.closedWith, 1000);
  assert.equal(connection.send({ action: "ping" }), false);
  mock.timers.tick(60_000);
  await settle();
  assert.equal(sockets.length, 1, "no reconnect");
  assert.equal(states.at(-1), "closed");
});
