// The case viewer: the exam's stored CT from the site's own DICOMweb endpoint (session cookie) in three
// orthogonal views, with the body segments as a coloured labelmap. Configured by data- attributes of
// #viewer and the JSON in #viewer-segments (no inline script: the site's Content-Security-Policy forbids it).
// When everything is drawn it sets #viewer[data-ready="1"] and window.bmdViewer.loadSeconds.
import {
  Enums as CoreEnums, RenderingEngine, eventTarget, init as coreInit, metaData, setVolumesForViewports,
  utilities, volumeLoader,
} from "@cornerstonejs/core";
import {
  Enums as ToolEnums, PanTool, StackScrollTool, ToolGroupManager, WindowLevelTool, ZoomTool, addTool,
  init as toolsInit, segmentation,
} from "@cornerstonejs/tools";
import { init as dicomLoaderInit, wadors } from "@cornerstonejs/dicom-image-loader";

const PRESETS = { bone: [400, 1800], soft: [40, 400], lung: [-600, 1500] }; // [centre, width] in HU
const VIEWPORTS = [
  ["axial", CoreEnums.OrientationAxis.AXIAL],
  ["sagittal", CoreEnums.OrientationAxis.SAGITTAL],
  ["coronal", CoreEnums.OrientationAxis.CORONAL],
];
const state = { ready: false, errors: [], loadSeconds: null, preset: "bone" };
window.bmdViewer = state;

function fail(message) {
  state.errors.push(String(message));
  const box = document.getElementById("viewer-status");
  if (box) box.textContent = `Viewer error: ${message}`;
}

function voi(name) {
  const [centre, width] = PRESETS[name];
  return { lower: centre - width / 2, upper: centre + width / 2 };
}

async function fetchJSON(url) {
  const answer = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/dicom+json" } });
  if (!answer.ok) throw new Error(`${url}: HTTP ${answer.status}`);
  return answer.json();
}

const EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1";

// Every frame of the series in one request (WADO-RS bulk data of the series), parsed into one byte array per
// frame and keyed by the frame URL in each part's Content-Location. 300 requests of one frame each cost far
// more than the bytes: the loader then decodes from these (its "compressedFrameData" metadata hook) and
// only goes to the network for a frame that is missing here.
async function fetchAllFrames(seriesRoot, frameBytes) {
  const answer = await fetch(seriesRoot, { credentials: "same-origin", headers: {
    Accept: `multipart/related; type="application/octet-stream"; transfer-syntax=${EXPLICIT_VR_LITTLE_ENDIAN}` } });
  if (!answer.ok) throw new Error(`${seriesRoot}: HTTP ${answer.status}`);
  const boundary = /boundary=([^;\s]+)/.exec(answer.headers.get("Content-Type") || "");
  if (!boundary) throw new Error(`${seriesRoot}: no multipart boundary`);
  const body = new Uint8Array(await answer.arrayBuffer());
  const decoder = new TextDecoder("ascii");
  const frames = new Map();
  let at = 0;
  for (;;) {
    // Each part: "--boundary\r\n" headers "\r\n\r\n" frameBytes "\r\n"; the body ends with "--boundary--".
    const headerEnd = indexOfCrLfCrLf(body, at);
    if (headerEnd < 0) break;
    const headers = decoder.decode(body.subarray(at, headerEnd));
    const location = /Content-Location:\s*(\S+)/i.exec(headers);
    const start = headerEnd + 4;
    // A copy, so that each frame starts at offset 0 (16-bit views need an even offset).
    if (location) frames.set(location[1], body.slice(start, start + frameBytes));
    at = start + frameBytes + 2;
  }
  return frames;
}

function indexOfCrLfCrLf(bytes, from) {
  for (let i = from; i < bytes.length - 3; i++) {
    if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) return i;
  }
  return -1;
}

function waitForVolume(volumeId) {
  return new Promise((resolve) => {
    const done = (evt) => {
      if (evt.detail && evt.detail.volumeId === volumeId) {
        eventTarget.removeEventListener(CoreEnums.Events.IMAGE_VOLUME_LOADING_COMPLETED, done);
        resolve();
      }
    };
    eventTarget.addEventListener(CoreEnums.Events.IMAGE_VOLUME_LOADING_COMPLETED, done);
  });
}

async function main() {
  const root = document.getElementById("viewer");
  if (!root) return;
  const started = performance.now();
  const cfg = root.dataset;
  const segments = JSON.parse(document.getElementById("viewer-segments").textContent || "[]");

  await coreInit();
  toolsInit();
  dicomLoaderInit({ maxWebWorkers: Math.max(1, Math.min(4, (navigator.hardwareConcurrency || 2) - 1)),
    wasmBasePath: cfg.wasmBase });

  const seriesRoot = `${window.location.origin}${cfg.dicomwebRoot}/studies/${cfg.study}/series/${cfg.series}`;
  const metadata = await fetchJSON(`${seriesRoot}/metadata`);
  state.metadataSeconds = (performance.now() - started) / 1000;
  const first = metadata[0];
  const frameBytes = first["00280010"].Value[0] * first["00280011"].Value[0] * (first["00280100"].Value[0] / 8);
  const frames = await fetchAllFrames(seriesRoot, frameBytes).catch((error) => {
    console.warn(`loading frames one by one: ${error.message}`);
    return new Map();
  });
  state.framesSeconds = (performance.now() - started) / 1000;
  metaData.addProvider((type, imageId) => {
    if (type !== "compressedFrameData") return undefined;
    const pixelData = frames.get(imageId.substring(7)); // "wadors:" + the frame URL
    return pixelData ? { pixelData, transferSyntaxUid: EXPLICIT_VR_LITTLE_ENDIAN } : undefined;
  }, 10000);
  const sliceOfImageId = new Map();
  const imageIds = metadata.map((instance) => {
    const sop = instance["00080018"].Value[0];
    const imageId = `wadors:${seriesRoot}/instances/${sop}/frames/1`;
    wadors.metaDataManager.add(imageId, instance);
    sliceOfImageId.set(imageId, instance["00200013"].Value[0] - 1);
    return imageId;
  });

  const engine = new RenderingEngine("bmd-case");
  engine.setViewports(VIEWPORTS.map(([id, orientation]) => ({
    viewportId: id, type: CoreEnums.ViewportType.ORTHOGRAPHIC,
    element: document.getElementById(`vp-${id}`), defaultOptions: { orientation, background: [0, 0, 0] },
  })));
  const viewportIds = VIEWPORTS.map(([id]) => id);

  const volumeId = `cornerstoneStreamingImageVolume:${cfg.series}`;
  const volume = await volumeLoader.createAndCacheVolume(volumeId, { imageIds });
  const loaded = waitForVolume(volumeId);
  volume.load();
  // The views are attached once the volume is complete: redrawing three views after every one of 300
  // slices costs more than loading them (seconds on a software renderer).
  await loaded;
  await setVolumesForViewports(engine, [{ volumeId }], viewportIds);
  for (const id of viewportIds) engine.getViewport(id).setProperties({ voiRange: voi(state.preset) });
  engine.render();
  state.loadSeconds = (performance.now() - started) / 1000;
  state.nSlices = imageIds.length;

  // The labelmap is derived from the loaded volume (it must exist first) and filled slice by slice: the
  // server sends segment indices in stored slice order, the volume orders its images along the normal.
  const segmentationId = `segments:${cfg.series}`;
  if (cfg.segmentsUrl) {
    const answer = await fetch(cfg.segmentsUrl, { credentials: "same-origin" });
    if (!answer.ok) throw new Error(`${cfg.segmentsUrl}: HTTP ${answer.status}`);
    const indices = new Uint8Array(await answer.arrayBuffer());
    const labelmap = volumeLoader.createAndCacheDerivedLabelmapVolume(volumeId, { volumeId: segmentationId });
    const [nx, ny, nz] = labelmap.dimensions;
    const plane = nx * ny;
    if (indices.length !== plane * nz) throw new Error(`segment map has ${indices.length} voxels, expected ${plane * nz}`);
    const data = new Uint8Array(plane * nz);
    volume.imageIds.forEach((imageId, z) => {
      const k = sliceOfImageId.get(imageId);
      data.set(indices.subarray(k * plane, (k + 1) * plane), z * plane);
    });
    labelmap.voxelManager.setCompleteScalarDataArray(data);
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
  state.ready = true;
  root.dataset.ready = "1";
  const status = document.getElementById("viewer-status");
  if (status) status.textContent = `${imageIds.length} slices loaded in ${state.loadSeconds.toFixed(2)} s`;
}

main().catch((error) => { console.error(error); fail(error && error.message ? error.message : error); });
