// node messages_helper.mjs FILE... -> one line of JSON: per body {ok, error?, text?}, as the
// @anthropic-ai/sdk's MessageStream reads it (`text`: the final message's text and thinking).
import { readFileSync } from "node:fs";
import Anthropic from "@anthropic-ai/sdk";

const results = [];
for (const file of process.argv.slice(2)) {
  const body = readFileSync(file);
  const client = new Anthropic({
    apiKey: "x",
    baseURL: "http://127.0.0.1:9",
    maxRetries: 0,
    fetch: async () => new Response(body, { status: 200, headers: { "content-type": "text/event-stream" } }),
  });
  try {
    const stream = client.messages.stream({ model: "m", max_tokens: 10, messages: [{ role: "user", content: "hi" }] });
    stream.on("error", () => {});
    for await (const _ of stream) {
      // read to the end
    }
    const message = await stream.finalMessage();
    const text = message.content.map((b) => (b.text ?? "") + (b.thinking ?? "")).join("");
    results.push({ ok: true, text });
  } catch (err) {
    results.push({ ok: false, error: `${err?.constructor?.name}: ${err?.message ?? err}`.slice(0, 300) });
  }
}
console.log(JSON.stringify(results));
