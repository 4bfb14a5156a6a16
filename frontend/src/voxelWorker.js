// Reads a series' voxels (the site's /voxels extension, see viewer.js) in parallel byte ranges off the page's
// main thread: the page's thread is busy for seconds setting up WebGL on a software renderer, and a response
// body that nobody reads stops the transfer once the network buffers are full. Each slab's bytes go back to
// the page as a transferred ArrayBuffer (no copy).
//   in:  { url, slabs: [[first slice, end slice), ...], bytesPerSlice }
//   out: { n, type: "headers", shape, slope, intercept } then { n, type: "body", buffer } or { n, type: "error", message }
self.onmessage = ({ data: { url, slabs, bytesPerSlice } }) => {
  slabs.forEach(async ([a, b], n) => {
    try {
      const answer = await fetch(url, { credentials: "same-origin",
        headers: { Range: `bytes=${a * bytesPerSlice}-${b * bytesPerSlice - 1}` } });
      if (answer.status !== 206 && answer.status !== 200) throw new Error(`${url}: HTTP ${answer.status}`);
      self.postMessage({ n, type: "headers", shape: answer.headers.get("X-Shape") || "",
        slope: Number(answer.headers.get("X-Rescale-Slope") || 1),
        intercept: Number(answer.headers.get("X-Rescale-Intercept") || 0) });
      const buffer = await answer.arrayBuffer();
      self.postMessage({ n, type: "body", buffer }, [buffer]);
    } catch (error) {
      self.postMessage({ n, type: "error", message: String((error && error.message) || error) });
    }
  });
};
