// Draws the dashboard charts: every element with data-figure="ID" gets the plotly figure stored as JSON in
// <script type="application/json" id="ID"> (Django's json_script). Progressive enhancement: the numbers are
// in the page's tables, so without JavaScript (or without plotly.js) the page still says everything.
// The camera button saves a PNG; a second button saves the same chart as SVG (vector, for papers).
const svgButton = {
  name: "Download plot as SVG",
  icon: window.Plotly ? window.Plotly.Icons.disk : undefined,
  click: (gd) => window.Plotly.downloadImage(gd, { format: "svg", filename: gd.dataset.figure || "chart" }),
};
const config = {
  responsive: true, displaylogo: false, modeBarButtonsToRemove: ["select2d", "lasso2d"],
  modeBarButtonsToAdd: [svgButton],
  toImageButtonOptions: { format: "png", scale: 2 },
};

function draw(element) {
  const source = document.getElementById(element.dataset.figure);
  if (!source) return;
  const figure = JSON.parse(source.textContent);
  element.textContent = "";  // the no-script hint inside the box
  window.Plotly.newPlot(element, figure.data, figure.layout, config);
}

if (window.Plotly) {
  document.querySelectorAll("[data-figure]").forEach(draw);
}
