// The dashboard's few behaviours, no framework: local times, the compare view's prompt picker,
// and live training curves (uPlot, vendored beside this file) fed by polling the metrics API.
(function () {
  "use strict";

  document.querySelectorAll(".when[data-time]").forEach(function (cell) {
    cell.textContent = new Date(parseFloat(cell.dataset.time) * 1000).toLocaleString();
  });
  document.querySelectorAll("select.auto-submit").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });

  var holder = document.getElementById("charts");
  if (!holder || typeof uPlot === "undefined") { return; }
  var url = holder.dataset.metricsUrl, pollMs = parseInt(holder.dataset.pollMs, 10) || 2000;
  var other = document.getElementById("charts-other");
  var stateBadge = document.getElementById("run-state");
  var records = [], next = 0, charts = {}, groups = {};

  function seriesOf(keys) {
    // x = step; one series per metric; a metric missing at a step is a gap (null), not a zero.
    var xs = [], columns = keys.map(function () { return []; });
    records.forEach(function (r) {
      if (typeof r.step !== "number" || !keys.some(function (k) { return k in r; })) { return; }
      xs.push(r.step);
      keys.forEach(function (k, i) { columns[i].push(k in r ? r[k] : null); });
    });
    return [xs].concat(columns);
  }

  var palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];
  function draw() {
    Object.keys(groups).forEach(function (name) {
      var keys = groups[name], data = seriesOf(keys), chart = charts[name];
      if (chart && chart.keys.join() === keys.join()) { chart.plot.setData(data); return; }
      if (chart) { chart.plot.destroy(); chart.box.remove(); }
      var box = document.createElement("div");
      box.className = "dash-chart";
      box.dataset.group = name;
      (name === "other" && other ? other : holder).appendChild(box);
      var opts = {
        title: name, width: Math.min(560, holder.clientWidth || 560), height: 240,
        scales: { x: { time: false } }, spanGaps: true,
        series: [{ label: "step" }].concat(keys.map(function (k, i) {
          return { label: k, stroke: palette[i % palette.length], width: 1.5 };
        })),
      };
      charts[name] = { keys: keys.slice(), box: box, plot: new uPlot(opts, data, box) };
    });
  }

  function poll() {
    fetch(url + "?after=" + next, { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.json() : Promise.reject(response.status); })
      .then(function (body) {
        records = records.concat(body.records);
        next = body.next;
        Object.keys(body.groups).forEach(function (name) {
          var known = groups[name] || [];
          body.groups[name].forEach(function (k) { if (known.indexOf(k) < 0) { known.push(k); } });
          groups[name] = known;
        });
        holder.dataset.records = String(records.length);  // read by the browser test
        draw();
        if (stateBadge) {
          stateBadge.textContent = body.state;
          stateBadge.className = "badge badge-" + body.state;
        }
        if (body.state === "running") { setTimeout(poll, pollMs); }
      })
      .catch(function () { setTimeout(poll, pollMs * 5); });
  }
  poll();
})();
