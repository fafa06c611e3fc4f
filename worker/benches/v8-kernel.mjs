// Runs one benchmark kernel in Node's V8 with Node's WASI, for the
// sandbox benchmark's V8 column (worker/benches/sandbox.rs):
//
//   node --expose-gc v8-kernel.mjs MODULE.wasm INPUT OUTPUT REPETITIONS
//
// The module is compiled once. A first run writes the kernel's stdout to
// OUTPUT (the benchmark checks it) and warms V8's tiers up; then each of
// REPETITIONS runs (a fresh instance and WASI context, stdin from INPUT,
// stdout to /dev/null) is timed, and the median, in seconds, is printed
// alone on stdout.

import { readFileSync, openSync, closeSync } from "node:fs";
import { WASI } from "node:wasi";
import { performance } from "node:perf_hooks";

const [modulePath, inputPath, outputPath, repetitions] = process.argv.slice(2);
const module = await WebAssembly.compile(readFileSync(modulePath));

function runOnce(stdoutPath) {
  const stdin = openSync(inputPath, "r");
  const stdout = openSync(stdoutPath, "w");
  try {
    const wasi = new WASI({
      version: "preview1",
      args: ["task"],
      env: {},
      stdin,
      stdout,
      returnOnExit: true,
    });
    // Imported directly, Node 20's WASI functions are V8 "fast API" calls,
    // inside which an allocation of uvwasi's can start a garbage
    // collection that frees this very WASI object mid-call (SIGABRT in
    // uv_mutex_destroy, no message: seen on the SETI kernel, whose 73 MiB
    // memory makes a collection due there). Plain JS wrappers take the
    // ordinary path, where a collection is safe.
    const imports = wasi.getImportObject();
    for (const [namespace, functions] of Object.entries(imports)) {
      imports[namespace] = Object.fromEntries(
        Object.entries(functions).map(([name, f]) => [name, (...args) => f(...args)]),
      );
    }
    const started = performance.now();
    const instance = new WebAssembly.Instance(module, imports);
    const code = wasi.start(instance);
    const seconds = (performance.now() - started) / 1000;
    if (code !== undefined && code !== 0) {
      throw new Error(`${modulePath} exited with status ${code}`);
    }
    return seconds;
  } finally {
    closeSync(stdin);
    closeSync(stdout);
    // Each run's instance holds its own linear memory, which V8 frees
    // lazily: collected between runs, so no run pays for an earlier one's.
    globalThis.gc?.();
  }
}

runOnce(outputPath);
const times = [];
for (let i = 0; i < Number(repetitions); i++) {
  times.push(runOnce("/dev/null"));
}
times.sort((a, b) => a - b);
console.log(times[Math.floor(times.length / 2)]);
