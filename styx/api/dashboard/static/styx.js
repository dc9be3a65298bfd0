// Styx dashboard: follow a running job's log over server-sent events (GET .../events, see
// styx/api/dashboard/jobs.py), and submit the filters' form when one changes. Everything else
// is htmx attributes. No inline script anywhere: the pages' CSP allows only this origin's files.
(function () {
  "use strict";
  // The most lines a followed log keeps on the page (the raw log has them all).
  const MAX_LINES = 20000;

  function follow(pre) {
    const multi = pre.classList.contains("multi");
    const state = document.getElementById("follow-state");
    const lastOf = new Map(); // rank -> its last line element, for a line that arrives in parts
    let dropped = false;

    function addLine(rank, text) {
      const line = document.createElement("span");
      line.className = "line r" + (rank % 8);
      line.dataset.rank = rank;
      if (multi) {
        const mark = document.createElement("span");
        mark.className = "rank";
        mark.textContent = rank;
        line.appendChild(mark);
      }
      line.appendChild(document.createTextNode(text));
      pre.appendChild(line);
      lastOf.set(rank, line);
      if (pre.childElementCount > MAX_LINES) {
        pre.removeChild(pre.firstElementChild);
        if (!dropped) {
          dropped = true;
          state.textContent = "following (earlier lines dropped: see raw)";
        }
      }
    }

    function setStatus(status) {
      const badge = document.getElementById("job-status");
      if (badge) {
        badge.textContent = status;
        badge.className = "status s-" + status.toLowerCase();
      }
    }

    const source = new EventSource(pre.dataset.follow);
    source.onopen = function () { if (!dropped) state.textContent = "following"; };
    source.onerror = function () { state.textContent = "reconnecting…"; };
    source.addEventListener("status", function (e) { setStatus(JSON.parse(e.data).status); });
    source.addEventListener("log", function (e) {
      const piece = JSON.parse(e.data);
      const stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 30;
      const parts = piece.text.split("\n"); // the last part is "" or a line still going on
      parts.forEach(function (part, i) {
        const text = i < parts.length - 1 ? part + "\n" : part;
        if (!text) return;
        const last = lastOf.get(piece.rank);
        if (i === 0 && piece.continues && last) {
          last.appendChild(document.createTextNode(text));
        } else {
          addLine(piece.rank, text);
        }
      });
      if (stick) pre.scrollTop = pre.scrollHeight;
    });
    source.addEventListener("busy", function (e) {
      source.close();
      state.textContent = JSON.parse(e.data).detail;
    });
    source.addEventListener("end", function (e) {
      source.close();
      const end = JSON.parse(e.data);
      setStatus(end.status);
      state.textContent = "finished: " + end.status;
      pre.dataset.ended = end.status;
      if (window.htmx) window.htmx.trigger(document.body, "styx:refresh");
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    const pre = document.querySelector("pre[data-follow]");
    if (pre) follow(pre);
    document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
      select.addEventListener("change", function () { select.form.submit(); });
    });
  });
})();
