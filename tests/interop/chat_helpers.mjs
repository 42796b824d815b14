// node chat_helpers.mjs FILE... -> one line of JSON: per body, what the npm `openai` SDK's
// ChatCompletionStream and the AI SDK's OpenAI provider made of it ({npm, ai}: each an
// error or null, and the text and tool arguments they ended with).
import { readFileSync } from "node:fs";
import OpenAI from "openai";
import { streamText, jsonSchema, tool } from "ai";
import { createOpenAI } from "@ai-sdk/openai";

const TOOLS = ["get_weather", "get_time", "lookup"];
const fetchOf = (body) => async () =>
  new Response(body, { status: 200, headers: { "content-type": "text/event-stream" } });
const describe = (e) => `${e?.constructor?.name ?? "Error"}: ${String(e?.message ?? e)}`.slice(0, 240);

async function npmHelper(body) {
  const client = new OpenAI({ apiKey: "sk", baseURL: "http://127.0.0.1:9/v1", maxRetries: 0, fetch: fetchOf(body) });
  try {
    const stream = client.chat.completions.stream({ model: "m", messages: [{ role: "user", content: "hi" }] });
    for await (const _ of stream) {
      // read to the end
    }
    const done = await stream.finalChatCompletion();
    const text = done.choices.map((c) => (c.message?.content ?? "") + (c.message?.refusal ?? "")).join("");
    const args = done.choices.flatMap((c) => (c.message?.tool_calls ?? []).map((t) => t.function?.arguments ?? "")).join("");
    return { error: null, text, args };
  } catch (e) {
    return { error: describe(e) };
  }
}

async function aiSdk(body) {
  const provider = createOpenAI({ apiKey: "sk", baseURL: "http://127.0.0.1:9/v1", fetch: fetchOf(body) });
  const tools = Object.fromEntries(TOOLS.map((n) => [n, tool({ description: n, inputSchema: jsonSchema({ type: "object" }) })]));
  const errors = [];
  let text = "";
  let args = "";
  try {
    const result = streamText({ model: provider.chat("m"), prompt: "hi", tools, maxRetries: 0, onError: ({ error }) => errors.push(error) });
    for await (const part of result.fullStream) {
      if (part.type === "text-delta") text += part.text;
      if (part.type === "tool-input-delta") args += part.delta;
      if (part.type === "error" || part.type === "tool-error") errors.push(part.error);
    }
  } catch (e) {
    errors.push(e);
  }
  return { error: errors.length ? describe(errors[0]) : null, text, args };
}

const results = [];
for (const file of process.argv.slice(2)) {
  const body = readFileSync(file);
  results.push({ npm: await npmHelper(body), ai: await aiSdk(body) });
}
console.log(JSON.stringify(results));
