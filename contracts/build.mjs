// Compiles the Solidity sources with solc-js and writes the artifacts that Python loads.
//
//   node contracts/build.mjs           write artifacts
//   node contracts/build.mjs --check   compile in memory, exit 1 if a committed artifact is stale
//
// contracts/*.sol            -> golem_jupyter/chain/artifacts/<Contract>.json (shipped in the wheel)
// contracts/test/*.sol       -> tests/artifacts/<Contract>.json                (test doubles only)
// contracts/interfaces/*.sol -> compiled with the rest, no artifact of their own: the contracts
//                               that implement them carry their ABI and list them in sources_sha256
//
// Artifacts are committed so that users need no Node to run the project.

import { createHash } from "node:crypto";
import { existsSync, readFileSync, readdirSync, writeFileSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..");
const require = createRequire(import.meta.url);
const solc = require("solc");

const SETTINGS = {
  optimizer: { enabled: true, runs: 10000 },
  evmVersion: "prague",
  viaIR: true,
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object", "metadata"] } },
};

const OUTPUTS = [
  { dir: here, out: join(root, "golem_jupyter", "chain", "artifacts") },
  { dir: join(here, "test"), out: join(root, "tests", "artifacts") },
];
// Compiled (so that an interface no contract imports yet still has to compile) but not written out.
const SOURCE_ONLY = [join(here, "interfaces")];

function solidityFiles(dir) {
  return readdirSync(dir).filter((f) => f.endsWith(".sol")).sort().map((f) => join(dir, f));
}

// Source units are named by their path relative to the repo root, e.g. "contracts/GolemEscrow.sol".
function findImport(path) {
  const candidates = [join(here, "node_modules", path), join(root, path)];
  for (const file of candidates) {
    if (existsSync(file)) return { contents: readFileSync(file, "utf8") };
  }
  return { error: `not found: ${path} (run npm install in contracts/)` };
}

function sha256(text) {
  return createHash("sha256").update(text, "utf8").digest("hex");
}

function compile() {
  const sources = {};
  for (const dir of [...OUTPUTS.map((o) => o.dir), ...SOURCE_ONLY]) {
    for (const file of solidityFiles(dir)) {
      sources[relative(root, file)] = { content: readFileSync(file, "utf8") };
    }
  }
  const input = { language: "Solidity", sources, settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImport }));
  const errors = (output.errors || []).filter((e) => e.severity === "error");
  // Warnings about OpenZeppelin's own code (e.g. its note on transient storage) are not ours.
  for (const e of output.errors || []) {
    const file = e.sourceLocation?.file || "";
    if (e.severity === "error" || !file.startsWith("@openzeppelin/")) console.error(e.formattedMessage);
  }
  if (errors.length) process.exit(2);

  const artifacts = new Map();
  for (const { dir, out } of OUTPUTS) {
    for (const file of solidityFiles(dir)) {
      const sourceName = relative(root, file);
      for (const [name, contract] of Object.entries(output.contracts[sourceName] || {})) {
        const metadata = JSON.parse(contract.metadata);
        const used = {};
        for (const path of Object.keys(metadata.sources).sort()) {
          used[path] = sha256(path in sources ? sources[path].content : findImport(path).contents);
        }
        const artifact = {
          contractName: name,
          sourceName,
          compiler: `solc-js ${solc.version()}`,
          settings: { optimizer: SETTINGS.optimizer, evmVersion: SETTINGS.evmVersion },
          sources_sha256: used,
          abi: contract.abi,
          bytecode: "0x" + contract.evm.bytecode.object,
          deployedBytecode: "0x" + contract.evm.deployedBytecode.object,
        };
        artifacts.set(join(out, `${name}.json`), JSON.stringify(artifact, null, 2) + "\n");
      }
    }
  }
  return artifacts;
}

const check = process.argv.includes("--check");
const artifacts = compile();
let stale = 0;
for (const [path, text] of artifacts) {
  const current = existsSync(path) ? readFileSync(path, "utf8") : null;
  if (current === text) continue;
  if (check) {
    console.error(`stale: ${relative(root, path)} (run: node contracts/build.mjs)`);
    stale += 1;
  } else {
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, text);
    console.log(`wrote ${relative(root, path)}`);
  }
}
if (check && stale) process.exit(1);
if (check) console.log(`${artifacts.size} artifacts up to date`);
