// The console's one script (no inline script anywhere: the content security policy forbids it).
// Charts: a <canvas data-chart="line|bar|doughnut" data-source="ID"> draws the JSON in <script id="ID">.
// Confirmations: a <form data-confirm="question"> asks before it is sent.
"use strict";
(function () {
  var palette = ["#b0302c", "#2f6db3", "#1f7a4d", "#9a6700", "#6b3fa0", "#0f7b8a", "#c2410c", "#4b5563"];

  function drawCharts() {
    if (typeof Chart === "undefined") { return; }
    document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      var source = document.getElementById(canvas.dataset.source);
      if (!source) { return; }
      var data = JSON.parse(source.textContent);
      var kind = canvas.dataset.chart;
      var datasets = (data.series || []).map(function (series, i) {
        var colour = palette[i % palette.length];
        return {
          label: series.label,
          data: series.values,
          borderColor: kind === "doughnut" ? "#fff" : colour,
          backgroundColor: kind === "doughnut" ? palette : (kind === "bar" ? colour : colour + "33"),
          fill: kind === "line" && (data.series.length === 1),
          tension: 0.2,
          stack: data.stacked ? "all" : undefined
        };
      });
      new Chart(canvas, {
        type: kind,
        data: { labels: data.labels || [], datasets: datasets },
        options: {
          responsive: true,
          maintainAspectRatio: false,
          animation: false,
          plugins: { legend: { display: datasets.length > 1 || kind === "doughnut" } },
          scales: kind === "doughnut" ? {} : {
            x: { stacked: !!data.stacked },
            y: { beginAtZero: true, stacked: !!data.stacked }
          }
        }
      });
      canvas.dataset.drawn = "yes";
    });
  }

  function confirmForms() {
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.dataset.confirm)) { event.preventDefault(); }
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    confirmForms();
    drawCharts();
  });
})();
