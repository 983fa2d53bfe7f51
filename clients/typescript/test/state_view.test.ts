import assert from "node:assert/strict";
import { test } from "node:test";

import { mergePatch, StateView } from "../src/state_view.js";

test("merge patches follow RFC 7396", () => {
  // The RFC's appendix A examples that matter here.
  assert.deepEqual(mergePatch({ a: "b" }, { a: "c" }), { a: "c" });
  assert.deepEqual(mergePatch({ a: "b" }, { b: "c" }), { a: "b", b: "c" });
  assert.deepEqual(mergePatch({ a: "b" }, { a: null }), {});
  assert.deepEqual(mergePatch({ a: [{ b: "c" }] }, { a: [1] }), { a: [1] });
  assert.deepEqual(mergePatch({ a: { b: "c" } }, { a: { b: "d", c: null } }), { a: { b: "d" } });
  assert.deepEqual(mergePatch({ e: null }, { a: 1 }), { e: null, a: 1 });
  assert.deepEqual(mergePatch([1, 2], { a: "b", c: null }), { a: "b" });
  assert.deepEqual(mergePatch({}, { a: { bb: { ccc: null } } }), { a: { bb: {} } });
  const target = { tally: { yes: 1 } };
  mergePatch(target, { tally: { yes: 2 } });
  assert.deepEqual(target, { tally: { yes: 1 } }, "the target is left untouched");
});

test("patches apply in version order; a gap asks for a snapshot", () => {
  const view = new StateView();
  assert.equal(view.patch(3, { a: 1 }), "snapshot_needed", "a patch before any snapshot");
  assert.equal(view.snapshot(4, { tally: { yes: 1 } }), "changed");
  assert.equal(view.patch(4, { tally: { yes: 9 } }), "unchanged", "at the version held: old news");
  assert.equal(view.patch(5, { tally: { no: 2 } }), "changed");
  assert.deepEqual(view.value, { tally: { yes: 1, no: 2 } });
  assert.equal(view.patch(7, { tally: { no: 3 } }), "snapshot_needed", "6 was lost");
  assert.equal(view.version, 5);
  assert.equal(view.snapshot(5, {}), "unchanged", "a snapshot at the version held changes nothing");
  assert.equal(view.snapshot(7, { tally: { yes: 1, no: 3 } }), "changed");
  assert.deepEqual(view.value, { tally: { yes: 1, no: 3 } });
});
