// Case page: keyboard shortcuts for the common review actions, and a click on a level row selects that
// segment in the relabel form (the viewer, viewer.js, jumps there). No inline script: the CSP forbids it.
const shortcuts = new Map();
document.querySelectorAll("[data-shortcut]").forEach((el) => shortcuts.set(el.dataset.shortcut, el));

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.target.closest("input, textarea, select")) {
    if (event.key === "Escape") event.target.blur();
    return;
  }
  if (event.key === "c") {
    const box = document.getElementById("comment-text");
    if (box) { event.preventDefault(); box.focus(); }
    return;
  }
  const target = shortcuts.get(event.key);
  if (!target) return;
  event.preventDefault();
  target.click();
});

// Each level row's colour swatch, the segment's overlay colour. Set through the CSSOM: the CSP (no
// 'unsafe-inline' for styles) blocks style="" attributes in the page, and the colour is per segment.
document.querySelectorAll("#level-table .swatch[data-rgb]").forEach((swatch) => {
  swatch.style.backgroundColor = `rgb(${swatch.dataset.rgb})`;
});

const select = document.getElementById("segment-select");
document.querySelectorAll("#level-table tr[data-index]").forEach((row) => row.addEventListener("click", () => {
  document.querySelectorAll("#level-table tr.selected").forEach((r) => r.classList.remove("selected"));
  row.classList.add("selected");
  if (select) select.value = row.dataset.index;
}));
