// Copies the pinned packages of package-lock.json into this folder, with their
// licences, as the server embeds them (examples/src/app.rs). Run after `npm ci`:
//
//   npm ci && npm run vendor
//
// Source-map comments are dropped: the maps are not served.
import { copyFileSync, readFileSync, writeFileSync } from "node:fs";

const files = [
  ["marked/lib/marked.umd.js", "marked.umd.js"],
  ["marked/LICENSE", "LICENSE.marked.txt"],
  ["dompurify/dist/purify.min.js", "purify.min.js"],
  ["dompurify/LICENSE", "LICENSE.dompurify.txt"],
  ["@highlightjs/cdn-assets/highlight.min.js", "highlight.min.js"],
  ["@highlightjs/cdn-assets/styles/github.min.css", "highlight-github.min.css"],
  ["@highlightjs/cdn-assets/styles/github-dark.min.css", "highlight-github-dark.min.css"],
  ["@highlightjs/cdn-assets/LICENSE", "LICENSE.highlightjs.txt"],
];
for (const [from, to] of files) {
  const source = `node_modules/${from}`;
  if (/\.(js|css)$/.test(to)) {
    const text = readFileSync(source, "utf8").replace(/^\/[/*][#@] sourceMappingURL=.*$/gm, "");
    writeFileSync(to, text);
  } else {
    copyFileSync(source, to);
  }
  console.log(`${source} -> ${to}`);
}
