import assert from "node:assert/strict";
import { test } from "node:test";

import { ChannelLog, type Delta, type Step } from "../src/channel_log.js";

const delta = (seq: number, epoch = "e1"): Delta => ({
  channel: "chat:a",
  seq,
  epoch,
  id: `m${seq}`,
  from: "bob",
  ts: 0,
  data: seq,
});
const seqs = (step: Step) => step.deliver.map((d) => d.seq);

test("a first subscription starts at the head; deltas racing its answer are held", () => {
  const log = new ChannelLog();
  assert.equal(log.subscribing(), undefined, "nothing to resume from yet");
  assert.deepEqual(seqs(log.delta(delta(6))), [], "held until subscribed");
  const step = log.subscribed({ seq: 5, epoch: "e1" });
  assert.deepEqual(seqs(step), [6]);
  assert.equal(step.history, undefined);
  assert.deepEqual(log.position, { epoch: "e1", seq: 6 });
});

test("deltas come once and in order; a gap is asked for once, then filled", () => {
  const log = new ChannelLog();
  log.subscribing();
  log.subscribed({ seq: 0 });
  assert.deepEqual(seqs(log.delta(delta(1))), [1]);
  assert.deepEqual(seqs(log.delta(delta(1))), [], "a duplicate is dropped");
  const gap = log.delta(delta(4));
  assert.deepEqual(seqs(gap), []);
  assert.equal(gap.history, 1, "history after the last applied");
  assert.equal(log.delta(delta(5)).history, undefined, "one request at a time");
  // The gap's deltas arrive (out of order, one twice) before the history answer.
  assert.deepEqual(seqs(log.delta(delta(3))), []);
  assert.deepEqual(seqs(log.delta(delta(2))), [2, 3, 4, 5]);
  const page = log.history({ deltas: [delta(2), delta(3)], more: false, seq: 5 });
  assert.deepEqual(seqs(page), [], "already applied");
  assert.equal(page.reset, undefined);
});

test("a reconnect resumes from the last seq and epoch, catching up in order", () => {
  const log = new ChannelLog();
  log.subscribing();
  log.subscribed({ seq: 2, epoch: "e1" });
  log.delta(delta(3));
  // The socket drops; the client subscribes again.
  assert.deepEqual(log.subscribing(), { since: 3, epoch: "e1" });
  log.delta(delta(5)); // a live delta racing the catch-up
  log.delta(delta(4));
  log.delta(delta(5));
  const step = log.subscribed({ seq: 5, epoch: "e1", recovered: true });
  assert.deepEqual(seqs(step), [4, 5]);
});

test("a catch-up that was not recovered in the same epoch is paged from history", () => {
  const log = new ChannelLog();
  log.subscribing();
  log.subscribed({ seq: 10, epoch: "e1" });
  log.subscribing();
  // More were missed than one catch-up carries: none sent, `recovered: false`.
  const step = log.subscribed({ seq: 900, epoch: "e1", recovered: false });
  assert.equal(step.history, 10);
  const first = log.history({ deltas: [delta(11), delta(12)], more: true, next: 12, seq: 900 });
  assert.deepEqual(seqs(first), [11, 12]);
  assert.equal(first.history, 12, "the next page");
  const last = log.history({ deltas: [delta(13)], more: false, seq: 13 });
  assert.deepEqual(seqs(last), [13]);
  assert.equal(last.history, undefined);
});

test("deltas past their retention are reported lost and skipped", () => {
  const log = new ChannelLog();
  log.subscribing();
  log.subscribed({ seq: 10, epoch: "e1" });
  log.delta(delta(20));
  // History has nothing left between 10 and 20, but 18 and 19.
  const step = log.history({ deltas: [delta(18), delta(19)], more: false, seq: 20 });
  assert.deepEqual(seqs(step), [18, 19, 20]);
  assert.deepEqual(step.reset, { epoch: "e1", seq: 17 });
});

test("a channel that started a new epoch resets the app's view", () => {
  const log = new ChannelLog();
  log.subscribing();
  log.subscribed({ seq: 40, epoch: "e1" });
  log.subscribing();
  const step = log.subscribed({ seq: 2, epoch: "e2", recovered: false });
  assert.deepEqual(step.reset, { epoch: "e2", seq: 2 });
  assert.deepEqual(seqs(log.delta(delta(41, "e1"))), [], "the old epoch's stragglers are dropped");
  assert.deepEqual(seqs(log.delta(delta(3, "e2"))), [3]);
});

test("a history that expired whole starts over: the next epoch's deltas are delivered", () => {
  const log = new ChannelLog();
  log.subscribing();
  log.subscribed({ seq: 4, epoch: "e1" });
  // Quiet for longer than the retention; the channel's next delta starts epoch e2.
  const first = log.delta(delta(1, "e2"));
  assert.deepEqual(seqs(first), []);
  assert.equal(first.resubscribe, true, "another epoch: ask the server where things stand");
  assert.equal(log.delta(delta(2, "e2")).resubscribe, undefined, "asked once");
  assert.deepEqual(log.subscribing(), { since: 4, epoch: "e1" });
  const answer = log.subscribed({ seq: 2, epoch: "e2", recovered: false });
  assert.deepEqual(answer.reset, { epoch: "e2", seq: 2 });
  assert.deepEqual(seqs(log.delta(delta(3, "e2"))), [3], "the new epoch flows");
  // Expired again, and nothing retained at all: the answer has no epoch.
  log.subscribing();
  const empty = log.subscribed({ seq: 0, recovered: false });
  assert.deepEqual(empty.reset, { epoch: undefined, seq: 0 });
  assert.deepEqual(seqs(log.delta(delta(1, "e3"))), [1]);
});

test("a log started at a known position resumes from it", () => {
  const log = new ChannelLog();
  log.startAt(7, "e1");
  assert.deepEqual(log.subscribing(), { since: 7, epoch: "e1" });
  log.delta(delta(8));
  assert.deepEqual(seqs(log.subscribed({ seq: 8, epoch: "e1", recovered: true })), [8]);
});
