// Bundles the case viewer (Cornerstone3D) into ../static/viewer/ so the site needs no Node at run time.
//   npm ci && npm run build
// Outputs: viewer.js (the page's module), decodeImageFrameWorker.js (the DICOM decoding web worker that
// @cornerstonejs/dicom-image-loader starts), the codecs' .wasm files (found through init({wasmBasePath})) and
// VERSIONS.txt (package versions and licences of what was bundled).
import { build } from "esbuild";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "static", "viewer");
mkdirSync(out, { recursive: true });

// Node built-ins that some dependencies import for their Node code paths, never taken in a browser: each
// becomes an empty module (a stub, not an external, so the browser never tries to load it). `events` is
// the npm polyfill (a real dependency), not a stub.
const NODE_BUILTINS = ["fs", "path", "crypto", "os", "url", "util", "stream", "zlib", "http", "https",
  "child_process", "worker_threads", "module", "buffer", "perf_hooks"];
const stubNodeBuiltins = {
  name: "stub-node-builtins",
  setup(b) {
    const filter = new RegExp(`^(node:)?(${NODE_BUILTINS.join("|")})(/.*)?$`);
    b.onResolve({ filter }, (args) => ({ path: args.path, namespace: "node-stub" }));
    b.onLoad({ filter: /.*/, namespace: "node-stub" }, () => ({ contents: "export default {};", loader: "js" }));
  },
};

const common = {
  bundle: true,
  format: "esm",
  minify: true,
  sourcemap: false,
  target: ["chrome110", "firefox115", "safari16"],
  platform: "browser",
  legalComments: "linked",
  define: { "process.env.NODE_ENV": '"production"', global: "globalThis" },
  plugins: [stubNodeBuiltins],
  logLevel: "warning",
};

await build({ ...common, entryPoints: { viewer: join(here, "src", "viewer.js") }, outdir: out });
await build({
  ...common,
  entryPoints: { decodeImageFrameWorker: join(here, "node_modules", "@cornerstonejs", "dicom-image-loader", "dist",
    "esm", "decodeImageFrameWorker.js") },
  outdir: out,
});

const wasm = {
  "@cornerstonejs/codec-charls": "dist/charlswasm_decode.wasm",
  "@cornerstonejs/codec-libjpeg-turbo-8bit": "dist/libjpegturbowasm_decode.wasm",
  "@cornerstonejs/codec-libjxl": "dist/jpegxlwasm_decode.wasm",
  "@cornerstonejs/codec-openjpeg": "dist/openjpegwasm_decode.wasm",
  "@cornerstonejs/codec-openjph": "dist/openjphjs.wasm",
};
const lines = ["Bundled by frontend/build.mjs from frontend/package-lock.json; package, version, licence:"];
const pkgDir = (name) => join(here, "node_modules", name);
for (const name of ["@cornerstonejs/core", "@cornerstonejs/tools", "@cornerstonejs/dicom-image-loader", "events",
  ...Object.keys(wasm)]) {
  const pkg = JSON.parse(readFileSync(join(pkgDir(name), "package.json"), "utf8"));
  lines.push(`${name} ${pkg.version} ${pkg.license}`);
}
for (const [name, file] of Object.entries(wasm)) {
  const src = join(pkgDir(name), file);
  copyFileSync(src, join(out, file.split("/").pop()));
}
lines.push("Licence texts of bundled code: viewer.js.LEGAL.txt and decodeImageFrameWorker.js.LEGAL.txt.");
writeFileSync(join(out, "VERSIONS.txt"), lines.join("\n") + "\n");
console.log(`built into ${out}`);
