// The TypeScript client against real served blocks (aios-grpc serve in child processes).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { BlockClient, Code, ConnectError, makePacket, type Result } from "../src/index.js";
import { serve, type Served } from "./served.js";

async function collect(results: AsyncIterable<Result>): Promise<Result[]> {
  const out: Result[] = [];
  for await (const result of results) out.push(result);
  return out;
}

describe("BlockClient", () => {
  let echo: Served;
  let streaming: Served;
  let guarded: Served;
  before(async () => {
    [echo, streaming, guarded] = await Promise.all([
      serve("tests.blocks.basic:EchoBlock", { AIOS_BLOCK_ID: "echo", AIOS_INSTANCE_ID: "ts-1" }),
      serve("tests.blocks.basic:StreamingBlock"),
      serve("tests.blocks.basic:EchoBlock", { AIOS_AUTH_TOKENS: '["tok-ts"]' }),
    ]);
  });
  after(async () => {
    await Promise.all([echo?.stop(), streaming?.stop(), guarded?.stop()]);
  });

  test("process: one terminal result per packet, data as JS values", async () => {
    const client = new BlockClient(echo.address);
    try {
      const results = await collect(client.process([{ x: 1 }, { x: 2, s: "é" }, [1, 2]], { sessionId: "s1" }));
      assert.deepEqual(
        results.map((r) => [r.sessionId, r.seqNo, r.kind, r.data]),
        [
          ["s1", 1, "ok", { echo: { x: 1 } }],
          ["s1", 2, "ok", { echo: { x: 2, s: "é" } }],
          ["s1", 3, "ok", { echo: [1, 2] }],
        ],
      );
      const failed = await client.run({ fail: "no thanks" }, { seqNo: 9 });
      assert.equal(failed.ok, false);
      assert.equal(failed.seqNo, 9);
      assert.equal(failed.error?.message.includes("no thanks"), true);
      assert.equal(typeof failed.error?.retryable, "boolean");
      const own = makePacket({ own: true }, { sessionId: "p", seqNo: 5, headers: { k: "v" } });
      const [answer] = await collect(client.process([own]));
      assert.deepEqual([answer.sessionId, answer.seqNo, answer.data], ["p", 5, { echo: { own: true } }]);
    } finally {
      client.close();
    }
  });

  test("run and process keep partial results before the terminal one", async () => {
    const client = new BlockClient(streaming.address);
    try {
      const out = await client.run({ text: "a b c" });
      assert.equal(out.terminal, true);
      assert.deepEqual(out.partials.map((p) => p.data), [{ token: "a" }, { token: "b" }, { token: "c" }]);
      const kinds = (await collect(client.process([{ text: "x y" }]))).map((r) => r.kind);
      assert.deepEqual(kinds, ["partial", "partial", "ok"]);
    } finally {
      client.close();
    }
  });

  test("stream: send while reading", async () => {
    const client = new BlockClient(echo.address);
    try {
      const stream = client.stream({ sessionId: "live" });
      const reading = collect(stream.results());
      for (let i = 0; i < 20; i++) stream.send({ i });
      stream.close();
      const results = await reading;
      assert.deepEqual(results.map((r) => r.seqNo), Array.from({ length: 20 }, (_, i) => i + 1));
      assert.deepEqual(results[19].data, { echo: { i: 19 } });
    } finally {
      client.close();
    }
  });

  test("control plane returns plain values; Structs both ways", async () => {
    const client = new BlockClient(echo.address);
    try {
      assert.equal(await client.health(), "SERVING");
      assert.equal(await client.health("aios.block.v1.BlockService"), "SERVING");
      const params = { threshold: 0.7, n: 4, nested: { a: [1, "two", null, true] } };
      const out = await client.setParameters(params);
      assert.deepEqual(out.applied, params);
      assert.deepEqual(out.parameters, params);
      const info = await client.getInfo();
      assert.equal(info.blockId, "echo");
      assert.equal(info.instanceId, "ts-1");
      assert.deepEqual(info.parameters, params);
      const before = (await client.management("calls")) as { calls: number };
      await client.run({ counted: true });
      assert.deepEqual(await client.management("calls"), { calls: before.calls + 1 });
    } finally {
      client.close();
    }
  });

  test("bad input is a clear error and the server stays up", async () => {
    const client = new BlockClient(echo.address);
    try {
      await assert.rejects(client.setParameters([1, 2] as never), /parameters must be a plain object \(a JSON object\), got array/);
      await assert.rejects(client.management("calls", null as never), /data must be a plain object/);
      await assert.rejects(client.management("nope"), (e: unknown) => e instanceof ConnectError && e.code === Code.Unimplemented);
      await assert.rejects(client.setParameters({ bad: true }), (e: unknown) => e instanceof ConnectError && e.code === Code.InvalidArgument);
      assert.throws(() => new BlockClient(""), /address must be a non-empty string/);
      assert.equal((await client.run({ after: true })).ok, true);
    } finally {
      client.close();
    }
  });

  test("token: sent as a bearer token; refused without it", async () => {
    const withToken = new BlockClient(guarded.address, { token: "tok-ts" });
    const without = new BlockClient(guarded.address);
    try {
      assert.deepEqual((await withToken.run({ t: 1 })).data, { echo: { t: 1 } });
      await assert.rejects(collect(without.process([{ t: 2 }])), (e: unknown) => e instanceof ConnectError && e.code === Code.Unauthenticated);
    } finally {
      withToken.close();
      without.close();
    }
  });
});
