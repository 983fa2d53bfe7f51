// The package's size as an app ships it: dist/ bundled by esbuild, minified, gzipped
// (level 9). Prints one line per entry and fails when the whole client is over budget.
//   npm run build && npm run -s size     (size only measures dist/: build it first)
import { gzipSync } from "node:zlib";

import { build } from "esbuild";

const BUDGET = 10 * 1024;
const entries = {
  "everything (import * from the package)": 'export * from "./dist/index.js";',
  "DeltacastClient alone": 'export { DeltacastClient } from "./dist/index.js";',
  "HttpPublisher alone": 'export { HttpPublisher } from "./dist/index.js";',
};
let whole = 0;
for (const [name, contents] of Object.entries(entries)) {
  const result = await build({
    stdin: { contents, resolveDir: ".", loader: "js" },
    bundle: true,
    minify: true,
    format: "esm",
    target: "es2022",
    write: false,
  });
  const code = result.outputFiles[0].contents;
  const gzipped = gzipSync(code, { level: 9 }).length;
  whole ||= gzipped;
  console.log(`${name}: ${code.length} bytes minified, ${gzipped} bytes gzipped`);
}
if (whole > BUDGET) {
  console.error(`the client is ${whole} bytes minified and gzipped; the budget is ${BUDGET}`);
  process.exit(1);
}
