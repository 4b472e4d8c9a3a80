// For tests/client/test_interop.py: packets (a JSON list of values on stdin) through the
// TypeScript client; prints the results and the control plane's answers as one JSON object.
import { BlockClient } from "../src/index.js";

async function main(): Promise<void> {
  const [address, sessionId] = process.argv.slice(2);
  let input = "";
  for await (const chunk of process.stdin) input += chunk;
  const { packets, parameters } = JSON.parse(input) as { packets: never[]; parameters: Record<string, never> };
  const client = new BlockClient(address);
  try {
    const results = [];
    for await (const r of client.process(packets, { sessionId })) {
      results.push({
        session_id: r.sessionId,
        seq_no: r.seqNo,
        kind: r.kind,
        data: r.data ?? null,
        code: r.error?.codeName ?? null,
        retryable: r.error?.retryable ?? null,
      });
    }
    const applied = (await client.setParameters(parameters)).applied;
    const info = await client.getInfo();
    process.stdout.write(JSON.stringify({ results, applied, block_id: info.blockId, health: await client.health() }));
  } finally {
    client.close();
  }
}

await main();
