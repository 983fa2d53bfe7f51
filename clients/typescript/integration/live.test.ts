/**
 * The client's live state, presence, history, optimistic updates, coalesced delivery and
 * HTTP publishing against the local stack (`integration/run` starts it; `DELTACAST_URL`
 * names it; the HTTP API is on the same port).
 */

import assert from "node:assert/strict";
import { test } from "node:test";

import { type Delta, DeltacastClient, DeltacastError, HttpPublisher, type Member, Optimistic } from "../src/index.js";
import { HTTP, URL, sockets, token, until } from "./support.js";

const RUN = Date.now().toString(36);

/** A client for `sub` whose sockets the test can cut, and whose frames it can count. */
function client(sub: string) {
  const { factory, open, frames } = sockets();
  const made = new DeltacastClient({ url: URL, token: () => token(sub), socket: factory, backoff: { baseMs: 100, maxMs: 500 } });
  return { client: made, cut: () => open.at(-1)?.terminate(), frames };
}

test("votes from three clients, some sent twice, one across a cut socket: the exact tally", { timeout: 60_000 }, async () => {
  const channel = `state:poll-${RUN}`;
  const viewer = client("viewer");
  let tally: Record<string, number> = {};
  viewer.client.watchState(channel, (value) => {
    tally = (value["tally"] as Record<string, number> | undefined) ?? {};
  });
  await viewer.client.connect();
  const voters = ["ann", "bob", "cy"].map((sub) => ({ sub, ...client(sub) }));
  await Promise.all(voters.map((v) => v.client.connect()));
  const updates: Promise<{ duplicate: boolean }>[] = [];
  for (let round = 0; round < 4; round += 1) {
    for (const [i, voter] of voters.entries()) {
      const option = (round + i) % 2 === 0 ? "yes" : "no";
      updates.push(voter.client.update(channel, [{ op: "inc", path: `/tally/${option}`, by: 1 }], { id: `v${round}` }));
      if (round === 1 && i === 0) voter.cut();
    }
  }
  const answers = await Promise.all(updates);
  assert.equal(answers.length, 12);
  // The same ids again: duplicates, nothing added.
  const again = await Promise.all(
    voters.map((v) => v.client.update(channel, [{ op: "inc", path: "/tally/yes", by: 1 }], { id: "v0" })),
  );
  assert.deepEqual(
    again.map((a) => a.duplicate),
    [true, true, true],
  );
  await until(() => (tally["yes"] ?? 0) + (tally["no"] ?? 0) >= 12, 20_000, "the tally");
  await new Promise((resolve) => setTimeout(resolve, 600));
  assert.deepEqual(tally, { yes: 6, no: 6 });
  for (const c of [viewer, ...voters]) c.client.close();
});

test("presence: a member shown to a watcher, entered again after its socket is cut, gone when it leaves", { timeout: 60_000 }, async () => {
  const channel = `chat:presence-${RUN}`;
  const ann = client("ann");
  const bob = client("bob");
  let members: readonly Member[] = [];
  bob.client.watchPresence(channel, (list) => {
    members = list;
  });
  await bob.client.connect();
  await ann.client.connect();
  await ann.client.enter(channel, { name: "Ann" });
  const annShown = () => members.filter((m) => m.sub === "ann");
  await until(() => annShown().length === 1, 15_000, "ann in bob's list");
  assert.deepEqual(annShown()[0]?.data, { name: "Ann" });
  const before = annShown()[0]?.member;
  ann.cut();
  // Her old connection leaves; the new one enters by itself.
  await until(() => annShown().length === 1 && annShown()[0]?.member !== before, 20_000, "ann back on a new connection");
  await ann.client.leave(channel);
  await until(() => annShown().length === 0, 15_000, "ann gone");
  ann.client.close();
  bob.client.close();
});

test("HTTP publishes (one sent twice, a batch, a conflict) reach a coalescing subscriber once, in order; history pages", { timeout: 60_000 }, async () => {
  const channel = `chat:http-${RUN}`;
  const reader = client("reader");
  const got: Delta[] = [];
  let ready = false;
  reader.client.subscribe(channel, { onDelta: (delta) => got.push(delta), coalesce: true, onSubscribed: () => (ready = true) });
  await reader.client.connect();
  await until(() => ready, 10_000, "the reader subscribed");
  const http = new HttpPublisher({ baseUrl: HTTP, token: () => token("server") });
  const first = await http.publish(channel, { n: 1 }, { id: "h1" });
  const repeat = await http.publish(channel, { n: 1 }, { id: "h1" });
  assert.deepEqual(repeat, first, "the same id: the same ack");
  const batch = await http.publishBatch(
    Array.from({ length: 49 }, (_, i) => ({ channel, id: `b${i + 2}`, data: { n: i + 2 } })),
  );
  assert.ok(batch.every((r) => r.ok), "every batch item acked");
  await assert.rejects(http.publish(channel, { n: 0 }, { expectSeq: 3 }), (error: unknown) => {
    assert.ok(error instanceof DeltacastError);
    assert.equal(error.code, "conflict");
    assert.equal(error.details.seq, 50);
    return true;
  });
  await until(() => got.length >= 50, 20_000, "50 deltas");
  await new Promise((resolve) => setTimeout(resolve, 400));
  assert.deepEqual(
    got.map((d) => (d.data as { n: number }).n),
    Array.from({ length: 50 }, (_, i) => i + 1),
    "once each, in order",
  );
  // History, paged 7 at a time with `next`.
  const paged: number[] = [];
  let since = 0;
  for (let page = 0; page < 20; page += 1) {
    const answer = await reader.client.history(channel, { since, limit: 7 });
    paged.push(...answer.deltas.map((d) => d.seq));
    if (!answer.more || answer.next === undefined) break;
    since = answer.next;
  }
  assert.deepEqual(paged, Array.from({ length: 50 }, (_, i) => i + 1));
  // Bursts (30 publishes sent at once) reach the coalescing reader several to a frame,
  // still once and in order. A burst the server happens to spread out comes one by one,
  // so up to three are sent.
  const burster = new DeltacastClient({ url: URL, token: () => token("burster"), socket: sockets().factory, inOrder: false });
  try {
    await burster.connect();
    let sent = 50;
    for (let burst = 0; burst < 3 && !reader.frames.includes("deltas"); burst += 1) {
      await Promise.all(Array.from({ length: 30 }, (_, i) => burster.publish(channel, { n: sent + i + 1 })));
      sent += 30;
      await until(() => got.length >= sent, 20_000, `${sent} deltas`);
    }
    assert.ok(reader.frames.includes("deltas"), "bursts came several to a frame");
    assert.deepEqual(
      got.map((d) => d.seq),
      Array.from({ length: sent }, (_, i) => i + 1),
      "once each, in seq order",
    );
  } finally {
    burster.close();
    reader.client.close();
  }
});

test("optimistic counters on two clients: a change made on a stale value is rolled back, both converge", { timeout: 60_000 }, async () => {
  const channel = `counter:opt-${RUN}`;
  const sides = ["ann", "bob"].map((sub) => {
    const made = client(sub);
    const counter = new Optimistic<number, number>({ initial: 0, apply: (value, change) => value + change, guard: true });
    made.client.subscribe(channel, counter.handlers({ since: 0 })); // built from every delta, however late the subscription
    return { ...made, counter };
  });
  await Promise.all(sides.map((s) => s.client.connect()));
  await until(() => sides.every((s) => s.client.state === "connected"), 10_000, "connected");
  await new Promise((resolve) => setTimeout(resolve, 300));
  const [ann, bob] = sides as [(typeof sides)[0], (typeof sides)[0]];
  await ann.counter.publish(ann.client, channel, 1);
  await until(() => bob.counter.seq === 1, 10_000, "bob saw ann's change");
  // Both change the same head at once: one wins, the other is refused and rolled back.
  const outcomes = await Promise.allSettled([
    ann.counter.publish(ann.client, channel, 10),
    bob.counter.publish(bob.client, channel, 100),
  ]);
  const refused = outcomes.filter((o) => o.status === "rejected");
  assert.equal(refused.length, 1, "exactly one of the two is refused");
  const reason = (refused[0] as PromiseRejectedResult).reason as DeltacastError;
  assert.equal(reason.code, "conflict");
  await until(() => sides.every((s) => s.counter.seq === 2 && s.counter.pending === 0), 10_000, "both at seq 2");
  assert.equal(ann.counter.value, bob.counter.value, "both show the same value");
  assert.ok(ann.counter.value === 11 || ann.counter.value === 101, `what won: ${ann.counter.value}`);
  for (const s of sides) s.client.close();
});
