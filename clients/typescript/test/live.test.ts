/** The client's live state, presence and requests, on scripted sockets with mocked timers. */

import assert from "node:assert/strict";
import { afterEach, beforeEach, mock, test } from "node:test";

import type { DeltacastError } from "../src/errors.js";
import type { Member } from "../src/presence_view.js";
import { connected, reconnect, scriptedClient, settle } from "./scripted_socket.js";

beforeEach(() => mock.timers.enable({ apis: ["setTimeout"] }));
afterEach(() => mock.timers.reset());




test("a vote made offline is sent once connected and again with its id after a drop", async () => {
  const { client, sockets } = scriptedClient();
  const ops = [{ op: "inc", path: "/tally/yes", by: 1 }] as const;
  const updated = client.update("state:poll", ops, { id: "vote" });
  await connected(client, sockets);
  const frame = { action: "update", channel: "state:poll", id: "vote", ops };
  assert.deepEqual(sockets[0]!.sent, [frame]);
  const second = await reconnect(sockets);
  assert.deepEqual(second.sent, [frame], "the same id again");
  second.receive({ type: "updated", channel: "state:poll", id: "vote", duplicate: true });
  assert.deepEqual(await updated, { channel: "state:poll", id: "vote", duplicate: true });
  assert.deepEqual(client.pending(), []);
});

test("a state channel's document: a snapshot, patches in order, a snapshot asked for after a gap", async () => {
  const { client, sockets } = scriptedClient();
  const seen: { value: unknown; version: number }[] = [];
  client.watchState("state:poll", (value, version) => seen.push({ value, version }));
  await connected(client, sockets);
  const socket = sockets[0]!;
  assert.deepEqual(socket.frames(), [{ action: "subscribe", channel: "state:poll" }]);
  socket.answer("subscribe", { type: "state", channel: "state:poll", version: 3, value: { tally: { yes: 1 } } });
  socket.receive({ type: "patch", channel: "state:poll", version: 4, patch: { tally: { no: 1 } } });
  socket.receive({ type: "patch", channel: "state:poll", version: 4, patch: { tally: { no: 9 } } });
  socket.receive({ type: "patch", channel: "state:poll", version: 6, patch: { tally: { no: 3 } } });
  socket.receive({ type: "patch", channel: "state:poll", version: 7, patch: { tally: { no: 4 } } });
  assert.deepEqual(socket.frames().slice(1), [{ action: "state", channel: "state:poll" }], "5 was lost: one snapshot asked for");
  socket.answer("state", { type: "state", channel: "state:poll", version: 6, value: { tally: { yes: 2, no: 3 } } });
  assert.deepEqual(seen, [
    { value: { tally: { yes: 1 } }, version: 3 },
    { value: { tally: { yes: 1, no: 1 } }, version: 4 },
    { value: { tally: { yes: 2, no: 3 } }, version: 6 },
  ]);
  // After a reconnect the snapshot comes again: the same version changes nothing.
  const second = await reconnect(sockets);
  assert.deepEqual(second.frames(), [{ action: "subscribe", channel: "state:poll" }]);
  second.answer("subscribe", { type: "state", channel: "state:poll", version: 6, value: { tally: { yes: 2, no: 3 } } });
  assert.equal(seen.length, 3);
});

test("presence: entered again after every reconnect; members listed, then patched", async () => {
  const { client, sockets } = scriptedClient();
  const lists: string[][] = [];
  client.subscribe("chat:a", { onDelta: () => {} });
  client.watchPresence("chat:a", (members: readonly Member[]) => lists.push(members.map((m) => m.sub)));
  const entered = client.enter("chat:a", { name: "Ann" });
  await connected(client, sockets);
  const socket = sockets[0]!;
  // One subscription for the log and the members.
  assert.deepEqual(socket.frames()[0], { action: "subscribe", channel: "chat:a", presence: true });
  // The listing waits for the subscription: the server runs frames in parallel, and a
  // list read before the subscription is stored could miss a change.
  assert.equal(socket.sent.filter((f) => f["action"] === "members").length, 0, "no listing before subscribed");
  socket.answer("subscribe", { type: "subscribed", channel: "chat:a", seq: 0 });
  const members = socket.sent.find((f) => f["action"] === "members")!;
  assert.deepEqual({ ...members, id: undefined }, { action: "members", channel: "chat:a", id: undefined });
  const enter = socket.sent.find((f) => f["action"] === "presence" && f["id"] !== undefined)!;
  socket.receive({ type: "presence", channel: "chat:a", op: "enter", id: enter["id"] });
  await entered;
  socket.receive({
    type: "members",
    channel: "chat:a",
    id: members["id"],
    version: 2,
    more: false,
    members: [{ member: "c1", sub: "ann", data: { name: "Ann" }, at: 1 }],
  });
  await settle();
  socket.receive({ type: "presence_patch", channel: "chat:a", from: 2, version: 3, patch: { c2: { sub: "bob", at: 2 } } });
  assert.deepEqual(lists, [["ann"], ["ann", "bob"]]);
  // A new connection is a new member: the client enters again, resubscribes and relists.
  const second = await reconnect(sockets);
  assert.deepEqual(second.frames(), [
    { action: "subscribe", channel: "chat:a", since: 0, presence: true },
    { action: "presence", channel: "chat:a", op: "enter", data: { name: "Ann" } },
  ]);
  second.answer("subscribe", { type: "subscribed", channel: "chat:a", seq: 0 });
  assert.ok(second.sent.some((f) => f["action"] === "members"), "listed again once subscribed");
});

test("history pages are answered by id; an error nobody waits for is emitted", async () => {
  const { client, sockets } = scriptedClient();
  const refused: DeltacastError[] = [];
  client.on("refused", (error) => refused.push(error));
  await connected(client, sockets);
  const socket = sockets[0]!;
  const page = client.history("chat:a", { since: 4, limit: 2 });
  const request = socket.sent.at(-1)!;
  assert.equal(request["action"], "history");
  assert.equal(request["since"], 4);
  assert.match(String(request["id"]), /^q\./);
  socket.receive({ type: "history", channel: "chat:a", id: request["id"], seq: 9, epoch: "e", deltas: [], more: true, next: 6 });
  assert.deepEqual((await page).next, 6);
  const denied = client.history("chat:b", { since: 0 });
  socket.receive({ type: "error", code: "forbidden", channel: "chat:b", id: socket.sent.at(-1)!["id"], message: "no" });
  await assert.rejects(denied, (error: DeltacastError) => error.code === "forbidden");
  socket.receive({ type: "error", code: "bad_request", channel: "state:poll", id: "vote", message: "not applied: ..." });
  assert.deepEqual(
    refused.map((e) => e.code),
    ["bad_request"],
  );
});
