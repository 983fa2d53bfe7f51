/** HttpPublisher against a real HTTP server on 127.0.0.1 that answers as the test says. */

import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { test } from "node:test";

import { DeltacastError } from "../src/errors.js";
import { HttpPublisher } from "../src/http.js";

type Answer = (request: { body: Record<string, unknown> }, response: ServerResponse) => void;

/** A server that answers its requests with `answers`, one each, and records the bodies. */
async function server(answers: Answer[]) {
  const bodies: Record<string, unknown>[] = [];
  const http = createServer((request: IncomingMessage, response) => {
    let text = "";
    request.on("data", (chunk: Buffer) => (text += chunk.toString()));
    request.on("end", () => {
      const body = JSON.parse(text) as Record<string, unknown>;
      bodies.push(body);
      (answers.shift() ?? ((_, r) => r.writeHead(500).end()))({ body }, response);
    });
  });
  await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
  const { port } = http.address() as AddressInfo;
  return { baseUrl: `http://127.0.0.1:${port}`, bodies, close: () => new Promise((resolve) => http.close(resolve)) };
}

const json = (status: number, body: unknown, headers: Record<string, string> = {}): Answer => (_, response) => {
  response.writeHead(status, { "content-type": "application/json", ...headers }).end(JSON.stringify(body));
};

test("a publish still in flight (503) is sent again with the same id and settles with its ack", async () => {
  const stack = await server([
    json(503, { code: "in_flight", status: 503, detail: "still being stored", retryAfterMs: 20 }, { "retry-after": "1" }),
    json(200, { channel: "orders:1", id: "paid", seq: 4, epoch: "e" }),
  ]);
  try {
    const http = new HttpPublisher({ baseUrl: stack.baseUrl, token: () => "t" });
    const ack = await http.publish("orders:1", { status: "paid" }, { id: "paid" });
    assert.deepEqual(ack, { channel: "orders:1", id: "paid", seq: 4, epoch: "e" });
    assert.deepEqual(
      stack.bodies.map((body) => body["id"]),
      ["paid", "paid"],
    );
  } finally {
    await stack.close();
  }
});

test("an answer without a code gets one from its status; a refusal for good is not retried", async () => {
  const stack = await server([json(403, { Message: "Forbidden" })]);
  try {
    const http = new HttpPublisher({ baseUrl: stack.baseUrl, token: () => "t" });
    await assert.rejects(http.publish("orders:1", 1), (error: unknown) => {
      assert.ok(error instanceof DeltacastError);
      assert.equal(error.code, "forbidden");
      assert.equal(error.message, "Forbidden");
      return true;
    });
    assert.equal(stack.bodies.length, 1);
  } finally {
    await stack.close();
  }
});

test("a request that takes too long is given up and tried again", async () => {
  const stack = await server([() => {}, json(200, { channel: "c:1", id: "x", seq: 1, epoch: "e" })]);
  try {
    const http = new HttpPublisher({ baseUrl: stack.baseUrl, token: () => "t", timeoutMs: 200, backoff: { baseMs: 1, maxMs: 1 } });
    assert.equal((await http.publish("c:1", 1, { id: "x" })).seq, 1);
    assert.equal(stack.bodies.length, 2);
  } finally {
    await stack.close();
  }
});
