/**
 * The demo in a real browser: Debian's chromium, driven by playwright-core, against a
 * local stack that serves the demo (`browser/run` starts one on a table of its own;
 * `DELTACAST_DEMO_URL` names the page). Two users chat; one goes offline (its network
 * blocked and its socket cut) and sends messages while the other keeps sending; after
 * the reconnect both pages show every message once and in order, each by its sender as
 * the server verified it. Both vote, during the cut too, and both see the exact tally. A
 * screenshot of each page is saved under `target/browser/`.
 */

import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { join, resolve } from "node:path";
import { test } from "node:test";

import { type Browser, type BrowserContext, type Page, chromium } from "playwright-core";

const DEMO = process.env["DELTACAST_DEMO_URL"] ?? "http://127.0.0.1:3001/demo/";
const CHROMIUM = process.env["CHROMIUM"] ?? "/usr/bin/chromium";
const SCREENSHOTS = resolve(process.env["DELTACAST_SCREENSHOTS"] ?? "target/browser");
/** Without the background-networking flags chromium keeps calling Google's services. */
const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
/** A loaded 2-core machine runs the stack, DynamoDB Local and the browser: waits are
 * generous, and every one is bounded. */
const WAIT_MS = 30_000;

interface User {
  readonly name: string;
  readonly context: BrowserContext;
  readonly page: Page;
  readonly errors: string[];
}

/** One chat message as a page shows it. */
interface Shown {
  readonly id: string;
  readonly seq: number;
  /** Who wrote it, as the page shows it (its `<b>`). */
  readonly author: string;
  readonly text: string;
}

async function open(browser: Browser, name: string): Promise<User> {
  const context = await browser.newContext({ viewport: { width: 1100, height: 760 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  const errors: string[] = [];
  page.on("pageerror", (error) => errors.push(error.message));
  await page.goto(`${DEMO}?user=${name}`);
  await page.locator("#connection[data-state=connected]").waitFor();
  return { name, context, page, errors };
}

/** Types a message and sends it with Enter or the Send button, as a person would. */
async function say(user: User, text: string, how: "enter" | "click" = "enter"): Promise<void> {
  await user.page.fill("#chat-text", text);
  if (how === "enter") {
    await user.page.press("#chat-text", "Enter");
  } else {
    await user.page.click("#chat-form button");
  }
  await user.page.locator("#chat-text").and(user.page.locator(":placeholder-shown")).waitFor();
}

async function vote(user: User, option: string): Promise<void> {
  await user.page.click(`button[data-vote="${option}"]`);
}

/** The connection id of the page's socket (the demo's test hook asks with a `ping`). */
async function connectionId(user: User): Promise<string> {
  return user.page.evaluate(async () => {
    const hook = window.deltacastDemo;
    if (hook === undefined) {
      throw new Error("the page has no test hook");
    }
    return hook.connectionId();
  });
}

/**
 * Takes `user` offline for real. `setOffline` alone blocks new requests but leaves an
 * open WebSocket open (chromium holds its frames and its close until the network is
 * back), so the socket is also cut from the server's side with the Management API, and
 * the network goes only once the page has seen that close. Token requests are refused
 * first, so the client cannot reconnect meanwhile.
 */
async function goOffline(user: User): Promise<void> {
  const id = await connectionId(user);
  await user.context.route("**/demo/token**", (route) => route.abort("internetdisconnected"));
  const cut = await fetch(new URL(`/@connections/${encodeURIComponent(id)}`, DEMO), { method: "DELETE" });
  assert.equal(cut.status, 204, `DELETE /@connections/${id}`);
  await user.page.locator("#connection:not([data-state=connected])").waitFor();
  await user.context.setOffline(true);
  await user.page.locator("#connection[data-state=disconnected], #connection[data-state=connecting]").waitFor();
}

async function goOnline(user: User): Promise<void> {
  await user.context.setOffline(false);
  await user.context.unroute("**/demo/token**");
}

async function shown(user: User): Promise<{ delivered: Shown[]; sending: number; pending: number }> {
  return user.page.evaluate(() => ({
    delivered: Array.from(document.querySelectorAll<HTMLLIElement>("#messages li"), (item) => ({
      id: item.dataset["id"] ?? "",
      seq: Number(item.dataset["seq"]),
      author: item.querySelector("b")?.textContent ?? "",
      text: item.lastChild?.textContent?.trim() ?? "",
    })),
    sending: document.querySelectorAll("#sending li").length,
    pending: document.querySelectorAll("#messages li.pending, #sending li.pending").length,
  }));
}

async function tally(user: User): Promise<Record<string, number>> {
  return user.page.evaluate(() =>
    Object.fromEntries(
      Array.from(document.querySelectorAll<HTMLElement>("[data-option]"), (count) => [
        count.dataset["option"] ?? "",
        Number(count.textContent),
      ]),
    ),
  );
}

/** Waits until both pages show every message sent so far as delivered, nothing pending. */
async function allDelivered(users: readonly User[], sent: readonly string[]): Promise<void> {
  await until(
    async () => {
      for (const user of users) {
        const sees = await shown(user);
        const texts = new Set(sees.delivered.map((message) => message.text));
        if (sees.sending > 0 || sees.pending > 0 || !sent.every((text) => texts.has(text))) {
          return false;
        }
      }
      return true;
    },
    WAIT_MS,
    `${sent.length} messages delivered on both pages`,
  );
}

/** Polls `check` until it holds, for at most `ms`. */
async function until(check: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    assert.ok(Date.now() < deadline, `timed out after ${ms} ms waiting for ${what}`);
    await pause(200);
  }
}

const pause = (ms: number) => new Promise((done) => setTimeout(done, ms));

test("two users chat across a cut and vote: every message once and in order, the exact tally", { timeout: 180_000 }, async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: make chromium installs Debian's chromium`);
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
  const users: User[] = [];
  try {
    const ann = await open(browser, "ann");
    users.push(ann);
    const bob = await open(browser, "bob");
    users.push(bob);
    await ann.page.locator('#members li[data-sub="bob"]').waitFor();
    await bob.page.locator('#members li[data-sub="ann"]').waitFor();
    // The tally shown once the poll's document has arrived (a fresh table: all zero).
    await ann.page.locator("#options[data-version]").waitFor();
    const before = await tally(ann);

    /** Every message sent, in the order sent; each starts with its author's name. */
    const sent: string[] = [];
    const bobSays = async (n: number) => {
      await say(bob, `bob ${n}`, n % 2 === 0 ? "click" : "enter");
      sent.push(`bob ${n}`);
      await pause(300);
    };

    // GIVEN two users chatting and voting
    for (let n = 1; n <= 4; n += 1) {
      await bobSays(n);
    }
    await say(ann, "ann 1");
    sent.push("ann 1");
    await vote(ann, "yes");
    await vote(bob, "no");
    // ... all of it delivered, so that exactly ann's offline messages wait below
    await allDelivered(users, sent);

    // WHEN ann goes offline, writes and votes, while bob keeps writing and voting
    await goOffline(ann);
    for (let n = 1; n <= 3; n += 1) {
      await say(ann, `ann offline ${n}`);
      sent.push(`ann offline ${n}`);
      await bobSays(4 + n);
    }
    await vote(ann, "yes");
    await vote(bob, "no");
    await ann.page.locator("#sending li.pending").nth(2).waitFor();
    assert.equal((await shown(ann)).pending, 3, "ann's three offline messages wait, greyed");
    await bobSays(8);
    await goOnline(ann);

    // ... and both carry on once she is back
    await vote(ann, "yes");
    await say(ann, "ann 2", "click");
    sent.push("ann 2");
    await bobSays(9);

    // THEN both pages show every message once, in seq order, nothing pending
    await until(
      async () => {
        const [a, b] = [await shown(ann), await shown(bob)];
        return a.delivered.length >= sent.length && b.delivered.length >= sent.length && a.sending + b.sending === 0;
      },
      WAIT_MS,
      `${sent.length} messages delivered on both pages`,
    );
    await pause(500); // anything delivered twice would show by now
    const [annSees, bobSees] = [await shown(ann), await shown(bob)];
    for (const [user, sees] of [[ann, annSees], [bob, bobSees]] as const) {
      const texts = sees.delivered.map((message) => message.text);
      const lost = sent.filter((text) => !texts.includes(text));
      const duplicated = texts.filter((text, i) => texts.indexOf(text) !== i);
      assert.deepEqual(lost, [], `${user.name} lost none`);
      assert.deepEqual(duplicated, [], `${user.name} got none twice`);
      assert.equal(texts.length, sent.length, `${user.name} shows exactly what was sent`);
      assert.deepEqual(
        sees.delivered.map((message) => message.seq),
        Array.from({ length: sent.length }, (_, i) => i + 1),
        `${user.name}: seq 1 to ${sent.length}, in order, no gap`,
      );
      assert.equal(sees.pending, 0, `${user.name}: nothing pending`);
      for (const message of sees.delivered) {
        assert.equal(
          message.author,
          message.text.split(" ")[0],
          `${user.name} shows "${message.text}" by its sender, as the server verified it`,
        );
      }
    }
    assert.deepEqual(annSees.delivered, bobSees.delivered, "both pages show the same list");
    // A user's own messages keep the order they were written in, offline ones included.
    for (const name of ["ann", "bob"]) {
      const theirs = (texts: readonly string[]) => texts.filter((text) => text.startsWith(`${name} `));
      assert.deepEqual(
        theirs(annSees.delivered.map((message) => message.text)),
        theirs(sent),
        `${name}'s messages in the order ${name} wrote them`,
      );
    }

    // ... and the same, exact tally
    const expected = { ...before, yes: (before["yes"] ?? 0) + 3, no: (before["no"] ?? 0) + 2 };
    await until(
      async () => {
        const [a, b] = [await tally(ann), await tally(bob)];
        return (
          JSON.stringify(a) === JSON.stringify(expected) && JSON.stringify(b) === JSON.stringify(expected)
        );
      },
      20_000,
      `the tally ${JSON.stringify(expected)} on both pages`,
    );

    // ... and each other, present again, once each (ann's cut connection left)
    for (const user of users) {
      await until(
        async () => (await user.page.locator("#members li").evaluateAll((items) => items.map((i) => i.getAttribute("data-sub")).sort().join())) === "ann,bob",
        WAIT_MS,
        `${user.name}'s presence list to be ann and bob, once each`,
      );
    }
    for (const user of users) {
      assert.deepEqual(user.errors, [], `${user.name}'s page threw nothing`);
    }
  } finally {
    await mkdir(SCREENSHOTS, { recursive: true });
    for (const user of users) {
      const path = join(SCREENSHOTS, `${user.name}.png`);
      await user.page.screenshot({ path, fullPage: true }).then(
        () => console.log(`screenshot: ${path}`),
        (error: Error) => console.log(`no screenshot of ${user.name}: ${error.message}`),
      );
    }
    await browser.close();
  }
});
