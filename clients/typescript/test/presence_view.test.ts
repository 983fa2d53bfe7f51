import assert from "node:assert/strict";
import { test } from "node:test";

import { type Member, PresenceView } from "../src/presence_view.js";

const member = (id: string, at: number, data?: unknown): Member => ({ member: id, sub: id.toLowerCase(), at, data });
const value = (id: string, at: number, data?: unknown) => ({ sub: id.toLowerCase(), at, data });

test("a listing is paged, patches that arrive meanwhile are held, then applied by version", () => {
  const view = new PresenceView();
  assert.deepEqual(view.relist(), { changed: false, list: "" });
  // A patch arrives between the pages: held.
  assert.deepEqual(view.patch({ from: 7, version: 8, patch: { C: value("C", 30) } }), { changed: false });
  assert.deepEqual(view.page({ version: 7, members: [member("A", 10)], more: true, next: "A" }), {
    changed: false,
    list: "A",
  });
  // The second page was read after the patch, so it shows C already: applied again, harmless.
  assert.deepEqual(view.page({ version: 8, members: [member("B", 20), member("C", 30)], more: false }), {
    changed: true,
  });
  assert.equal(view.version, 8, "the first page's version, then the held patch's");
  assert.deepEqual(
    view.members.map((m) => m.member),
    ["A", "B", "C"],
  );
  // Old news, then a leave and an update (which replaces the member whole).
  assert.deepEqual(view.patch({ from: 6, version: 7, patch: { A: null } }), { changed: false });
  assert.deepEqual(view.patch({ from: 8, version: 9, patch: { A: null, B: value("B", 40, { typing: true }) } }), {
    changed: true,
  });
  assert.deepEqual(view.members, [member("C", 30), member("B", 40, { typing: true })]);
});

test("a gap or a resync lists the members again", () => {
  const view = new PresenceView();
  view.relist();
  view.page({ version: 3, members: [member("A", 1)], more: false });
  assert.deepEqual(view.patch({ from: 5, version: 6, patch: {} }), { changed: false, list: "" }, "4 and 5 were missed");
  view.page({ version: 6, members: [], more: false });
  assert.deepEqual(view.members, []);
  assert.deepEqual(view.patch({ from: 6, version: 7, resync: true }), { changed: false, list: "" });
});
