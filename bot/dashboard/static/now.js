// The live plots of the "Now" page: the last hour from /api/now, redrawn every few seconds. Without JavaScript
// the page still shows the latest numbers.
(function () {
  "use strict";
  var box = document.getElementById("charts");
  if (!box || !window.uPlot) return;
  var every = Math.max(1, parseFloat(box.dataset.every || "5")) * 1000;
  var figures = Array.prototype.slice.call(box.querySelectorAll("figure.chart"));
  var plots = {};

  function size(figure) {
    return { width: Math.max(280, figure.clientWidth - 16), height: 150 };
  }

  function draw(columns) {
    figures.forEach(function (figure) {
      var key = figure.dataset.key;
      var values = columns[key].map(function (v) { return v === null ? null : Number(v); });
      var data = [columns.time, values];
      if (!plots[key]) {
        var dims = size(figure);
        plots[key] = new uPlot({
          width: dims.width, height: dims.height, legend: { show: false },
          scales: { x: { time: true }, y: { range: function (u, lo, hi) { return [0, Math.max(1, hi * 1.1)]; } } },
          series: [{}, { label: figure.dataset.label, stroke: "#2f6fde", fill: "rgba(47,111,222,0.12)", width: 2 }],
          axes: [{}, { size: 50 }]
        }, data, figure);
      } else {
        plots[key].setData(data);
      }
      var latest = values.length ? values[values.length - 1] : null;
      var cell = document.getElementById("now-" + key);
      if (cell) {
        var unit = figure.dataset.unit;
        cell.textContent = latest === null ? "n/a"
          : (Number.isInteger(latest) ? String(latest) : latest.toFixed(1)) + (unit ? " " + unit : "");
      }
    });
    box.dataset.drawn = String(columns.time.length);
  }

  function refresh() {
    fetch("/api/now", { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (columns) { if (columns) draw(columns); })
      .catch(function () { /* the next refresh tries again */ });
  }

  refresh();
  setInterval(refresh, every);
})();
