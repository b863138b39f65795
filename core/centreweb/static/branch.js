/* One branch's live feed on the centre: today's visits and the branch's state come again over
   Server-Sent Events when they change; rows are built with textContent only. */
"use strict";
(function () {
  var page = document.querySelector(".branch-page");
  if (!page || !window.EventSource || !page.getAttribute("data-events")) { return; }
  var words = JSON.parse(page.getAttribute("data-words") || "{}");
  var live = page.querySelector(".live-state");

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }

  function row(v) {
    var tr = el("tr", "kind-" + v.kind);
    tr.setAttribute("data-visit", v.visit_id);
    var told = (v.told || []).map(function (t) {
      return t.recipient_id + " (" + t.state + (t.acknowledged_time ? " " + t.acknowledged_time : "") + ")";
    }).join(", ");
    var ack = v.acknowledged_time ? v.acknowledged_time + " " + (v.acknowledged_by || "") : "";
    [[v.time, "nowrap"], [v.kind_word], [v.tier_word], [v.customer_no || "", "nowrap"], [v.name, "name"],
     [v.reader_id || "", "name"], [told, "name"], [ack, "nowrap"]].forEach(function (c) {
      tr.appendChild(el("td", c[1] || null, c[0]));
    });
    return tr;
  }

  function render(data) {
    var body = page.querySelector("tbody.visits");
    var fresh = el("tbody", "visits");
    data.visits.forEach(function (v) { fresh.appendChild(row(v)); });
    if (!data.visits.length) {
      var tr = el("tr", "none");
      var td = el("td", "muted", words.none);
      td.colSpan = 8;
      tr.appendChild(td);
      fresh.appendChild(tr);
    }
    body.parentNode.replaceChild(fresh, body);
    var b = data.branch;
    if (b) {
      var head = page.querySelector(".branch-head");
      head.className = "branch-head state-" + b.state;
      head.querySelector(".branch-state").lastChild.textContent = " " + b.state_word;
      head.querySelector(".mark").textContent = b.state_mark;
      head.querySelector(".heartbeat").textContent = b.heartbeat_text;
    }
    page.setAttribute("data-updated", String(data.at));
  }

  var source = new EventSource(page.getAttribute("data-events"));
  source.addEventListener("open", function () { live.textContent = words.live; });
  source.addEventListener("error", function () { live.textContent = words.reconnecting; });
  source.addEventListener("feed", function (e) { render(JSON.parse(e.data)); });
  source.addEventListener("ended", function () { source.close(); live.textContent = words.ended; });
})();
