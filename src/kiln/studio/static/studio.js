// Kiln Studio: actions (POST with the bearer token kept for this tab) and the endpoint's traffic charts.
"use strict";

function studioToast(text, error) {
  const toast = document.getElementById("toast");
  toast.textContent = text;
  toast.className = "shown" + (error ? " error" : "");
}

(function () {
  const input = document.getElementById("token");
  if (input) {
    input.value = sessionStorage.getItem("kiln-studio-token") || "";
    input.addEventListener("change", () => sessionStorage.setItem("kiln-studio-token", input.value));
    document.getElementById("token-form").addEventListener("submit", (e) => e.preventDefault());
  }
  document.querySelectorAll("button[data-action]").forEach((button) => {
    button.addEventListener("click", async () => {
      const reasonInput = button.dataset.reason ? document.querySelector(button.dataset.reason) : null;
      const token = input ? input.value : "";
      const headers = { "content-type": "application/json" };
      if (token) headers.authorization = "Bearer " + token;
      const response = await fetch(button.dataset.action, {
        method: "POST", headers: headers, body: JSON.stringify({ reason: reasonInput ? reasonInput.value : "" }),
      });
      const body = await response.json();
      if (!response.ok) {
        studioToast(body.error + (body.hint ? " (" + body.hint + ")" : ""), true);
        return;
      }
      studioToast(body.action + " " + body.target + ": " + body.outcome, false);
      setTimeout(() => window.location.reload(), 600);
    });
  });
})();

function studioTrafficCharts(series) {
  const layout = (title, unit) => ({
    title: { text: title, font: { size: 14 } }, margin: { l: 50, r: 10, t: 36, b: 40 },
    xaxis: { title: { text: "seconds ago" }, autorange: "reversed" }, yaxis: { title: { text: unit }, rangemode: "tozero" },
    legend: { orientation: "h" },
  });
  const lines = (value) => Object.entries(series).map(([variant, points]) => ({
    x: points.map((p) => p.seconds_ago), y: points.map(value), name: variant, mode: "lines+markers", type: "scatter",
  }));
  const config = { displaylogo: false, responsive: true };
  Plotly.newPlot("chart-rps", lines((p) => p.requests / p.seconds), layout("Requests per second", "req/s"), config);
  Plotly.newPlot("chart-latency", [
    ...lines((p) => p.p99_ms).map((t) => ({ ...t, name: t.name + " p99" })),
    ...lines((p) => p.p50_ms).map((t) => ({ ...t, name: t.name + " p50", line: { dash: "dot" } })),
  ], layout("Latency", "ms"), config);
  Plotly.newPlot("chart-errors", lines((p) => (p.requests ? p.errors / p.requests : 0)), layout("Error rate", "share"), config);
}

function studioMonitorCharts(chart) {
  const config = { displaylogo: false, responsive: true };
  const margin = { l: 50, r: 10, t: 36, b: 40 };
  Plotly.newPlot("chart-violations", [{ x: chart.finished, y: chart.violations, type: "bar", name: "violations" }],
    { title: { text: "Violations per run", font: { size: 14 } }, margin: margin, yaxis: { rangemode: "tozero" } }, config);
  const drift = Object.entries(chart.drift).map(([feature, points]) => ({
    x: points.map((p) => p[0]), y: points.map((p) => p[1]), name: feature, mode: "lines+markers", type: "scatter",
  }));
  Plotly.newPlot("chart-drift", drift, { title: { text: "Drift score per feature", font: { size: 14 } }, margin: margin,
    legend: { orientation: "h" } }, config);
}
