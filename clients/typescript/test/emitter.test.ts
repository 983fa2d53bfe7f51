import assert from "node:assert/strict";
import { test } from "node:test";

import { Emitter } from "../src/emitter.js";

test("listeners get their event's payload until they stop", () => {
  const emitter = new Emitter<{ state: string; count: number }>();
  const states: string[] = [];
  const stop = emitter.on("state", (state) => states.push(state));
  emitter.emit("state", "connecting");
  emitter.emit("count", 3);
  stop();
  emitter.emit("state", "connected");
  assert.deepEqual(states, ["connecting"]);
});

test("a listener that throws does not keep the others from their event", () => {
  const errors: unknown[] = [];
  const emitter = new Emitter<{ tick: number }>((error) => errors.push(error));
  const seen: number[] = [];
  emitter.on("tick", () => {
    throw new Error("a bad listener");
  });
  emitter.on("tick", (n) => seen.push(n));
  emitter.emit("tick", 1);
  assert.deepEqual(seen, [1]);
  assert.match(String(errors[0]), /a bad listener/);
});
