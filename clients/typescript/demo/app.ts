/**
 * The deltacast demo: a chat, a live poll and who is here, each a few lines of client
 * code. The local stack serves it (`make dev`, then the link it prints) with a
 * development token for `?user=<name>`; open two windows as two users.
 *
 * - Chat (`chat:demo`, a log channel): every message once and in order, across
 *   reconnects; yours shows at once, greyed until the server acknowledges it.
 * - Live poll (`state:poll`, a state channel): each vote an `inc`, the tally a document
 *   the server folds and patches.
 * - Presence (`chat:demo`): who is connected, entered again after every reconnect.
 */

import { type Delta, DeltacastClient, type Member, newId, type SocketLike } from "../src/index.js";

const user = new URLSearchParams(location.search).get("user") || `guest-${newId(4)}`;

// For the browser test (browser/demo.test.ts), not part of the demo: the socket in use,
// so the test can learn its connection id (a `ping` answers it) and cut it from the
// server's side, as a lost network would. Set by the socket factory below.
let socket: WebSocket | undefined;

const client = new DeltacastClient({
  url: `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/local`,
  // Asked again at every (re)connect, so a reconnect never presents a stale token.
  token: async () => {
    const response = await fetch(`/demo/token?user=${encodeURIComponent(user)}`);
    if (!response.ok) {
      // The stack says why (a user that is not valid, another machine, a secret of your
      // own): show it, as retrying will not change it until you do.
      const why = (await response.text()).trim() || response.statusText;
      showNotice(`No token (HTTP ${response.status}): ${why}`);
      throw new Error(`no token: HTTP ${response.status}`);
    }
    return ((await response.json()) as { token: string }).token;
  },
  // Browsers cannot set headers on a WebSocket: the token travels as a subprotocol.
  tokenIn: "subprotocol",
  // A demo should come back quickly: retry within 0.25 s, then at most every 5 s.
  backoff: { baseMs: 250, maxMs: 5_000 },
  // The browser's WebSocket, as by default, kept for the browser test's hook (below).
  socket: (url, protocols) => {
    socket = new WebSocket(url, protocols);
    return socket as unknown as SocketLike;
  },
});

// The connection's state, as a badge; a notice says what keeps it from connecting.
const badge = element("#connection");
const notice = element("#notice");
client.on("state", (state) => {
  badge.dataset["state"] = state;
  badge.textContent = state;
  if (state === "connected") {
    notice.hidden = true;
  }
});

function showNotice(text: string): void {
  notice.textContent = text;
  notice.hidden = false;
}

// Chat: subscribe, publish. Nothing else is needed for once-and-in-order delivery.
const messages = element("#messages");
const sending = element("#sending");
client.subscribe("chat:demo", {
  onDelta: (delta) => showDelivered(delta),
  onReset: () => (element("#reset").hidden = false),
});

element("#chat-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = element<HTMLInputElement>("#chat-text");
  const text = input.value.trim();
  input.value = "";
  if (text === "") {
    return;
  }
  // Our own id, so the message can be matched with its ack and its delta.
  const id = newId();
  const item = messageItem(id, user, text);
  item.classList.add("pending");
  sending.append(item);
  scrollToEnd();
  // Only the text: who wrote it is the delta's `from`, the user the server verified.
  client.publish("chat:demo", { text }, { id }).then(
    (ack) => {
      item.classList.remove("pending");
      item.dataset["seq"] = String(ack.seq);
    },
    (error: Error) => {
      item.classList.replace("pending", "failed");
      item.title = error.message;
    },
  );
});

function showDelivered(delta: Delta): void {
  const { text } = (delta.data ?? {}) as { text?: unknown };
  // The author is `from`, the token's user as the server verified it: a name in the
  // data would be whatever the sender chose to write there.
  const item =
    sending.querySelector<HTMLLIElement>(`li[data-id="${CSS.escape(delta.id)}"]`) ??
    messageItem(delta.id, delta.from, String(text ?? ""));
  item.classList.remove("pending");
  item.dataset["seq"] = String(delta.seq);
  messages.append(item); // deltas come in seq order: appending keeps the list ordered
  scrollToEnd();
}

function messageItem(id: string, name: string, text: string): HTMLLIElement {
  const item = document.createElement("li");
  item.dataset["id"] = id;
  const who = document.createElement("b");
  who.textContent = name;
  item.append(who, ` ${text}`);
  return item;
}

function scrollToEnd(): void {
  const log = messages.parentElement;
  log?.scrollTo({ top: log.scrollHeight });
}

// Live poll: a vote is an `inc` with an id of its own (`update` makes one; sent again
// after a drop, counted once); the tally is the document, delivered whole and then as
// patches.
const OPTIONS = ["yes", "no", "later"] as const;
const options = element("#options");
for (const option of OPTIONS) {
  const row = document.createElement("li");
  const vote = document.createElement("button");
  vote.textContent = option;
  vote.dataset["vote"] = option;
  vote.addEventListener("click", () => {
    void client.update("state:poll", [{ op: "inc", path: `/tally/${option}`, by: 1 }]);
  });
  const bar = document.createElement("span");
  bar.className = "bar";
  const count = document.createElement("span");
  count.className = "count";
  count.dataset["option"] = option;
  count.textContent = "0";
  row.append(vote, bar, count);
  options.append(row);
}

client.watchState("state:poll", (value, version) => {
  const tally = (value["tally"] ?? {}) as Partial<Record<string, number>>;
  const total = OPTIONS.reduce((sum, option) => sum + (tally[option] ?? 0), 0);
  for (const option of OPTIONS) {
    const votes = tally[option] ?? 0;
    const count = element(`[data-option="${option}"]`);
    count.textContent = String(votes);
    const bar = count.previousElementSibling as HTMLElement;
    bar.style.setProperty("--share", total === 0 ? "0" : String(votes / total));
  }
  options.dataset["version"] = String(version);
});

// Presence: enter once (the client enters again after every reconnect), watch the list.
// Members are shown by `sub`, the user the server verified, so no data is needed.
void client.enter("chat:demo");
client.watchPresence("chat:demo", (members) => showMembers(members));

function showMembers(members: readonly Member[]): void {
  const list = element("#members");
  list.replaceChildren(
    ...members.map((member) => {
      const item = document.createElement("li");
      item.dataset["sub"] = member.sub;
      item.dataset["member"] = member.member;
      item.textContent = member.sub;
      if (member.sub === user) {
        item.classList.add("me");
      }
      return item;
    }),
  );
}

element("#user").textContent = user;

function element<T extends HTMLElement = HTMLElement>(selector: string): T {
  const found = document.querySelector<T>(selector);
  if (found === null) {
    throw new Error(`index.html has no ${selector}`);
  }
  return found;
}

/** How long the test hook waits for its `pong`. */
const PONG_TIMEOUT_MS = 5_000;

/** What the page offers its browser test on `window.deltacastDemo` (see `socket`). */
export interface DemoTestHook {
  /** The connection id of the socket in use, from a `ping`'s `pong`; rejected when the
   * socket closes first or no `pong` comes within 5 s. */
  connectionId(): Promise<string>;
}

declare global {
  interface Window {
    deltacastDemo?: DemoTestHook;
  }
}

window.deltacastDemo = {
  connectionId: () =>
    new Promise((resolve, reject) => {
      const open = socket;
      if (open === undefined || open.readyState !== WebSocket.OPEN) {
        reject(new Error("not connected"));
        return;
      }
      const id = `test-${newId(8)}`;
      const done = () => {
        clearTimeout(timer);
        open.removeEventListener("message", onMessage);
        open.removeEventListener("close", onClose);
      };
      const onMessage = (event: MessageEvent) => {
        const frame = JSON.parse(String(event.data)) as { type?: string; id?: string; connectionId?: string };
        if (frame.type === "pong" && frame.id === id && frame.connectionId !== undefined) {
          done();
          resolve(frame.connectionId);
        }
      };
      const onClose = () => {
        done();
        reject(new Error("the socket closed before its pong"));
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`no pong within ${PONG_TIMEOUT_MS} ms`));
      }, PONG_TIMEOUT_MS);
      open.addEventListener("message", onMessage);
      open.addEventListener("close", onClose);
      open.send(JSON.stringify({ action: "ping", id }));
    }),
};

void client.connect();
