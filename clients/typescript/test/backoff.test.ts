import assert from "node:assert/strict";
import { test } from "node:test";

import { backoffDelay } from "../src/backoff.js";

test("the delay's cap doubles from the base up to the maximum", () => {
  const options = { baseMs: 500, maxMs: 30_000 };
  const almostOne = () => 0.999_999;
  const caps = [0, 1, 2, 3, 4, 5, 6, 7, 20].map((attempt) => backoffDelay(attempt, options, almostOne));
  assert.deepEqual(caps, [499, 999, 1999, 3999, 7999, 15999, 29999, 29999, 29999]);
});

test("full jitter: any delay from zero to the cap", () => {
  const options = { baseMs: 1000, maxMs: 60_000 };
  assert.equal(backoffDelay(3, options, () => 0), 0);
  assert.equal(backoffDelay(3, options, () => 0.5), 4000);
  const seen = new Set(Array.from({ length: 200 }, () => backoffDelay(3, options)));
  assert.ok(seen.size > 50, `only ${seen.size} distinct delays`);
  for (const delay of seen) {
    assert.ok(delay >= 0 && delay < 8000, `${delay}`);
  }
});

test("a negative or huge attempt stays within the bounds", () => {
  const options = { baseMs: 500, maxMs: 30_000 };
  assert.equal(backoffDelay(-3, options, () => 0.5), 250);
  assert.equal(backoffDelay(10_000, options, () => 0.5), 15_000);
});
