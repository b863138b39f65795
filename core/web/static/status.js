// The status page refreshes its tables from /api/status every few seconds.  Only textContent is
// used: whatever a device or plugin reports is shown as text, never parsed as HTML.
"use strict";
(function () {
  const root = document.getElementById("status");
  if (!root) return;
  const api = root.dataset.api;
  const every = (parseInt(root.dataset.refresh, 10) || 5) * 1000;

  function pad(n) { return String(n).padStart(2, "0"); }
  function clock(t) {
    if (!t) return "never";
    const d = new Date(t * 1000), now = new Date();
    const hms = pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
    if (d.toDateString() === now.toDateString()) return hms;
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + hms.slice(0, 5);
  }
  function ago(t, now) {
    const s = Math.max(0, Math.floor(now - t));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min";
    if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
    return Math.floor(s / 86400) + " d";
  }
  function since(item, now) {
    let text = item.state;
    if (item.since) text += " since " + clock(item.since) + " (" + ago(item.since, now) + " ago)";
    return item.reason ? text + ": " + item.reason : text;
  }
  function ms(v) { return v === null || v === undefined ? "" : v.toFixed(1); }
  function cell(text, cls) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    if (cls) td.className = cls;
    return td;
  }
  function fill(section, rows, columns, empty) {
    const body = document.querySelector("#" + section + " tbody");
    if (!body) return;
    const fresh = document.createElement("tbody");
    for (const row of rows) {
      const tr = document.createElement("tr");
      for (const col of columns) tr.appendChild(col(row));
      fresh.appendChild(tr);
    }
    if (!rows.length && empty) {
      const td = cell(empty, "muted");
      td.colSpan = columns.length;
      fresh.appendChild(document.createElement("tr")).appendChild(td);
    }
    body.replaceWith(fresh);
  }
  function errors(x) { return x.errors + (x.last_error ? " " + x.last_error : ""); }

  function show(s) {
    const now = s.generated_at;
    const overall = document.getElementById("overall");
    overall.textContent = s.state;
    overall.className = "state-" + s.state;
    document.getElementById("generated").textContent = clock(now);
    const problems = document.getElementById("problems");
    problems.replaceChildren(...s.problems.map((p) => {
      const li = document.createElement("li");
      li.textContent = p;
      return li;
    }));
    fill("readers", s.readers, [
      (r) => cell(r.id), (r) => cell(r.type), (r) => cell(since(r, now), "state-" + r.state),
      (r) => cell(r.reads_per_s), (r) => cell(clock(r.last_read_at)), (r) => cell(errors(r)),
    ]);
    fill("stores", s.stores, [
      (x) => cell(x.id), (x) => cell(x.type), (x) => cell(since(x, now), "state-" + x.state),
      (x) => cell(x.lookups), (x) => cell(ms(x.latency_ms_p99)), (x) => cell(errors(x)),
    ]);
    fill("held", s.held || [], [
      (h) => cell("…" + h.epc.slice(-4)), (h) => cell(h.reader_id), (h) => cell(clock(h.arrived_at)),
      (h) => cell((h.state === "waiting" ? "waiting for a store that is starting"
        : "card seen, identity stores not answering") + (h.present ? "" : " (left the door)"), "state-" + h.state),
    ], "none: every card at the door was looked up");
    fill("notifiers", s.notifiers, [
      (n) => cell(n.id), (n) => cell(n.type), (n) => cell(since(n, now), "state-" + n.state),
      (n) => cell(n.pending), (n) => cell(n.retrying), (n) => cell(n.delivered), (n) => cell(n.failed),
      (n) => cell(n.expired), (n) => cell(n.last_error),
    ]);
    fill("pdas", s.pdas, [
      (p) => cell(p.name), (p) => cell(p.staff), (p) => cell(p.role), (p) => cell(p.state, "state-" + p.state),
      (p) => cell(clock(p.last_seen)),
    ], "none discovered");
    fill("plugins", s.plugins, [
      (p) => cell(p.name), (p) => cell(p.version), (p) => cell(p.state, "state-" + p.state),
      (p) => cell(p.error + Object.entries(p.hook_errors).map(([h, e]) => " " + h + ": " + e.count + " × " + e.last_error).join("")),
    ]);
    for (const td of document.querySelectorAll("#today td[data-key]")) td.textContent = s.today[td.dataset.key];
    document.getElementById("reads-rate").textContent = s.pipeline.reads_per_s;
    document.getElementById("reads-total").textContent = s.pipeline.reads;
    fill("web", [s.web], [
      (w) => cell(w.type), (w) => cell(since(w, now), "state-" + w.state), (w) => cell(w.url), (w) => cell(w.threads),
    ]);
    root.dataset.updated = String(now);
  }

  async function refresh() {
    try {
      const response = await fetch(api, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (response.status === 401) { window.location.reload(); return; }  // session ended: to the login page
      if (response.ok) { show(await response.json()); root.classList.remove("stale"); }
      else root.classList.add("stale");
    } catch (e) {
      root.classList.add("stale");  // the branch box is unreachable: keep the last figures, marked
    }
    setTimeout(refresh, every);
  }
  setTimeout(refresh, every);
})();
