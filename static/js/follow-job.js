// Follows a job that a page waits for (a requested re-segmentation, a segmenter comparison): polls the job's
// status fragment, shows its state and message, and reloads the page once the job has finished, so the page
// shows what the job produced (or its failure). Marked up as
//   <p data-follow-job="JOB_STATUS_FRAGMENT_URL">... <span data-job-state></span> <span data-job-message></span></p>
// No inline script: the CSP forbids it. Without JavaScript the page shows the state as it was when loaded.
const finished = ["succeeded", "failed", "cancelled"];
document.querySelectorAll("[data-follow-job]").forEach((box) => {
  const poll = async () => {
    try {
      const response = await fetch(box.dataset.followJob, { headers: { "X-Requested-With": "fetch" } });
      if (response.ok) {
        const fragment = new DOMParser().parseFromString(await response.text(), "text/html");
        const state = fragment.querySelector("[data-state]")?.dataset.state;
        const label = fragment.getElementById("job-state")?.textContent;
        const stateBox = box.querySelector("[data-job-state]");
        if (label && stateBox) { stateBox.textContent = label; stateBox.className = `state ${state}`; }
        const message = fragment.querySelector("progress")?.parentElement?.textContent?.trim();
        const messageBox = box.querySelector("[data-job-message]");
        if (message && messageBox) messageBox.textContent = message;
        if (finished.includes(state)) { window.location.reload(); return; }
      }
    } catch (error) { /* network hiccup: try again on the next tick */ }
    setTimeout(poll, 2000);
  };
  setTimeout(poll, 2000);
});
