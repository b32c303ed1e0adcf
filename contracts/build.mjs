#!/usr/bin/env node
// Compile contracts/src/*.sol with the pinned solc-js from .tools/ and write
// one artifact per deployable contract to contracts/artifacts/<Name>.json.
//
//   node contracts/build.mjs           # (re)write artifacts
//   node contracts/build.mjs --check   # verify committed artifacts are current
//
// solc-js is installed by scripts/install-tools.sh. Compiler settings are pinned
// below and the metadata hash is disabled, so the output does not depend on the
// checkout path.
import { createRequire } from "node:module";
import { existsSync, mkdirSync, readdirSync, readFileSync, unlinkSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const SOLC_VERSION = "0.8.37";

const contractsDir = dirname(fileURLToPath(import.meta.url));
const repoRoot = dirname(contractsDir);
const srcDir = join(contractsDir, "src");
const artifactsDir = join(contractsDir, "artifacts");
const toolsDir = join(repoRoot, ".tools");

function fail(msg) {
  console.error(`contracts: ${msg}`);
  process.exit(1);
}

function loadSolc() {
  const require = createRequire(join(toolsDir, "package.json"));
  let solc;
  try {
    solc = require("solc");
  } catch (err) {
    fail(`cannot load solc from ${relative(process.cwd(), toolsDir) || "."}/node_modules (${err.code ?? err.message}); ` +
      "run scripts/install-tools.sh first");
  }
  const long = solc.version();
  if (!long.startsWith(`${SOLC_VERSION}+`)) {
    fail(`expected solc ${SOLC_VERSION}, found ${long}; run scripts/install-tools.sh`);
  }
  return { solc, long };
}

function compile(solc) {
  const files = readdirSync(srcDir).filter((f) => f.endsWith(".sol")).sort();
  if (files.length === 0) fail(`no .sol files in ${srcDir}`);

  const sources = {};
  for (const f of files) {
    sources[`src/${f}`] = { content: readFileSync(join(srcDir, f), "utf8") };
  }
  const input = {
    language: "Solidity",
    sources,
    settings: {
      optimizer: { enabled: true, runs: 200 },
      evmVersion: "cancun",
      metadata: { bytecodeHash: "none", appendCBOR: false },
      outputSelection: {
        "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] },
      },
    },
  };

  // No import callback: contracts must be self-contained.
  const output = JSON.parse(solc.compile(JSON.stringify(input)));

  const diagnostics = output.errors ?? [];
  const serious = diagnostics.filter((e) => e.severity !== "info");
  for (const e of diagnostics) {
    console.error(e.formattedMessage ?? `${e.severity}: ${e.message}`);
  }
  if (serious.length > 0) {
    fail(`compilation failed with ${serious.length} error(s)/warning(s) (warnings are fatal)`);
  }

  const contracts = new Map();
  for (const [source, byName] of Object.entries(output.contracts ?? {})) {
    for (const [name, c] of Object.entries(byName)) {
      const bytecode = c.evm?.bytecode?.object ?? "";
      const deployed = c.evm?.deployedBytecode?.object ?? "";
      if (bytecode === "") continue; // interfaces and abstract contracts
      if (bytecode.includes("__$") || deployed.includes("__$")) {
        fail(`${source}:${name} needs library linking, which is not supported`);
      }
      if (contracts.has(name)) {
        fail(`contract name ${name} is defined more than once (${contracts.get(name).source}, ${source})`);
      }
      contracts.set(name, { source, abi: c.abi, bytecode, deployed });
    }
  }
  if (contracts.size === 0) fail("compiler produced no deployable contracts");
  return contracts;
}

function render(name, c, compilerLong) {
  const artifact = {
    contractName: name,
    compiler: `solc-${compilerLong}`,
    abi: c.abi,
    bytecode: `0x${c.bytecode}`,
    deployedBytecode: `0x${c.deployed}`,
  };
  return `${JSON.stringify(artifact, null, 2)}\n`;
}

function existingArtifacts() {
  if (!existsSync(artifactsDir)) return [];
  return readdirSync(artifactsDir).filter((f) => f.endsWith(".json")).sort();
}

function main() {
  const args = process.argv.slice(2);
  const check = args.includes("--check");
  const unknown = args.filter((a) => a !== "--check");
  if (unknown.length > 0) fail(`unknown argument(s): ${unknown.join(" ")} (usage: build.mjs [--check])`);

  const { solc, long } = loadSolc();
  const contracts = compile(solc);
  const wanted = new Map();
  for (const name of [...contracts.keys()].sort()) {
    wanted.set(`${name}.json`, render(name, contracts.get(name), long));
  }
  const extra = existingArtifacts().filter((f) => !wanted.has(f));

  if (check) {
    const problems = [];
    for (const [file, text] of wanted) {
      const path = join(artifactsDir, file);
      if (!existsSync(path)) problems.push(`missing: contracts/artifacts/${file}`);
      else if (readFileSync(path, "utf8") !== text) problems.push(`stale:   contracts/artifacts/${file}`);
    }
    for (const file of extra) problems.push(`orphan:  contracts/artifacts/${file} (no matching contract)`);
    if (problems.length > 0) {
      console.error("contracts: artifacts are out of date:");
      for (const p of problems) console.error(`  ${p}`);
      console.error("contracts: run `node contracts/build.mjs` and commit the result");
      process.exit(1);
    }
    console.log("contracts: artifacts up to date");
    return;
  }

  mkdirSync(artifactsDir, { recursive: true });
  for (const [file, text] of wanted) {
    const path = join(artifactsDir, file);
    const changed = !existsSync(path) || readFileSync(path, "utf8") !== text;
    if (changed) writeFileSync(path, text);
    console.log(`contracts: ${changed ? "wrote    " : "unchanged"} contracts/artifacts/${file}`);
  }
  for (const file of extra) {
    unlinkSync(join(artifactsDir, file));
    console.log(`contracts: removed   contracts/artifacts/${file}`);
  }
  console.log(`contracts: compiled ${wanted.size} contract(s) with solc ${long}`);
}

main();
