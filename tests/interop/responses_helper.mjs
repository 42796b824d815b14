// The openai npm SDK's Responses stream helper (`client.responses.stream()`, which builds the
// response from the events) on recorded bodies. Usage: node responses_helper.mjs FILE...
// Prints one JSON line: for each file, {ok, text, args} (the final response's text and tool
// arguments) or {ok: false, error} (what the helper raised).
import { readFileSync } from "node:fs";
import OpenAI from "openai";

const results = [];
for (const file of process.argv.slice(2)) {
  const body = readFileSync(file);
  const client = new OpenAI({
    apiKey: "sk-test",
    baseURL: "http://127.0.0.1:9/v1",
    maxRetries: 0,
    fetch: async () => new Response(body, { status: 200, headers: { "content-type": "text/event-stream" } }),
  });
  try {
    const final = await client.responses.stream({ model: "m", input: "hi" }).finalResponse();
    const calls = (final.output ?? []).filter((o) => o?.type === "function_call");
    results.push({ ok: true, text: final.output_text ?? "", args: calls.map((o) => o.arguments ?? "").join("") });
  } catch (err) {
    results.push({ ok: false, error: String(err).slice(0, 200) });
  }
}
console.log(JSON.stringify(results));
