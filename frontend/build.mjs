// Bundles the case viewer (Cornerstone3D) into ../static/viewer/ so the site needs no Node at run time.
//   npm ci && npm run build
// Outputs: viewer.js (the page's module), voxelWorker.js (its voxel reader) and VERSIONS.txt (package versions and licences of what was
// bundled). The viewer reads the stored int16 voxels of a series directly (studies/dicomweb /voxels), so no
// DICOM decoder, worker or codec is bundled.
import { build } from "esbuild";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
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
// The worker that reads the voxels off the page's thread (a classic script: no imports).
await build({ ...common, format: "iife", entryPoints: { voxelWorker: join(here, "src", "voxelWorker.js") }, outdir: out });
// Files of the earlier DICOM-decoding bundle that nothing loads any more.
for (const old of ["decodeImageFrameWorker.js", "decodeImageFrameWorker.js.LEGAL.txt", "charlswasm_decode.wasm",
  "libjpegturbowasm_decode.wasm", "jpegxlwasm_decode.wasm", "openjpegwasm_decode.wasm", "openjphjs.wasm"]) {
  rmSync(join(out, old), { force: true });
}

const lines = ["Bundled by frontend/build.mjs from frontend/package-lock.json; package, version, licence:"];
const pkgDir = (name) => join(here, "node_modules", name);
for (const name of ["@cornerstonejs/core", "@cornerstonejs/tools", "events"]) {
  const pkg = JSON.parse(readFileSync(join(pkgDir(name), "package.json"), "utf8"));
  lines.push(`${name} ${pkg.version} ${pkg.license}`);
}
lines.push("Licence texts of bundled code: viewer.js.LEGAL.txt.");
writeFileSync(join(out, "VERSIONS.txt"), lines.join("\n") + "\n");
console.log(`built into ${out}`);
