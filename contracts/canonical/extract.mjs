#!/usr/bin/env node
// Writes the canonical bytecode of contracts that public chains have at fixed addresses, for
// Coffer's local chains, from a registry package that ships it — never compiled look-alikes.
//
//   node contracts/canonical/extract.mjs
//
// Multicall3 (0xcA11bde05977b3631167028862bE2a173976CA11): the deployed bytecode in
// @eth-optimism/contracts-bedrock (MIT), src/libraries/Preinstalls.sol, `MultiCall3Code`.
// Coffer checks its keccak-256 against Multicall3's code hash on Ethereum mainnet before it
// installs it (coffer_evm::testnet::install_multicall3), so a wrong artifact never loads.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const PACKAGE = "@eth-optimism/contracts-bedrock@0.17.3";
const FILE = "package/src/libraries/Preinstalls.sol";
const here = dirname(fileURLToPath(import.meta.url));

const work = mkdtempSync(join(tmpdir(), "coffer-canonical-"));
try {
  const tarball = execFileSync("npm", ["pack", PACKAGE, "--silent"], { cwd: work, encoding: "utf8" }).trim();
  execFileSync("tar", ["xzf", tarball, FILE], { cwd: work });
  const source = readFileSync(join(work, FILE), "utf8");
  const found = /MultiCall3Code\s*=\s*hex"([0-9a-fA-F]+)"/.exec(source);
  if (!found) throw new Error(`no MultiCall3Code in ${PACKAGE} ${FILE}`);
  const artifact = {
    contractName: "Multicall3",
    address: "0xcA11bde05977b3631167028862bE2a173976CA11",
    source: `${PACKAGE} ${FILE.replace("package/", "")} (MultiCall3Code)`,
    deployedBytecode: `0x${found[1].toLowerCase()}`,
  };
  writeFileSync(join(here, "Multicall3.json"), `${JSON.stringify(artifact, null, 2)}\n`);
  console.log(`canonical: Multicall3 (${found[1].length / 2} bytes) from ${PACKAGE}`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
