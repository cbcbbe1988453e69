// openai_client.test.mjs — the official `openai` npm package (v4), a client we did not write,
// against a running edgellmd: chat and completions, streamed and not, model listing, and
// error mapping. EDGELLM_URL names the daemon (e.g. http://127.0.0.1:PORT).
import assert from "node:assert/strict";
import { test } from "node:test";
import OpenAI from "openai";

const base = process.env.EDGELLM_URL;
assert.ok(base, "EDGELLM_URL is not set");
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: "unused", maxRetries: 0, timeout: 60000 });
const models = await client.models.list();
const model = models.data[0].id;

test("models.list names the loaded model", () => {
  assert.equal(models.data.length, 1);
  assert.equal(models.data[0].object, "model");
});

test("chat.completions.create", async () => {
  const r = await client.chat.completions.create({
    model,
    messages: [{ role: "system", content: "Be brief." }, { role: "user", content: "Hello!" }],
    max_tokens: 8,
    temperature: 0,
  });
  assert.equal(r.object, "chat.completion");
  assert.equal(r.model, model);
  assert.equal(r.choices[0].message.role, "assistant");
  assert.equal(typeof r.choices[0].message.content, "string");
  assert.ok(["stop", "length"].includes(r.choices[0].finish_reason));
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
});

test("chat.completions.create with stream and include_usage", async () => {
  const stream = await client.chat.completions.create({
    model,
    messages: [{ role: "user", content: "Count to five." }],
    max_tokens: 12,
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = "", finish = null, usage = null, chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    assert.equal(chunk.object, "chat.completion.chunk");
    if (chunk.choices.length) {
      text += chunk.choices[0].delta.content ?? "";
      finish = chunk.choices[0].finish_reason ?? finish;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  assert.ok(chunks >= 3, `only ${chunks} chunks`);
  assert.ok(["stop", "length"].includes(finish));
  assert.ok(usage && usage.completion_tokens > 0);
  // the streamed text is what the same greedy request answers in one piece
  const whole = await client.chat.completions.create({
    model, messages: [{ role: "user", content: "Count to five." }], max_tokens: 12, temperature: 0,
  });
  assert.equal(text, whole.choices[0].message.content);
});

test("completions.create, streamed and not", async () => {
  const r = await client.completions.create({ model, prompt: "Once upon a time", max_tokens: 10, temperature: 0, seed: 1 });
  assert.equal(r.object, "text_completion");
  assert.ok(r.usage.completion_tokens > 0);
  const stream = await client.completions.create({
    model, prompt: "Once upon a time", max_tokens: 10, temperature: 0, seed: 1, stream: true,
  });
  let text = "";
  for await (const chunk of stream) text += chunk.choices[0]?.text ?? "";
  assert.equal(text, r.choices[0].text);
});

test("errors map to the openai error classes", async () => {
  await assert.rejects(
    client.chat.completions.create({ model: "no-such-model", messages: [{ role: "user", content: "x" }] }),
    (e) => e instanceof OpenAI.NotFoundError && e.code === "model_not_found");
  await assert.rejects(
    client.chat.completions.create({ model, messages: [{ role: "user", content: "x" }], temperature: 7 }),
    (e) => e instanceof OpenAI.BadRequestError && /temperature/.test(e.message));
});
