import assert from "node:assert/strict";
import { test } from "node:test";

import type { Delta } from "../src/channel_log.js";
import { DeltacastError } from "../src/errors.js";
import { Optimistic, type Publisher } from "../src/optimistic.js";
import type { Ack } from "../src/outbox.js";

const delta = (seq: number, id: string, data: number): Delta => ({
  channel: "counter:a",
  seq,
  epoch: "e",
  id,
  from: "x",
  ts: 0,
  data,
});

/** A publisher whose answers the test gives. */
function scripted() {
  const calls: { data: unknown; options: { id?: string; expectSeq?: number } | undefined }[] = [];
  const answers: { resolve: (ack: Ack) => void; reject: (error: DeltacastError) => void }[] = [];
  const publisher: Publisher = {
    publish: (_channel, data, options) => {
      calls.push({ data, options });
      return new Promise<Ack>((resolve, reject) => answers.push({ resolve, reject }));
    },
  };
  return { publisher, calls, answers };
}

test("a change shows at once, stays through its ack, and becomes confirmed with its delta", async () => {
  const shown: number[] = [];
  const counter = new Optimistic<number, number>({ initial: 0, apply: (v, c) => v + c, onChange: (v) => shown.push(v) });
  const { publisher, calls, answers } = scripted();
  const done = counter.publish(publisher, "counter:a", 5, { id: "mine" });
  assert.equal(counter.value, 5, "applied at once");
  assert.equal(counter.confirmed, 0);
  // Someone else's delta comes first: the change is rebased on it.
  counter.delta(delta(1, "theirs", 10));
  assert.equal(counter.value, 15);
  answers[0]!.resolve({ channel: "counter:a", id: "mine", seq: 2, epoch: "e" });
  await done;
  assert.equal(counter.value, 15, "still shown after the ack, before its delta");
  counter.delta(delta(2, "mine", 5));
  assert.equal(counter.value, 15);
  assert.equal(counter.confirmed, 15);
  assert.equal(counter.pending, 0);
  assert.deepEqual(shown, [5, 15, 15]);
  assert.equal(calls[0]!.options?.expectSeq, undefined, "unguarded");
});

test("a guarded change made against a stale value is refused with the head and rolled back", async () => {
  const counter = new Optimistic<number, number>({ initial: 0, apply: (v, c) => v + c, guard: true });
  counter.delta(delta(1, "a", 1));
  const { publisher, calls, answers } = scripted();
  const first = counter.publish(publisher, "counter:a", 10);
  const second = counter.publish(publisher, "counter:a", 100);
  assert.deepEqual(
    calls.map((c) => c.options?.expectSeq),
    [1, 2],
    "each expects the head it was made on",
  );
  assert.equal(counter.value, 111);
  answers[0]!.reject(new DeltacastError("conflict", "expectSeq is 1, but the channel's head is 2", { seq: 2, epoch: "e" }));
  await assert.rejects(first, (error: DeltacastError) => error.code === "conflict" && error.details.seq === 2);
  assert.equal(counter.value, 101, "the refused change is rolled back, the other stays");
  answers[1]!.reject(new DeltacastError("conflict", "", { seq: 2 }));
  await assert.rejects(second);
  counter.delta(delta(2, "b", 7));
  assert.equal(counter.value, 8, "what won shows");
  assert.equal(counter.pending, 0);
});

test("a delta that comes before its own ack is not applied twice", async () => {
  const counter = new Optimistic<number, number>({ initial: 0, apply: (v, c) => v + c });
  const { publisher, answers } = scripted();
  const done = counter.publish(publisher, "counter:a", 3, { id: "m" });
  counter.delta(delta(1, "m", 3));
  assert.equal(counter.value, 3);
  answers[0]!.resolve({ channel: "counter:a", id: "m", seq: 1, epoch: "e" });
  await done;
  assert.equal(counter.value, 3);
  assert.equal(counter.pending, 0);
});

test("subscribed at a channel's head, guarded changes expect that head; with since, the seq given", async () => {
  const atHead = new Optimistic<number, number>({ initial: 40, apply: (v, c) => v + c, guard: true });
  const handlers = atHead.handlers();
  handlers.onSubscribed?.({ seq: 7, epoch: "e" });
  const { publisher, calls } = scripted();
  void atHead.publish(publisher, "counter:a", 1);
  assert.equal(calls[0]!.options?.expectSeq, 7, "the head it was subscribed at, not 0");
  const fromStart = new Optimistic<number, number>({ initial: 0, apply: (v, c) => v + c, guard: true });
  const replay = fromStart.handlers({ since: 0 });
  assert.equal(replay.since, 0, "caught up from the start");
  replay.onSubscribed?.({ seq: 7, epoch: "e" });
  assert.equal(fromStart.seq, 0, "its deltas bring it to the head");
});
