#!/usr/bin/env node
// Compile the Solidity sources in contracts/ with the pinned npm `solc` and write
// ABI + bytecode artifacts to flashmm/contracts/<Name>.json.
//   node contracts/compile.js          write the artifacts
//   node contracts/compile.js --check  exit 1 if the committed artifacts differ
'use strict';
const fs = require('fs');
const path = require('path');
const solc = require('solc');

const ROOT = path.resolve(__dirname, '..');
const SRC_DIR = __dirname;
const OUT_DIR = path.join(ROOT, 'flashmm', 'contracts');
const SOURCES = ['FlashBook.sol', 'TestToken.sol'];
const SETTINGS = {
  optimizer: { enabled: true, runs: 1000 },
  viaIR: true,
  evmVersion: 'cancun',
  outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
};

function compile() {
  const sources = {};
  for (const name of SOURCES) {
    sources[name] = { content: fs.readFileSync(path.join(SRC_DIR, name), 'utf8') };
  }
  const input = { language: 'Solidity', sources, settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input)));
  const errors = (output.errors || []).filter((e) => e.severity === 'error');
  for (const e of output.errors || []) process.stderr.write(e.formattedMessage + '\n');
  if (errors.length) process.exit(2);
  const artifacts = {};
  for (const name of SOURCES) {
    for (const [contract, out] of Object.entries(output.contracts[name])) {
      artifacts[contract] = JSON.stringify(
        {
          contractName: contract,
          source: `contracts/${name}`,
          compiler: `solc-js ${solc.version()}`,
          settings: { optimizer: SETTINGS.optimizer, viaIR: SETTINGS.viaIR, evmVersion: SETTINGS.evmVersion },
          abi: out.abi,
          bytecode: '0x' + out.evm.bytecode.object,
          deployedBytecode: '0x' + out.evm.deployedBytecode.object,
        },
        null,
        1,
      ) + '\n';
    }
  }
  return artifacts;
}

function main() {
  const check = process.argv.includes('--check');
  const artifacts = compile();
  let stale = 0;
  for (const [contract, text] of Object.entries(artifacts)) {
    const file = path.join(OUT_DIR, `${contract}.json`);
    if (check) {
      const current = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
      if (current !== text) {
        process.stderr.write(`stale artifact: flashmm/contracts/${contract}.json\n`);
        stale += 1;
      }
    } else {
      fs.mkdirSync(OUT_DIR, { recursive: true });
      fs.writeFileSync(file, text);
      process.stdout.write(`wrote flashmm/contracts/${contract}.json\n`);
    }
  }
  if (check) {
    if (stale) {
      process.stderr.write('run `node contracts/compile.js` and commit the artifacts\n');
      process.exit(1);
    }
    process.stdout.write('artifacts up to date\n');
  }
}

main();
