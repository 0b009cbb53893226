// Validate one glTF/GLB file with the Khronos glTF validator and print the report as JSON.
// Usage: NODE_PATH=.ci/node/node_modules node gltf_validate.mjs mesh.glb
// Exit 0 when the report has no errors, 1 when it has, 2 when validation could not run.
// ESM `import` ignores NODE_PATH, so the package is loaded through require().
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);

const path = process.argv[2];
if (!path) {
  console.error("usage: node gltf_validate.mjs <file.glb>");
  process.exit(2);
}

let validator;
try {
  validator = require("gltf-validator");
} catch (err) {
  console.error(`cannot load gltf-validator (set NODE_PATH to its node_modules): ${err.message}`);
  process.exit(2);
}

try {
  const report = await validator.validateBytes(new Uint8Array(readFileSync(path)), {
    uri: path,
    maxIssues: 0, // report every issue
    writeTimestamp: false,
  });
  console.log(JSON.stringify(report, null, 2));
  process.exit(report.issues.numErrors > 0 ? 1 : 0);
} catch (err) {
  console.error(`validation could not run: ${err}`);
  process.exit(2);
}
