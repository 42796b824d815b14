// The interop matrix's Node clients: the official `openai` SDK, the Vercel AI SDK (`streamText`),
// Google's `@google/genai` (Gemini's native API) and Cloudflare's `workers-ai-provider` (the AI
// SDK on Workers AI's own `/ai/run/@cf/...`).
// Usage: node clients.mjs '<json>' with {client, api, baseURL, base, apiKey, headers, model, prompt,
// tools, abortAfter}. Prints one JSON line: what the client made of the stream (text, tool calls,
// usage, finish reason) or the error it raised. `abortAfter: n` aborts after n content events.
import OpenAI from "openai";
import { streamText, jsonSchema, tool } from "ai";
import { createOpenAI } from "@ai-sdk/openai";
import { GoogleGenAI } from "@google/genai";
import { createWorkersAI } from "workers-ai-provider";

const spec = JSON.parse(process.argv[2]);

// Tool arguments as the user's code gets them: parsed, or the raw text when they are broken.
function args(text) {
  try { return JSON.parse(text || "{}"); } catch { return text; }
}

function errorOf(err) {
  return { name: err?.constructor?.name ?? "Error", status: err?.status ?? err?.statusCode ?? null };
}

async function openaiChat() {
  const client = new OpenAI({ baseURL: spec.baseURL, apiKey: spec.apiKey, maxRetries: 0,
    defaultHeaders: spec.headers });
  const body = { model: spec.model, stream: true, stream_options: { include_usage: true },
    messages: [{ role: "user", content: spec.prompt }] };
  if (spec.tools) body.tools = spec.tools.map((t) => ({ type: "function", function: t }));
  const stream = await client.chat.completions.create(body);
  const out = { text: "", toolCalls: {}, usage: null, finish: null, events: 0 };
  let content = 0;
  for await (const chunk of stream) {
    out.events += 1;
    if (chunk.usage) out.usage = { input: chunk.usage.prompt_tokens, output: chunk.usage.completion_tokens };
    for (const choice of chunk.choices ?? []) {
      if (choice.delta?.content) { out.text += choice.delta.content; content += 1; }
      for (const call of choice.delta?.tool_calls ?? []) {
        const slot = (out.toolCalls[call.index] ??= { name: "", arguments: "" });
        slot.name += call.function?.name ?? "";
        slot.arguments += call.function?.arguments ?? "";
        content += 1;
      }
      if (choice.finish_reason) out.finish = choice.finish_reason;
    }
    if (spec.abortAfter && content >= spec.abortAfter) { stream.controller.abort(); out.aborted = true; break; }
  }
  out.toolCalls = Object.values(out.toolCalls).map((c) => ({ name: c.name, arguments: args(c.arguments) }));
  return out;
}

async function openaiResponses() {
  const client = new OpenAI({ baseURL: spec.baseURL, apiKey: spec.apiKey, maxRetries: 0,
    defaultHeaders: spec.headers });
  const body = { model: spec.model, stream: true, input: spec.prompt };
  if (spec.tools) body.tools = spec.tools.map((t) => ({ type: "function", ...t }));
  const stream = await client.responses.create(body);
  const out = { text: "", toolCalls: [], usage: null, finish: null, events: 0 };
  let content = 0;
  for await (const event of stream) {
    out.events += 1;
    if (event.type === "response.output_text.delta") { out.text += event.delta; content += 1; }
    if (event.type === "response.output_item.done" && event.item?.type === "function_call") {
      out.toolCalls.push({ name: event.item.name, arguments: args(event.item.arguments) });
    }
    if (event.type === "response.completed" || event.type === "response.incomplete" || event.type === "response.failed") {
      out.finish = event.response.status;
      const u = event.response.usage;
      if (u) out.usage = { input: u.input_tokens, output: u.output_tokens };
    }
    if (spec.abortAfter && content >= spec.abortAfter) { stream.controller.abort(); out.aborted = true; break; }
  }
  return out;
}

async function aiSdk() {
  const provider = createOpenAI({ baseURL: spec.baseURL, apiKey: spec.apiKey, headers: spec.headers });
  const model = spec.api === "responses" ? provider.responses(spec.model) : provider.chat(spec.model);
  const tools = {};
  for (const t of spec.tools ?? []) {
    tools[t.name] = tool({ description: t.description, inputSchema: jsonSchema(t.parameters) });
  }
  const controller = new AbortController();
  const errors = [];
  const result = streamText({ model, prompt: spec.prompt, tools: spec.tools ? tools : undefined,
    maxRetries: 0, abortSignal: controller.signal, onError: ({ error }) => { errors.push(error); } });
  const out = { text: "", toolCalls: [], usage: null, finish: null, events: 0 };
  let content = 0;
  for await (const part of result.fullStream) {
    out.events += 1;
    if (part.type === "text-delta") { out.text += part.text; content += 1; }
    if (part.type === "tool-call") out.toolCalls.push({ name: part.toolName, arguments: part.input });
    if (part.type === "finish") {
      out.finish = part.finishReason;
      const u = part.totalUsage;
      if (u && (u.inputTokens !== undefined || u.outputTokens !== undefined)) {
        out.usage = { input: u.inputTokens ?? null, output: u.outputTokens ?? null };
      }
    }
    if (part.type === "error") errors.push(part.error);
    if (part.type === "abort") out.aborted = true;
    if (spec.abortAfter && content >= spec.abortAfter && !controller.signal.aborted) {
      controller.abort();
      out.aborted = true;
    }
  }
  if (errors.length && !out.aborted) out.error = errorOf(errors[0]);
  return out;
}

async function genai() {
  const client = new GoogleGenAI({ apiKey: spec.apiKey,
    httpOptions: { baseUrl: spec.base, apiVersion: "v1beta", headers: spec.headers, retryOptions: { attempts: 1 } } });
  const config = spec.tools ? { tools: [{ functionDeclarations: spec.tools }] } : undefined;
  const controller = new AbortController();
  const stream = await client.models.generateContentStream({ model: spec.model, contents: spec.prompt,
    config: { ...config, abortSignal: controller.signal } });
  const out = { text: "", toolCalls: [], usage: null, finish: null };
  let content = 0;
  for await (const chunk of stream) {
    for (const candidate of chunk.candidates ?? []) {
      for (const part of candidate.content?.parts ?? []) {
        if (part.text) { out.text += part.text; content += 1; }
        if (part.functionCall) {
          out.toolCalls.push({ name: part.functionCall.name, arguments: part.functionCall.args });
          content += 1;
        }
      }
      if (candidate.finishReason) out.finish = candidate.finishReason;
    }
    const u = chunk.usageMetadata;
    if (u && u.candidatesTokenCount !== undefined) {
      out.usage = { input: u.promptTokenCount ?? null, output: u.candidatesTokenCount };
    }
    if (spec.abortAfter && content >= spec.abortAfter) { controller.abort(); out.aborted = true; break; }
  }
  return out;
}

// Cloudflare's provider asks https://api.cloudflare.com itself: its `fetch` sends that to `base`.
async function workersAi() {
  const provider = createWorkersAI({ accountId: "account", apiKey: spec.apiKey,
    fetch: (url, init) => fetch(String(url).replace("https://api.cloudflare.com", spec.base),
      { ...init, headers: { ...init.headers, ...spec.headers } }) });
  const result = streamText({ model: provider(spec.model), prompt: spec.prompt, maxRetries: 0 });
  const out = { text: "", toolCalls: [], usage: null, finish: null };
  for await (const text of result.textStream) out.text += text;
  out.finish = await result.finishReason;
  return out;
}

const run = { "openai_node:chat": openaiChat, "openai_node:responses": openaiResponses,
  "ai_sdk:chat": aiSdk, "ai_sdk:responses": aiSdk, "genai_node:gemini": genai,
  "workers_ai_node:workers_ai": workersAi }[`${spec.client}:${spec.api}`];

try {
  const out = await run();
  process.stdout.write(JSON.stringify(out) + "\n");
} catch (err) {
  if (spec.abortAfter && (err?.name === "AbortError" || err?.constructor?.name === "APIUserAbortError")) {
    process.stdout.write(JSON.stringify({ aborted: true }) + "\n");
  } else {
    process.stdout.write(JSON.stringify({ error: errorOf(err) }) + "\n");
  }
}
