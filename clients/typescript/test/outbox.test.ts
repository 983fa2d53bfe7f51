import assert from "node:assert/strict";
import { test } from "node:test";

import { DeltacastError } from "../src/errors.js";
import { newId } from "../src/ids.js";
import { MemoryStore, Outbox, type PendingPublish } from "../src/outbox.js";

const ack = (channel: string, id: string, seq: number) => ({ channel, id, seq, epoch: "e1" });

test("publishes wait in order and each settles with its own ack", async () => {
  const outbox = new Outbox();
  const first = outbox.add({ channel: "chat:a", id: "m1", data: 1 });
  const second = outbox.add({ channel: "chat:a", id: "m2", data: 2 });
  assert.deepEqual(
    outbox.pending().map((p) => p.id),
    ["m1", "m2"],
  );
  assert.equal(outbox.acked(ack("chat:a", "m2", 2)), true);
  assert.deepEqual(await second, ack("chat:a", "m2", 2));
  assert.deepEqual(
    outbox.pending().map((p) => p.id),
    ["m1"],
  );
  assert.equal(outbox.acked(ack("chat:a", "m2", 2)), false, "an ack comes once per publish");
  outbox.acked(ack("chat:a", "m1", 1));
  assert.equal((await first).seq, 1);
  assert.deepEqual(outbox.pending(), []);
});

test("a refusal that sending again cannot change settles the publish; a retryable one keeps it", async () => {
  const outbox = new Outbox();
  const guarded = outbox.add({ channel: "doc:1", id: "e1", data: "x", expectSeq: 3 });
  const limited = new DeltacastError("rate_limited", "slow down", { retryAfterMs: 1000 });
  assert.equal(outbox.refused("doc:1", "e1", limited), false);
  assert.equal(outbox.has("doc:1", "e1"), true, "kept to be sent again");
  const conflict = new DeltacastError("conflict", "expectSeq is 3, but the channel's head is 4", { seq: 4 });
  assert.equal(outbox.refused("doc:1", "e1", conflict), true);
  await assert.rejects(guarded, (error: unknown) => {
    assert.ok(error instanceof DeltacastError);
    assert.equal(error.code, "conflict");
    assert.equal(error.details.seq, 4);
    assert.equal(error.retryable, false);
    return true;
  });
  assert.equal(outbox.has("doc:1", "e1"), false);
});

test("the same id twice on a channel is refused while the first is pending", async () => {
  const outbox = new Outbox();
  void outbox.add({ channel: "chat:a", id: "m1", data: 1 });
  await assert.rejects(outbox.add({ channel: "chat:a", id: "m1", data: 2 }), /already pending/);
  void outbox.add({ channel: "chat:b", id: "m1", data: 3 });
  assert.equal(outbox.pending().length, 2, "ids are per channel");
});

test("a publish written before a restart is sent again with its id", async () => {
  // GIVEN a store that kept one publish of an earlier run
  const store = new MemoryStore();
  const before = new Outbox(store);
  void before.add({ channel: "chat:a", id: "offline-1", data: { text: "sent in a tunnel" } }, 1000);
  await before.ready();
  // WHEN the app starts again and makes a publish before the store is read back
  const after = new Outbox(store);
  void after.add({ channel: "chat:a", id: "m2", data: 2 }, 2000);
  await after.ready();
  // THEN the earlier publish comes first, with its id and data, and is still saved
  const pending: readonly PendingPublish[] = after.pending();
  assert.deepEqual(
    pending.map((p) => [p.id, p.queuedAt]),
    [
      ["offline-1", 1000],
      ["m2", 2000],
    ],
  );
  assert.deepEqual(pending[0]?.data, { text: "sent in a tunnel" });
  assert.deepEqual(
    (store.load() as readonly PendingPublish[]).map((p) => p.id),
    ["offline-1", "m2"],
  );
  // AND its ack, with nobody waiting for it, just clears it
  assert.equal(after.acked(ack("chat:a", "offline-1", 7)), true);
  await after.ready();
  assert.deepEqual(
    (store.load() as readonly PendingPublish[]).map((p) => p.id),
    ["m2"],
  );
});

test("client ids are valid protocol ids and do not repeat", () => {
  const ids = new Set(Array.from({ length: 1000 }, () => newId()));
  assert.equal(ids.size, 1000);
  for (const id of ids) {
    assert.match(id, /^[A-Za-z0-9]{22}$/);
  }
});
