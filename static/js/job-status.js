// Polls the job's status fragment until the job has finished (progressive enhancement: the page works without it).
const box = document.getElementById("job-status");
if (box) {
  const poll = async () => {
    const state = box.querySelector("[data-state]")?.dataset.state;
    if (state === "succeeded" || state === "failed" || state === "cancelled") return;
    try {
      const response = await fetch(box.dataset.url, { headers: { "X-Requested-With": "fetch" } });
      if (response.ok) box.innerHTML = await response.text();
    } catch (error) { /* network hiccup: try again on the next tick */ }
    setTimeout(poll, 1500);
  };
  setTimeout(poll, 1500);
}
