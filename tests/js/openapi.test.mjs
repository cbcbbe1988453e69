// openapi.test.mjs — openapi.yaml is a valid OpenAPI 3.1 document, and real responses of a
// running edgellmd (EDGELLM_URL) match the schemas it declares for each route and status,
// streamed chunks included.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { test } from "node:test";
import { Validator } from "@seriousme/openapi-schema-validator";
import Ajv2020 from "ajv/dist/2020.js";
import YAML from "yaml";

const base = process.env.EDGELLM_URL;
assert.ok(base, "EDGELLM_URL is not set");
const specPath = new URL("../../openapi.yaml", import.meta.url);
const spec = YAML.parse(await readFile(specPath, "utf8"));

test("openapi.yaml is valid OpenAPI 3.x", async () => {
  const result = await new Validator().validate(spec);
  assert.ok(result.valid, JSON.stringify(result.errors, null, 1));
  assert.match(spec.openapi, /^3\./);
});

const ajv = new Ajv2020({ strict: false, allErrors: true });
ajv.addSchema(spec, "openapi.json");

// The schema openapi.yaml declares for this method, path and status (JSON bodies).
function schemaFor(method, path, status) {
  let r = spec.paths[path][method].responses[String(status)];
  assert.ok(r, `openapi.yaml has no ${status} response for ${method.toUpperCase()} ${path}`);
  if (r.$ref) r = spec.components.responses[r.$ref.split("/").pop()];
  return r.content["application/json"].schema;
}

function check(schema, body, what) {
  const validate = ajv.compile({ $ref: `openapi.json#/components/schemas/${schema.$ref.split("/").pop()}` });
  assert.ok(validate(body), `${what}: ${ajv.errorsText(validate.errors)}\n${JSON.stringify(body)}`);
}

async function call(method, path, body, headers = {}) {
  const r = await fetch(base + path, {
    method: method.toUpperCase(),
    headers: { "content-type": "application/json", ...headers },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  return { status: r.status, headers: r.headers, text: await r.text() };
}

async function expectConforming(method, path, body, status) {
  const r = await call(method, path, body);
  assert.equal(r.status, status, `${method} ${path}: ${r.text}`);
  check(schemaFor(method, path, status), JSON.parse(r.text), `${method} ${path} ${status}`);
  return r;
}

const chat = { messages: [{ role: "user", content: "Hi" }], max_tokens: 6 };

test("GET routes match their schemas", async () => {
  await expectConforming("get", "/health", undefined, 200);
  await expectConforming("get", "/v1/models", undefined, 200);
  await expectConforming("get", "/v1/status", undefined, 200);
  const m = await call("get", "/metrics");
  assert.equal(m.status, 200);
  assert.match(m.text, /^edgellm_queue_depth \d+$/m);
});

test("completions match their schemas", async () => {
  const r = await expectConforming("post", "/v1/chat/completions", chat, 200);
  assert.equal(r.headers.get("x-edgellm-source"), "local");
  await expectConforming("post", "/v1/completions", { prompt: "Hello", max_tokens: 6 }, 200);
  await expectConforming("post", "/tokenize", { content: "Hello world", with_pieces: true }, 200);
  await expectConforming("post", "/detokenize", { tokens: [1, 2, 3] }, 200);
});

test("streamed chunks match their schemas", async () => {
  for (const [path, body, schema] of [
    ["/v1/chat/completions", { ...chat, stream: true, stream_options: { include_usage: true } }, "ChatCompletionChunk"],
    ["/v1/completions", { prompt: "Hello", max_tokens: 6, stream: true }, "TextCompletionChunk"],
  ]) {
    const r = await call("post", path, body);
    assert.equal(r.status, 200);
    assert.match(r.headers.get("content-type"), /^text\/event-stream/);
    const events = r.text.split("\n\n").filter((e) => e.startsWith("data: "));
    assert.equal(events.at(-1), "data: [DONE]");
    for (const e of events.slice(0, -1)) check({ $ref: `#/components/schemas/${schema}` }, JSON.parse(e.slice(6)), path);
  }
});

test("errors match their schemas", async () => {
  await expectConforming("post", "/v1/chat/completions", "{not json", 400);
  await expectConforming("post", "/v1/chat/completions", { ...chat, top_k: "many" }, 400);
  await expectConforming("post", "/v1/completions", { prompt: "x", model: "other" }, 404);
  await expectConforming("post", "/v1/completions", "x".repeat(2 << 20), 413);
  await expectConforming("post", "/detokenize", { tokens: [-1] }, 400);
  const r = await call("get", "/v1/completions");
  assert.equal(r.status, 405);
  check({ $ref: "#/components/schemas/Error" }, JSON.parse(r.text), "405");
});
