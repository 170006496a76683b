// Live progress: polls the runs still queued or running on this page and
// updates their bars in place. On a run's own page, reloads when it ends.
(function () {
  "use strict";
  var PERIOD_MS = 1500;
  var source = document.querySelector("[data-progress-url]");
  if (!source) return;
  var url = source.getAttribute("data-progress-url");

  function field(row, name) {
    return row.querySelector('[data-field="' + name + '"]');
  }

  function update(run) {
    var row = document.querySelector('[data-run="' + run.id + '"]');
    if (!row) return;
    var status = field(row, "status");
    status.textContent = run.status_label;
    status.className = "oo-status oo-status-" + run.status;
    var bar = field(row, "bar");
    bar.setAttribute("aria-valuenow", run.chunks_done);
    bar.setAttribute("aria-valuemax", run.chunks_total);
    bar.setAttribute("aria-valuetext", run.chunks_done + " of " + run.chunks_total + " chunks");
    bar.firstElementChild.style.width = run.percent + "%";
    bar.firstElementChild.className = "oo-progress-fill oo-progress-" + run.status;
    field(row, "chunks").textContent = run.chunks_done + " / " + run.chunks_total;
    var duration = field(row, "duration");
    if (duration) duration.textContent = run.duration;
    if (run.live) return;
    row.removeAttribute("data-live");
    if (row.hasAttribute("data-reload-when-done")) {
      window.location.reload();
      return;
    }
    var result = field(row, "result");
    if (!result) return;
    result.textContent = "";
    if (run.best) {
      result.append(run.best.policy + " ");
      var mean = document.createElement("span");
      mean.className = "oo-num";
      mean.textContent = run.best.mean_reward.toFixed(4);
      result.append(mean);
    } else if (run.status === "failed") {
      var failed = document.createElement("span");
      failed.className = "oo-error-text";
      failed.title = run.error;
      failed.textContent = "failed";
      result.append(failed);
    }
  }

  function poll() {
    var live = document.querySelectorAll("[data-run][data-live]");
    if (!live.length) return;
    var query = Array.prototype.map.call(live, function (row) {
      return "id=" + encodeURIComponent(row.getAttribute("data-run"));
    }).join("&");
    fetch(url + "?" + query, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : { runs: [] }; })
      .then(function (body) { body.runs.forEach(update); })
      .catch(function () {})  // a missed poll is retried on the next tick
      .then(function () { window.setTimeout(poll, PERIOD_MS); });
  }

  window.setTimeout(poll, PERIOD_MS);
})();
