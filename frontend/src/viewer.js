// The case viewer: the exam's stored CT in three orthogonal views, with the body segments as a coloured
// labelmap that an annotator can correct with a brush. The voxels come from the site's DICOMweb endpoint
// (its /voxels extension: the stored int16 values in a few parallel byte ranges, drawn slab by slab as they
// arrive, nothing to decode); the volume is one typed array. Configured by data- attributes of #viewer and
// the JSON in #viewer-geometry and #viewer-segments (no inline script: the site's Content-Security-Policy
// forbids it). When everything is drawn it sets #viewer[data-ready="1"], window.bmdViewer.loadSeconds and
// the timing marks in window.bmdViewer.marks (seconds from the start of the module).
import {
  Enums as CoreEnums, RenderingEngine, cache, eventTarget, init as coreInit, metaData, setVolumesForViewports,
  utilities, volumeLoader,
} from "@cornerstonejs/core";
import {
  BrushTool, Enums as ToolEnums, PanTool, StackScrollTool, ToolGroupManager, WindowLevelTool, ZoomTool, addTool,
  init as toolsInit, segmentation, utilities as toolUtilities,
} from "@cornerstonejs/tools";

const PRESETS = { bone: [400, 1800], soft: [40, 400], lung: [-600, 1500] }; // [centre, width] in HU
const VIEWPORTS = [
  ["axial", CoreEnums.OrientationAxis.AXIAL],
  ["sagittal", CoreEnums.OrientationAxis.SAGITTAL],
  ["coronal", CoreEnums.OrientationAxis.CORONAL],
];
// Parallel byte-range requests for the voxels (the most a browser opens to one host; measured best of 1, 2,
// 4 and 6 with benchmarks/bench_case_viewer.py); the labelmap request waits for the first free one.
const VOXEL_REQUESTS = 6;
const state = { ready: false, errors: [], loadSeconds: null, preset: "bone", marks: {} };
window.bmdViewer = state;
let originalLabels = null; // the segment map as loaded (stored slice order); kept off `state`, which tests read

function fail(message) {
  state.errors.push(String(message));
  const box = document.getElementById("viewer-status");
  if (box) box.textContent = `Viewer error: ${message}`;
}

function voi(name) {
  const [centre, width] = PRESETS[name];
  return { lower: centre - width / 2, upper: centre + width / 2 };
}

function jsonOf(id) {
  const element = document.getElementById(id);
  return element ? JSON.parse(element.textContent || "null") : null;
}

// The volume's layout from the stored series' LPS affine (columns: the steps of the column, row and slice
// index): Cornerstone wants the slice axis along row x column, so a series stored feet-first along that
// normal is filled in reverse. volumeSlice(k) is where stored slice k goes.
function layoutOf(geometry) {
  const [nz, ny, nx] = geometry.shape;
  const a = geometry.affine;
  const column = (j) => [a[0][j], a[1][j], a[2][j]];
  const norm = (v) => Math.hypot(...v);
  const [ax, ay, az] = [column(0), column(1), column(2)];
  const [dx, dy, dz] = [norm(ax), norm(ay), norm(az)];
  const row = ax.map((v) => v / dx);
  const col = ay.map((v) => v / dy);
  const normal = [row[1] * col[2] - row[2] * col[1], row[2] * col[0] - row[0] * col[2], row[0] * col[1] - row[1] * col[0]];
  const reversed = az[0] * normal[0] + az[1] * normal[1] + az[2] * normal[2] < 0;
  const t = column(3);
  const origin = reversed ? t.map((v, i) => v + (nz - 1) * az[i]) : t;
  return { nx, ny, nz, plane: nx * ny, reversed, origin, spacing: [dx, dy, dz], direction: [...row, ...col, ...normal],
    volumeSlice: (k) => (reversed ? nz - 1 - k : k) };
}

// Slabs of whole slices, the middle one first: the axial view opens on the middle slice.
function slabsOf(nz, n) {
  const size = Math.ceil(nz / n);
  const slabs = [];
  for (let a = 0; a < nz; a += size) slabs.push([a, Math.min(a + size, nz)]);
  const middle = Math.floor(nz / 2);
  slabs.sort((p, q) => (p[0] <= middle && middle < p[1] ? -1 : q[0] <= middle && middle < q[1] ? 1 : 0));
  return slabs;
}

// The slabs' answers, read by a worker (voxelWorker.js) so that the transfer goes on while this thread sets
// up WebGL: per slab a promise of { slab, slope, intercept, body: promise of its ArrayBuffer }.
function fetchSlabs(workerUrl, url, layout, slabs) {
  const deferred = () => { let resolve, reject; const promise = new Promise((s, j) => { resolve = s; reject = j; });
    return { promise, resolve, reject }; };
  const heads = slabs.map(deferred);
  const bodies = slabs.map(deferred);
  const worker = new Worker(workerUrl);
  let left = slabs.length;
  const expected = [layout.nz, layout.ny, layout.nx].join();
  worker.onmessage = ({ data }) => {
    const { n } = data;
    if (data.type === "headers") {
      if (data.shape !== expected) {
        heads[n].reject(new Error(`${url}: the series has shape ${data.shape}, the page expected ${expected}`));
        return;
      }
      heads[n].resolve({ slab: slabs[n], slope: data.slope, intercept: data.intercept, body: bodies[n].promise });
    } else {
      if (data.type === "body") bodies[n].resolve(data.buffer);
      else { const error = new Error(data.message); heads[n].reject(error); bodies[n].reject(error); }
      if (--left === 0) worker.terminate();
    }
  };
  worker.onerror = (event) => {
    const error = new Error(`voxel reader: ${event.message || "failed to start"}`);
    heads.forEach((d) => d.reject(error));
    bodies.forEach((d) => d.reject(error));
  };
  worker.postMessage({ url, slabs, bytesPerSlice: layout.plane * 2 });
  bodies.forEach((d) => d.promise.catch(() => {})); // failures are reported where awaited
  return heads.map((d) => d.promise);
}

// Copies a slab's stored values (int16, stored slice order) into the volume's scalars (HU).
function placeSlab(values, scalars, layout, [a, b], slope, intercept) {
  const { plane } = layout;
  if (values.length !== (b - a) * plane) throw new Error(`slices ${a}-${b - 1}: ${values.length} values, expected ${(b - a) * plane}`);
  const identity = slope === 1 && intercept === 0;
  for (let k = a; k < b; k++) {
    const source = values.subarray((k - a) * plane, (k - a + 1) * plane);
    const at = layout.volumeSlice(k) * plane;
    if (identity) scalars.set(source, at);
    else for (let i = 0; i < plane; i++) scalars[at + i] = source[i] * slope + intercept;
  }
}

function rendered(element) {
  // Resolves after the viewport drew (or after 5 s, so a missed event never hangs the page).
  return new Promise((resolve) => {
    const done = () => { element.removeEventListener(CoreEnums.Events.IMAGE_RENDERED, done); resolve(); };
    element.addEventListener(CoreEnums.Events.IMAGE_RENDERED, done);
    setTimeout(done, 5000);
  });
}

async function main() {
  const root = document.getElementById("viewer");
  if (!root) return;
  const started = performance.now();
  const mark = (name) => { state.marks[name] = (performance.now() - started) / 1000; };
  const cfg = root.dataset;
  const segments = jsonOf("viewer-segments") || [];
  const geometry = jsonOf("viewer-geometry");
  if (!geometry || !geometry.affine) throw new Error("the stored series has no geometry");
  const layout = layoutOf(geometry);
  const voxelsUrl = `${window.location.origin}${geometry.voxels_url}`;

  // Every request starts now: the voxels in parallel byte ranges, and the segment labels.
  // ?voxel_requests=N in the page's URL overrides the number of parallel requests (for measuring).
  const requests = Number(new URLSearchParams(window.location.search).get("voxel_requests")) || VOXEL_REQUESTS;
  const slabs = slabsOf(layout.nz, Math.min(requests, layout.nz));
  const pending = fetchSlabs(cfg.voxelWorker, voxelsUrl, layout, slabs);
  const segmentsAnswer = cfg.segmentsUrl ? fetch(cfg.segmentsUrl, { credentials: "same-origin" }) : null;
  pending.forEach((p) => p.catch(() => {})); // failures are reported where awaited

  // Cornerstone's default rendering mode (a pool of WebGL contexts); ?rendering_mode=tiled (one context for
  // the three views) is there for measuring: interleaved loads on a software renderer found the default no
  // slower (benchmarks/bench_case_viewer.py --compare-tiled).
  const rendering = new URLSearchParams(window.location.search).get("rendering_mode");
  await coreInit(rendering ? { rendering: { renderingEngineMode: rendering } } : undefined);
  toolsInit();
  mark("init");

  // The volume is built from one typed array: each slice's image is a view into it (no per-frame images
  // to decode). Its type follows the first answer's rescale: int16 HU as stored, float when the stored
  // values need scaling.
  // A series stored as int16 is served as it is (HU = stored value), so the volume is built without waiting
  // for the first answer; otherwise that answer's rescale decides.
  const storedInt16 = geometry.dtype === "int16";
  const first = storedInt16 ? null : await pending[0];
  mark("typeKnown");
  const identity = storedInt16 || (first.slope === 1 && first.intercept === 0);
  const scalars = identity ? new Int16Array(layout.plane * layout.nz) : new Float32Array(layout.plane * layout.nz);
  const volumeId = `bmdLocalVolume:${cfg.series}`;
  const sliceIds = Array.from({ length: layout.nz }, (_, z) => `${volumeId}_slice_${z}`);
  const sliceOf = new Map(sliceIds.map((id, z) => [id, z]));
  // Each slice's plane for the tools (the local images would all get the volume's origin otherwise).
  metaData.addProvider((type, imageId) => {
    const z = sliceOf.get(imageId);
    if (z === undefined) return undefined;
    if (type === "imagePlaneModule") {
      const [dx, dy, dz] = layout.spacing;
      const d = layout.direction;
      return { frameOfReferenceUID: cfg.series, rows: layout.ny, columns: layout.nx,
        imageOrientationPatient: d.slice(0, 6), rowCosines: d.slice(0, 3), columnCosines: d.slice(3, 6),
        imagePositionPatient: layout.origin.map((v, i) => v + z * dz * d[6 + i]), pixelSpacing: [dy, dx],
        rowPixelSpacing: dy, columnPixelSpacing: dx, sliceThickness: dz };
    }
    if (type === "generalSeriesModule") return { modality: "CT", seriesInstanceUID: cfg.series };
    // The initial window (without one, Cornerstone would load the middle image again to find its range).
    if (type === "voiLutModule") {
      const [windowCenter, windowWidth] = PRESETS[state.preset];
      return { windowCenter: [windowCenter], windowWidth: [windowWidth] };
    }
    return undefined;
  }, 10000);
  const volume = volumeLoader.createLocalVolume(volumeId, {
    scalarData: scalars, dimensions: [layout.nx, layout.ny, layout.nz], spacing: layout.spacing,
    origin: layout.origin, direction: layout.direction,
    metadata: { Modality: "CT", PhotometricInterpretation: "MONOCHROME2", BitsAllocated: identity ? 16 : 32,
      BitsStored: identity ? 16 : 32, HighBit: identity ? 15 : 31, PixelRepresentation: 1, SamplesPerPixel: 1,
      FrameOfReferenceUID: cfg.series, voiLut: [] },
  });
  mark("volumeCreated");

  const engine = new RenderingEngine("bmd-case");
  engine.setViewports(VIEWPORTS.map(([id, orientation]) => ({
    viewportId: id, type: CoreEnums.ViewportType.ORTHOGRAPHIC,
    element: document.getElementById(`vp-${id}`), defaultOptions: { orientation, background: [0, 0, 0] },
  })));
  const viewportIds = VIEWPORTS.map(([id]) => id);
  const axialElement = document.getElementById("vp-axial");
  await setVolumesForViewports(engine, [{ volumeId }], viewportIds);
  for (const id of viewportIds) engine.getViewport(id).setProperties({ voiRange: voi(state.preset) });
  mark("volumesSet");
  // One drawing of the still empty volume while the voxels travel: the GPU texture is allocated and the
  // shaders compiled now (seconds on a software renderer), not after the first slab arrived.
  const warm = rendered(axialElement);
  engine.render();
  await warm;
  mark("emptyDrawn");

  // Progressive: each slab is drawn as it arrives (only its slices go to the GPU again).
  let firstDrawn = null;
  const arrivals = pending.map(async (p, n) => {
    const { body, slab, slope, intercept } = await p;
    if (identity && (slope !== 1 || intercept !== 0)) throw new Error(`${voxelsUrl}: unexpected rescale ${slope}, ${intercept}`);
    const values = new Int16Array(await body);
    placeSlab(values, scalars, layout, slab, slope, intercept);
    for (let k = slab[0]; k < slab[1]; k++) volume.vtkOpenGLTexture.setUpdatedFrame(layout.volumeSlice(k));
    // The first slab is drawn at once; later ones only mark their slices for the GPU (one more drawing of
    // three views per slab costs more than it shows on a software renderer), drawn together at the end.
    if (n === 0) {
      mark("firstSlab");
      const drawn = rendered(axialElement);
      engine.render();
      firstDrawn = drawn.then(() => mark("firstSliceShown"));
    }
  });
  await Promise.all(arrivals);
  mark("allVoxels");
  await firstDrawn;
  const drawn = rendered(axialElement);
  engine.render();
  await drawn;
  mark("loaded");
  state.loadSeconds = state.marks.loaded;
  state.firstSliceSeconds = state.marks.firstSliceShown;
  state.nSlices = layout.nz;

  // The labelmap is derived from the volume and filled slice by slice: the server sends segment indices in
  // stored slice order, the volume orders its slices along the normal (layout.volumeSlice).
  const segmentationId = `segments:${cfg.series}`;
  if (segmentsAnswer) {
    const answer = await segmentsAnswer;
    if (!answer.ok) throw new Error(`${cfg.segmentsUrl}: HTTP ${answer.status}`);
    const indices = new Uint8Array(await answer.arrayBuffer());
    const labelmap = volumeLoader.createAndCacheDerivedLabelmapVolume(volumeId, { volumeId: segmentationId });
    const { nz, plane } = layout;
    if (indices.length !== plane * nz) throw new Error(`segment map has ${indices.length} voxels, expected ${plane * nz}`);
    const data = new Uint8Array(plane * nz);
    for (let k = 0; k < nz; k++) data.set(indices.subarray(k * plane, (k + 1) * plane), layout.volumeSlice(k) * plane);
    labelmap.voxelManager.setCompleteScalarDataArray(data);
    originalLabels = indices; // stored order, for counting what an edit changed
    const config = { label: "Vertebral bodies", segments: {} };
    for (const s of segments) {
      config.segments[s.index] = { segmentIndex: s.index, label: s.level || `segment ${s.index}`, locked: true,
        active: false, cachedStats: {} };
    }
    segmentation.addSegmentations([{ segmentationId, config, representation: {
      type: ToolEnums.SegmentationRepresentations.Labelmap, data: { volumeId: segmentationId } } }]);
    // The level shown on the axial view: the segment with most voxels in each slice.
    const levelOfSlice = new Array(nz).fill(0);
    const counts = new Uint32Array(256);
    for (let z = 0; z < nz; z++) {
      counts.fill(0);
      const slice = data.subarray(z * plane, (z + 1) * plane);
      for (let i = 0; i < slice.length; i++) if (slice[i]) counts[slice[i]]++;
      let best = 0;
      for (let v = 1; v < 256; v++) if (counts[v] > counts[best]) best = v;
      levelOfSlice[z] = best;
    }
    state.levelOfSlice = levelOfSlice;
    const perViewport = {};
    for (const id of viewportIds) perViewport[id] = [{ segmentationId }];
    await segmentation.addLabelmapRepresentationToViewportMap(perViewport);
    for (const id of viewportIds) {
      for (const s of segments) segmentation.config.color.setSegmentIndexColor(id, segmentationId, s.index, [...s.rgb, 255]);
    }
    setOpacity(Number(document.getElementById("overlay-opacity")?.value || 0.45));
    state.segmentationId = segmentationId;
  }

  const group = ToolGroupManager.createToolGroup("bmd-case-tools");
  for (const Tool of [StackScrollTool, ZoomTool, PanTool, WindowLevelTool]) {
    addTool(Tool);
    group.addTool(Tool.toolName);
  }
  const { MouseBindings } = ToolEnums;
  group.setToolActive(StackScrollTool.toolName, { bindings: [{ mouseButton: MouseBindings.Wheel }] });
  group.setToolActive(WindowLevelTool.toolName, { bindings: [{ mouseButton: MouseBindings.Primary }] });
  group.setToolActive(PanTool.toolName, { bindings: [{ mouseButton: MouseBindings.Auxiliary }] });
  group.setToolActive(ZoomTool.toolName, { bindings: [{ mouseButton: MouseBindings.Secondary }] });
  for (const id of viewportIds) group.addViewport(id, "bmd-case");

  function setOpacity(alpha) {
    segmentation.config.style.setStyle({ type: ToolEnums.SegmentationRepresentations.Labelmap },
      { fillAlpha: alpha, fillAlphaInactive: alpha, outlineOpacity: Math.min(1, alpha + 0.3) });
    engine.render();
  }
  function setPreset(name) {
    state.preset = name;
    for (const id of viewportIds) engine.getViewport(id).setProperties({ voiRange: voi(name) });
    engine.render();
    document.querySelectorAll("[data-preset]").forEach((b) => b.classList.toggle("active", b.dataset.preset === name));
  }
  function setOverlay(visible) {
    if (!state.segmentationId) return;
    const specifier = { segmentationId, type: ToolEnums.SegmentationRepresentations.Labelmap };
    for (const id of viewportIds) {
      for (const s of segments) segmentation.config.visibility.setSegmentIndexVisibility(id, specifier, s.index, visible);
    }
    state.overlayVisible = visible;
    engine.render();
  }
  const levelBox = document.getElementById("axial-level");
  const names = new Map(segments.map((s) => [s.index, s.level || `segment ${s.index}`]));
  function showAxialLevel() {
    if (!levelBox || !state.levelOfSlice) return;
    const camera = engine.getViewport("axial").getCamera();
    const ijk = utilities.transformWorldToIndex(volume.imageData, camera.focalPoint);
    const z = Math.min(Math.max(Math.round(ijk[2]), 0), state.levelOfSlice.length - 1);
    const index = state.levelOfSlice[z];
    levelBox.textContent = index ? names.get(index) || "" : "";
  }
  document.getElementById("vp-axial").addEventListener(CoreEnums.Events.CAMERA_MODIFIED, showAxialLevel);
  function jumpTo(world) {
    for (const id of viewportIds) engine.getViewport(id).jumpToWorld(world);
    engine.render();
  }
  function scrollAxial(delta) {
    const vp = engine.getViewport("axial");
    const camera = vp.getCamera();
    const spacing = Math.abs(volume.spacing[2]) || 1;
    const n = camera.viewPlaneNormal;
    jumpTo(camera.focalPoint.map((v, i) => v + delta * spacing * n[i]));
  }

  document.querySelectorAll("[data-preset]").forEach((button) =>
    button.addEventListener("click", () => setPreset(button.dataset.preset)));
  document.getElementById("overlay-toggle")?.addEventListener("change", (e) => setOverlay(e.target.checked));
  document.getElementById("overlay-opacity")?.addEventListener("input", (e) => setOpacity(Number(e.target.value)));
  document.querySelectorAll("tr[data-centroid]").forEach((row) => row.addEventListener("click", (e) => {
    if (e.target.closest("button, a, input, select, form")) return;
    jumpTo(JSON.parse(row.dataset.centroid));
  }));
  Object.assign(state, { setPreset, setOverlay, setOpacity, jumpTo, scrollAxial });
  setPreset(state.preset);
  showAxialLevel();
  if (state.segmentationId) {
    setUpMaskEditor({ engine, group, viewportIds, segmentationId, segments, layout, render: () => engine.render() });
  }
  mark("ready");
  state.ready = true;
  root.dataset.ready = "1";
  const status = document.getElementById("viewer-status");
  if (status) {
    status.textContent = `${layout.nz} slices loaded in ${state.loadSeconds.toFixed(2)} s `
      + `(first slice shown after ${state.firstSliceSeconds.toFixed(2)} s)`;
  }
}

// -- mask editing ---------------------------------------------------------------------------------------
// Brush and eraser on the labelmap of one chosen segment (every other segment is locked, so a stroke never
// changes another segment's voxels), undo of the last stroke, and saving: the whole labelmap, gzipped, in
// stored slice order, to the server, which checks it, re-measures the ROI and HU from the CT it holds and
// makes a new measurement run. The page only sends segment indices, never HU.
const BRUSH = "MaskBrush";
const ERASER = "MaskEraser";

function setUpMaskEditor({ group, viewportIds, segmentationId, segments, layout, render }) {
  const panel = document.getElementById("mask-editor");
  if (!panel) return;
  const { MouseBindings } = ToolEnums;
  addTool(BrushTool);
  group.addToolInstance(BRUSH, BrushTool.toolName, { activeStrategy: "FILL_INSIDE_CIRCLE" });
  group.addToolInstance(ERASER, BrushTool.toolName, { activeStrategy: "ERASE_INSIDE_CIRCLE" });
  for (const id of viewportIds) segmentation.activeSegmentation.setActiveSegmentation(id, segmentationId);
  const statusBox = document.getElementById("mask-status");
  const say = (text) => { if (statusBox) statusBox.textContent = text; };
  const segmentSelect = document.getElementById("mask-segment");
  const sizeInput = document.getElementById("mask-size");
  const modeButtons = panel.querySelectorAll("[data-mask-mode]");
  const history = utilities.HistoryMemo.DefaultHistoryMemo;
  const isStroke = (item) => (Array.isArray(item) ? item : [item]).every((m) => m && m.operationType === "labelmap");
  let strokes = 0;

  function chooseSegment(index) {
    segmentation.segmentIndex.setActiveSegmentIndex(segmentationId, index);
    for (const s of segments) segmentation.segmentLocking.setSegmentIndexLocked(segmentationId, s.index, s.index !== index);
    state.maskSegment = index;
  }
  function setMode(mode) {
    for (const name of [BRUSH, ERASER]) group.setToolDisabled(name);
    if (mode === "view") {
      group.setToolActive(WindowLevelTool.toolName, { bindings: [{ mouseButton: MouseBindings.Primary }] });
    } else {
      group.setToolPassive(WindowLevelTool.toolName);
      group.setToolActive(mode === "erase" ? ERASER : BRUSH, { bindings: [{ mouseButton: MouseBindings.Primary }] });
      toolUtilities.segmentation.setBrushSizeForToolGroup(group.id, Number(sizeInput?.value || 5));
    }
    state.maskMode = mode;
    modeButtons.forEach((b) => b.classList.toggle("active", b.dataset.maskMode === mode));
    render();
  }
  function undo() {
    if (history.undoIf(isStroke)) {
      strokes = Math.max(0, strokes - 1);
      say(strokes ? `${strokes} stroke(s) not saved` : "no unsaved strokes");
      render();
      return true;
    }
    say("nothing to undo");
    return false;
  }
  // The labelmap in stored slice order (what the server's segment map holds).
  function labelsInStoredOrder() {
    const labelmap = cache.getVolume(segmentationId);
    const data = labelmap.voxelManager.getCompleteScalarDataArray();
    const { nz, plane } = layout;
    const out = new Uint8Array(nz * plane);
    for (let k = 0; k < nz; k++) {
      const z = layout.volumeSlice(k);
      out.set(data.subarray(z * plane, (z + 1) * plane), k * plane);
    }
    return out;
  }
  function changedVoxels() {
    const now = labelsInStoredOrder();
    const before = originalLabels;
    let n = 0;
    for (let i = 0; i < now.length; i++) if (now[i] !== before[i]) n++;
    return n;
  }
  async function save() {
    const labels = labelsInStoredOrder();
    say("saving: the server re-measures the ROI…");
    const gzipped = await new Response(new Blob([labels]).stream().pipeThrough(new CompressionStream("gzip"))).arrayBuffer();
    const url = new URL(panel.dataset.saveUrl, window.location.origin);
    for (const key of ["reading", "version", "run"]) url.searchParams.set(key, panel.dataset[key]);
    const answer = await fetch(url, { method: "POST", credentials: "same-origin", body: gzipped,
      headers: { "Content-Type": "application/gzip",
        "X-CSRFToken": panel.querySelector("input[name=csrfmiddlewaretoken]").value } });
    const reply = await answer.json().catch(() => ({ error: `HTTP ${answer.status}` }));
    if (answer.ok) {
      say(`saved: measurement run ${reply.run}`);
      state.savedRun = reply.run;
      window.location.assign(reply.url);
      return reply;
    }
    const conflict = document.getElementById("mask-conflict");
    if (answer.status === 409 && conflict) {
      conflict.hidden = false;
      conflict.scrollIntoView({ block: "nearest" });
      conflict.querySelector("ul").replaceChildren(...(reply.changes || []).map((text) => {
        const li = document.createElement("li");
        li.textContent = text;
        return li;
      }));
    }
    say(`not saved: ${reply.error}`);
    state.saveError = reply.error;
    return reply;
  }

  // A stroke ends with its memo pushed onto the shared history (Cornerstone has no event for that): count
  // them for the status line.
  const push = history.push.bind(history);
  history.push = (item) => {
    const result = push(item);
    if (item && isStroke(item)) {
      strokes += 1;
      say(`${strokes} stroke(s) not saved`);
    }
    return result;
  };

  segmentSelect?.addEventListener("change", () => chooseSegment(Number(segmentSelect.value)));
  sizeInput?.addEventListener("input", () => toolUtilities.segmentation.setBrushSizeForToolGroup(group.id, Number(sizeInput.value)));
  modeButtons.forEach((b) => b.addEventListener("click", () => setMode(b.dataset.maskMode)));
  document.getElementById("mask-undo")?.addEventListener("click", undo);
  document.getElementById("mask-save")?.addEventListener("click", () => save().catch((e) => say(`not saved: ${e.message}`)));
  document.addEventListener("keydown", (event) => {
    if ((event.ctrlKey || event.metaKey) && event.key === "z" && !event.target.closest("input, textarea, select")) {
      event.preventDefault();
      undo();
    }
  });
  chooseSegment(Number(segmentSelect?.value || segments[0]?.index || 1));
  setMode("view");
  Object.assign(state, { maskSetMode: setMode, maskChooseSegment: chooseSegment, maskUndo: undo, maskSave: save,
    maskChangedVoxels: changedVoxels, maskStrokes: () => strokes });
}

main().catch((error) => { console.error(error); state.errorStack = String(error && error.stack); fail(error && error.message ? error.message : error); });
