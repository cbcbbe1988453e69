#!/usr/bin/env node
// llama_cpp_bench.mjs — llama.cpp's prefill and decode speed on a GGUF file, measured the way
// `edgellm bench` measures ours, so that tools/vs_llama_cpp.py can run the two side by side.
//
// llama.cpp comes from npm: node-llama-cpp's prebuilt CPU binaries, which pick a ggml CPU
// backend for this CPU at run time (on AVX-512 with VNNI, "icelake" or newer). `make
// bench-llama` installs the pinned version into $(BUILD)/llama-cpp and passes that directory
// as --lib. Nothing of it is linked into edgellm: this is the competitor, measured.
//
//   node tools/llama_cpp_bench.mjs --lib DIR -m FILE.gguf [-t 2] [-p 64] [-n 32] [-r 1]
//
// Each repeat uses a fresh context, as `edgellm bench` rewinds to an empty one:
//   pp: p prompt tokens evaluated in one batch;
//   tg: n single-token steps, each a greedy sample (llama.cpp's sampler) and the next decode,
//       timed from the first generated token.
// Prints one line of JSON: {"llama_cpp", "backend", "threads", "pp_tps": [...], "tg_tps": [...]}.
import {readFileSync} from "node:fs";
import {join} from "node:path";
import {pathToFileURL} from "node:url";
import {parseArgs} from "node:util";

const {values: opt} = parseArgs({
    options: {
        lib: {type: "string"},
        model: {type: "string", short: "m"},
        threads: {type: "string", short: "t", default: "2"},
        prompt: {type: "string", short: "p", default: "64"},
        gen: {type: "string", short: "n", default: "32"},
        repeats: {type: "string", short: "r", default: "1"},
    },
});
if (!opt.lib || !opt.model) {
    console.error("usage: llama_cpp_bench.mjs --lib DIR -m FILE.gguf [-t 2] [-p 64] [-n 32] [-r 1]");
    process.exit(2);
}
const [threads, nPrompt, nGen, repeats] = [opt.threads, opt.prompt, opt.gen, opt.repeats].map(Number);

const {getLlama} = await import(pathToFileURL(join(opt.lib, "node_modules/node-llama-cpp/dist/index.js")).href);
const llama = await getLlama({gpu: false, maxThreads: 0, logLevel: "warn"});
const model = await llama.loadModel({modelPath: opt.model, gpuLayers: 0});

// The same kind of prompt as edgellm bench's: token ids from a fixed seed, none special.
const nVocab = model.fileInfo.metadata.tokenizer.ggml.tokens.length;
let seed = 12345;
const nextId = () => 100 + ((seed = (seed * 1103515245 + 12345) % 2147483648) % (nVocab - 100));
const prompt = Array.from({length: nPrompt}, nextId);

const pp = [], tg = [];
for (let r = 0; r < repeats; r++) {
    const context = await model.createContext({contextSize: nPrompt + nGen + 16, batchSize: nPrompt, threads});
    const sequence = context.getSequence();
    const t0 = performance.now();
    await sequence.evaluateWithoutGeneratingNewTokens(prompt);
    pp.push(nPrompt / ((performance.now() - t0) / 1000));
    await sequence.clearHistory();
    let steps = -1, t1 = 0;
    for await (const _ of sequence.evaluate([prompt[0]], {temperature: 0})) {
        if (steps === -1)
            t1 = performance.now();
        if (++steps === nGen)
            break;
    }
    tg.push(nGen / ((performance.now() - t1) / 1000));
    await context.dispose();
}

// Which of the prebuilt CPU backends ggml loaded for this CPU.
const backend = (readFileSync("/proc/self/maps", "utf8").match(/libggml-cpu-([\w-]+)\.so/) || [, "unknown"])[1];
console.log(JSON.stringify({llama_cpp: llama.llamaCppRelease.release, backend, threads, pp_tps: pp, tg_tps: tg}));
await model.dispose();
