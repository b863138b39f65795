/* The centre's live board: the rows come again over Server-Sent Events (/board/events) whenever they
   change, and the grid is rebuilt with textContent only: a branch or customer name is never HTML. */
"use strict";
(function () {
  var page = document.querySelector(".board-page");
  if (!page || !window.EventSource) { return; }
  var words = JSON.parse(page.getAttribute("data-words") || "{}");
  var branchUrl = page.getAttribute("data-branch-url");
  var live = page.querySelector(".live-state");

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }

  function counts(b) {
    var s = el("span", "counts");
    s.appendChild(el("b", "arrivals", b.arrivals_today));
    s.appendChild(document.createTextNode(" " + words.arrivals + " · " + words.greeted + " "));
    s.appendChild(el("b", null, b.greeted));
    s.appendChild(document.createTextNode(" · " + words.rejected + " "));
    s.appendChild(el("b", null, b.rejected));
    s.appendChild(document.createTextNode(" · " + words.suspect + " "));
    s.appendChild(el("b", null, b.suspect));
    return s;
  }

  function card(b) {
    var li = el("li", "branch state-" + b.state + (b.revoked ? " revoked" : ""));
    li.setAttribute("data-branch", b.branch_id);
    var a = el("a", "branch-name", b.name);
    a.href = branchUrl.replace("__ID__", encodeURIComponent(b.branch_id));
    li.appendChild(a);
    var st = el("span", "branch-state");
    var mark = el("span", "mark", b.state_mark);
    mark.setAttribute("aria-hidden", "true");
    st.appendChild(mark);
    st.appendChild(document.createTextNode(" " + b.state_word));
    li.appendChild(st);
    li.appendChild(el("span", "heartbeat muted", b.heartbeat_text));
    li.appendChild(counts(b));
    li.appendChild(el("span", "last", b.last_arrival_text));
    var dev = [b.devices_text].concat(b.devices_down_text || []).join(" · ");
    li.appendChild(el("span", "devices" + (b.devices_down ? " warn" : ""), dev));
    if (b.clock_text) { li.appendChild(el("span", "clock warn", "⚠ " + b.clock_text)); }
    if (b.backlog_text) { li.appendChild(el("span", "backlog", b.backlog_text)); }
    if (b.audit_alarm_text) {
      var alarm = el("strong", "audit-alarm warn", "⚠ " + b.audit_alarm_text);
      alarm.title = b.audit_alarm;
      li.appendChild(alarm);
    }
    if (b.revoked_text) { li.appendChild(el("span", "revoked-text warn", b.revoked_text)); }
    return li;
  }

  function render(data) {
    var grid = page.querySelector("ul.board");
    var fresh = el("ul", "board");
    fresh.setAttribute("role", "list");
    data.branches.forEach(function (b) { fresh.appendChild(card(b)); });
    if (!data.branches.length) { fresh.appendChild(el("li", "empty muted", words.no_branch)); }
    grid.parentNode.replaceChild(fresh, grid);
    page.querySelector(".board-summary").textContent = data.summary;
    page.setAttribute("data-updated", String(data.at));
  }

  var source = new EventSource(page.getAttribute("data-events"));
  source.addEventListener("open", function () { live.textContent = words.live; });
  source.addEventListener("error", function () { live.textContent = words.reconnecting; });
  source.addEventListener("board", function (e) { render(JSON.parse(e.data)); });
  source.addEventListener("ended", function () { source.close(); live.textContent = words.ended; });
})();
