// Case page: follows the state of a requested re-segmentation (the job's status fragment) and reloads the
// page once the job has finished, so the reader sees the new run (or the failure). No inline script: the CSP
// forbids it. Without JavaScript the page shows the state as it was when loaded.
const box = document.getElementById("resegment-active");
if (box) {
  const finished = ["succeeded", "failed", "cancelled"];
  const poll = async () => {
    try {
      const response = await fetch(box.dataset.jobUrl, { headers: { "X-Requested-With": "fetch" } });
      if (response.ok) {
        const fragment = new DOMParser().parseFromString(await response.text(), "text/html");
        const state = fragment.querySelector("[data-state]")?.dataset.state;
        const label = fragment.getElementById("job-state")?.textContent;
        if (label) document.getElementById("resegment-state").textContent = label;
        const message = fragment.querySelector("progress")?.parentElement?.textContent?.trim();
        if (message) document.getElementById("resegment-message").textContent = message;
        if (finished.includes(state)) { window.location.reload(); return; }
      }
    } catch (error) { /* network hiccup: try again on the next tick */ }
    setTimeout(poll, 2000);
  };
  setTimeout(poll, 2000);
}
