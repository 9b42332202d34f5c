// The impact page's only script: a chosen file fills the corpus box, and a running
// job's progress bar is polled; when the run ends the page reloads to show the report.
// Without scripts the job page refreshes itself (a <noscript> meta refresh).
"use strict";
(function () {
  for (const input of document.querySelectorAll("input[type=file][data-fills]")) {
    input.addEventListener("change", function () {
      const target = document.getElementById(input.dataset.fills);
      const file = input.files && input.files[0];
      if (!target || !file) return;
      file.text().then(function (text) { target.value = text; });
    });
  }
  const job = document.getElementById("job");
  if (!job || job.dataset.state !== "running") return;
  const bar = document.getElementById("progress");
  const label = document.getElementById("progress-text");
  function poll() {
    fetch(job.dataset.status, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.json(); })
      .then(function (s) {
        if (s.state !== "running") { window.location.reload(); return; }
        bar.max = s.total || 1;
        bar.value = s.done;
        bar.textContent = s.done + " of " + s.total;
        label.textContent = s.done + " of " + (s.total || "?") + " shipments valued.";
        window.setTimeout(poll, 500);
      })
      .catch(function () { window.setTimeout(poll, 2000); });
  }
  window.setTimeout(poll, 300);
})();
