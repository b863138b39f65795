// The status page refreshes its tables from /api/status every few seconds.  Only textContent is
// used: whatever a device or plugin reports is shown as text, never parsed as HTML.  Its own words go
// through gettext (/i18n/catalogue.js, loaded first) and its times are on the branch's clock.
"use strict";
(function () {
  const root = document.getElementById("status");
  if (!root) return;
  const api = root.dataset.api;
  const every = (parseInt(root.dataset.refresh, 10) || 5) * 1000;

  const format = gettext.format;
  const lang = document.documentElement.lang || undefined;
  //: the branch's time zone (<html data-zone>): the status is read on the branch's clock
  const zone = document.documentElement.dataset.zone || undefined;

  // the states the branch reports, as people read them; a state not listed shows as sent
  const STATES = {
    ok: gettext("ok"),
    down: gettext("down"),
    stale: gettext("stale"),
    unknown: gettext("unknown"),
    starting: gettext("starting"),
    connected: gettext("connected"),
    disconnected: gettext("disconnected"),
    failed: gettext("failed"),
    finished: gettext("finished"),
    stopped: gettext("stopped"),
    ready: gettext("ready"),
    degraded: gettext("degraded"),
    unavailable: gettext("unavailable"),
    stuck: gettext("stuck"),
    appeared: gettext("online"),
    updated: gettext("online"),
    gone: gettext("offline"),
    loaded: gettext("loaded"),
    blocked: gettext("blocked"),
  };
  const ROLES = {
    lobby_manager: gettext("lobby manager"),
    client_manager: gettext("client manager"),
    branch_manager: gettext("branch manager"),
    head_office: gettext("head office"),
    card_issuer: gettext("card issuer"),
    admin: gettext("administrator"),
    auditor: gettext("auditor"),
  };
  const label = (table, code) => (code ? table[code] || code : "");
  const count = (n) => (typeof n === "number" ? new Intl.NumberFormat(lang).format(n) : n); // 1,234 as the server writes it

  function formatter(options) {
    try {
      return new Intl.DateTimeFormat(lang, Object.assign({ timeZone: zone, hourCycle: "h23" }, options));
    } catch (e) {
      return new Intl.DateTimeFormat(lang, Object.assign({ hourCycle: "h23" }, options)); // a zone this browser lacks
    }
  }
  const timeOfDay = formatter({ hour: "2-digit", minute: "2-digit", second: "2-digit" });
  const dayAndTime = formatter({ year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  const dayOnly = formatter({ year: "numeric", month: "2-digit", day: "2-digit" });

  function clock(t) {
    if (!t) return gettext("never");
    const d = new Date(t * 1000);
    if (dayOnly.format(d) === dayOnly.format(new Date())) return timeOfDay.format(d); // today, on the branch's calendar
    return dayAndTime.format(d);
  }
  function ago(t, now) {
    const s = Math.max(0, Math.floor(now - t));
    if (s < 60) return format(gettext("{n} s"), { n: s });
    if (s < 3600) return format(gettext("{n} min"), { n: Math.floor(s / 60) });
    if (s < 86400) return format(gettext("{h} h {m} min"), { h: Math.floor(s / 3600), m: Math.floor((s % 3600) / 60) });
    return format(gettext("{n} d"), { n: Math.floor(s / 86400) });
  }
  function since(item, now) {
    let text = label(STATES, item.state);
    if (item.since) {
      text = format(gettext("{state} since {time} ({ago} ago)"), { state: text, time: clock(item.since), ago: ago(item.since, now) });
    }
    return item.reason ? format(gettext("{state}: {reason}"), { state: text, reason: item.reason }) : text;
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
  function held(h) {
    const state = h.state === "waiting" ? gettext("waiting for a store that is starting")
      : gettext("card seen, identity stores not answering");
    return h.present ? state : format(gettext("{state} (left the door)"), { state: state });
  }
  function errors(x) { return x.errors + (x.last_error ? " " + x.last_error : ""); }

  function show(s) {
    const now = s.generated_at;
    const overall = document.getElementById("overall");
    overall.textContent = label(STATES, s.state);
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
      (h) => cell(held(h), "state-" + h.state),
    ], gettext("none: every card at the door was looked up"));
    fill("notifiers", s.notifiers, [
      (n) => cell(n.id), (n) => cell(n.type), (n) => cell(since(n, now), "state-" + n.state),
      (n) => cell(n.pending), (n) => cell(n.retrying), (n) => cell(n.delivered), (n) => cell(n.failed),
      (n) => cell(n.expired), (n) => cell(n.last_error),
    ]);
    fill("pdas", s.pdas, [
      (p) => cell(p.name), (p) => cell(p.staff), (p) => cell(label(ROLES, p.role)),
      (p) => cell(label(STATES, p.state), "state-" + p.state), (p) => cell(clock(p.last_seen)),
    ], gettext("none discovered"));
    fill("plugins", s.plugins, [
      (p) => cell(p.name), (p) => cell(p.version), (p) => cell(label(STATES, p.state), "state-" + p.state),
      (p) => cell([p.error, ...Object.entries(p.hook_errors).map(([h, e]) => format(gettext("{hook}: {count} × {error}"), { hook: h, count: e.count, error: e.last_error }))].filter(Boolean).join(" ")),
    ]);
    for (const td of document.querySelectorAll("#today td[data-key]")) td.textContent = count(s.today[td.dataset.key]);
    document.getElementById("reads-rate").textContent = s.pipeline.reads_per_s;
    document.getElementById("reads-total").textContent = count(s.pipeline.reads);
    fill("web", [s.web], [
      (w) => cell(w.type), (w) => cell(since(w, now), "state-" + w.state), (w) => cell(w.url), (w) => cell(w.threads),
    ]);
    const centre = document.getElementById("centre-line");
    if (centre && s.centre && s.centre.text) { centre.textContent = s.centre.text; centre.className = "state-" + s.centre.state; }
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
