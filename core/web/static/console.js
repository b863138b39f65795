/* vipsense console: the current customer, the strip of earlier ones, details, look-up, history and
   acknowledging, kept live by one EventSource.  Data never goes through innerHTML: every element is
   made with createElement and filled with textContent, so a customer field holding markup stays text.
   Every text it shows goes through gettext (/i18n/catalogue.js, loaded first): the page's language. */
"use strict";

(function () {
  const root = document.getElementById("console");
  if (!root) return;
  const cfg = root.dataset;
  const me = cfg.user;
  const STRIP = 6;
  let visits = []; // newest first, masked, as the server sent them

  const $ = (id) => document.getElementById(id);
  const format = gettext.format;
  const lang = document.documentElement.lang || undefined;
  //: the branch's time zone (<html data-zone>): staff read the branch's clock, not the browser's
  const zone = document.documentElement.dataset.zone || undefined;

  // codes the server sends, as people read them, in the core's own words for them (the profile's
  // tier names, vipsense.model's labels), so that a pushed arrival reads as the server's pages do.
  // The server's text wins where it sends one: tier_name on an item, or the page's data-tier-names
  // ({"gold": "金卡", ...} in the viewer's language: a bank's own tier names, which a pushed arrival
  // shared by viewers of several languages cannot carry)
  const TIERS = Object.assign(
    {
      standard: gettext("Standard"),
      gold: gettext("Gold"),
      platinum: gettext("Platinum"),
      diamond: gettext("Diamond"),
    },
    cfg.tierNames ? JSON.parse(cfg.tierNames) : {},
  );
  const KINDS = {
    greeted: gettext("greeted"),
    rejected: gettext("rejected"),
    suspect: gettext("suspect"),
    suppressed: gettext("re-entry, not notified"),
    unknown: gettext("unknown tag"),
    unresolved: gettext("unresolved"),
  };
  const REASONS = {
    lost: gettext("card reported lost"),
    revoked: gettext("card revoked"),
    expired: gettext("card expired"),
    not_yet_valid: gettext("card not yet valid"),
    wrong_branch: gettext("card not valid at this branch"),
    tid_mismatch: gettext("chip ID (TID) differs from the enrolled one: possibly cloned"),
    too_fast: gettext("seen at another branch too recently: possibly cloned"),
  };
  const DELIVERY = {
    delivered: gettext("delivered"),
    acknowledged: gettext("acknowledged"),
    retrying: gettext("retrying"),
    failed: gettext("failed"),
    expired: gettext("expired"),
  };
  const label = (table, code) => (code ? table[code] || code : "");
  const tierText = (code, name) => name || label(TIERS, code);
  const names = (list) => new Intl.ListFormat(lang, { type: "conjunction" }).format(list);

  function kindText(kind, reason) {
    if (!reason) return label(KINDS, kind);
    return format(gettext("{kind} ({reason})"), { kind: label(KINDS, kind), reason: label(REASONS, reason) });
  }

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  let clockFormat;
  try {
    clockFormat = new Intl.DateTimeFormat(lang, { timeZone: zone, hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
  } catch (e) {
    // a zone this browser does not know: its own
    clockFormat = new Intl.DateTimeFormat(lang, { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
  }

  function clock(unix) {
    return unix ? clockFormat.format(new Date(unix * 1000)) : "";
  }

  function displayName(v) {
    if (v.customer) return v.customer.name;
    return v.customer_no ? format(gettext("Customer {customer_no}"), { customer_no: v.customer_no }) : gettext("Unknown card");
  }

  function kindNote(v) {
    if (v.kind === "rejected") return format(gettext("Card rejected: {reason}"), { reason: label(REASONS, v.reason) || gettext("invalid") });
    if (v.kind === "suspect") return format(gettext("Suspect card: {reason}"), { reason: label(REASONS, v.reason) || gettext("check") });
    if (v.kind === "unresolved") return gettext("Card seen, identity stores not answering: look out for the customer");
    return "";
  }

  function photoUrl(v) {
    return v.customer ? v.customer.photo_url : "";
  }

  async function call(url, options) {
    const opts = Object.assign({ credentials: "same-origin" }, options || {});
    opts.headers = Object.assign({ Accept: "application/json" }, opts.headers || {});
    if (opts.method === "POST") opts.headers["X-CSRF-Token"] = cfg.csrf;
    const response = await fetch(url, opts);
    let body = {};
    try {
      body = await response.json();
    } catch (e) {
      body = { error: format(gettext("unexpected answer ({status})"), { status: response.status }) };
    }
    return { status: response.status, ok: response.ok, body: body };
  }

  // -- current customer and strip ------------------------------------------------------------------

  function renderCurrent() {
    const v = visits[0];
    $("cur-empty").hidden = !!v;
    $("cur-card").hidden = !v;
    $("current").classList.toggle("empty", !v);
    if (!v) return;
    const c = v.customer || {};
    $("current").dataset.visitId = v.visit_id;
    $("current").dataset.kind = v.kind;
    $("cur-name").textContent = displayName(v);
    const note = kindNote(v);
    $("cur-alert").hidden = !note;
    $("cur-alert").textContent = note;
    $("cur-time").textContent = clock(v.arrived_unix);
    $("cur-no").textContent = v.customer_no || "-";
    $("cur-id").textContent = c.id_number || "-";
    $("cur-company").textContent = c.company || "-";
    $("cur-tier").textContent = tierText(v.tier || c.tier, v.tier_name || c.tier_name) || "-";
    $("cur-business").textContent = c.usual_business || "-";
    const img = $("cur-photo");
    const url = photoUrl(v);
    img.hidden = !url;
    if (url && img.getAttribute("src") !== url) img.setAttribute("src", url);
    renderAck(v);
  }

  function renderAck(v) {
    const btn = $("ack-btn");
    const state = $("ack-state");
    const told = (v.told || []).includes(me);
    const done = (v.acknowledged_by || []).includes(me);
    btn.hidden = cfg.mayAck !== "yes" || !told || done;
    btn.disabled = false;
    $("current").dataset.ack = done ? "yes" : "no";
    if (done) state.textContent = gettext("Acknowledged ✓");
    else if (!told) state.textContent = (v.acknowledged_by || []).length ? format(gettext("Acknowledged by {names}"), { names: names(v.acknowledged_by) }) : "";
    else state.textContent = "";
  }

  function renderStrip() {
    const list = $("strip");
    list.replaceChildren();
    for (const v of visits.slice(1, STRIP + 1)) {
      const item = el("li");
      const button = el("button", null, "strip-item kind-" + v.kind);
      button.type = "button";
      button.dataset.visitId = v.visit_id;
      const url = photoUrl(v);
      if (url) {
        const img = el("img", null, "photo small");
        img.alt = "";
        img.width = 56;
        img.height = 56;
        img.src = url;
        button.append(img);
      }
      button.append(el("span", displayName(v), "strip-name"), el("span", clock(v.arrived_unix), "strip-time"));
      button.addEventListener("click", () => showVisit(v.visit_id));
      item.append(button);
      list.append(item);
    }
  }

  function render() {
    renderCurrent();
    renderStrip();
  }

  // -- details and unmask ----------------------------------------------------------------------------

  function fieldList(pairs) {
    const dl = el("dl", null, "customer-fields");
    for (const [name, value, cls] of pairs) {
      dl.append(el("dt", name));
      const dd = el("dd", value === null || value === undefined || value === "" ? "-" : value);
      if (cls) dd.className = cls;
      dl.append(dd);
    }
    return dl;
  }

  function customerFields(c) {
    return [
      [gettext("Name"), c.name, "d-name"],
      [gettext("Customer no."), c.customer_no, "d-no"],
      [gettext("ID number"), c.id_number, "d-id"],
      [gettext("Mobile"), c.mobile, "d-mobile"],
      [gettext("Company"), c.company, "d-company"],
      [gettext("Tier"), tierText(c.tier, c.tier_name), "d-tier"],
      [gettext("Usual business"), c.usual_business, "d-business"],
      [gettext("Client manager"), c.client_manager, "d-cm"],
    ];
  }

  function openDetails(nodes, customerNo) {
    const body = $("details-body");
    body.replaceChildren(...nodes);
    $("details").hidden = false;
    $("details").dataset.customerNo = customerNo || "";
    const form = $("unmask-form");
    if (form) form.hidden = !customerNo;
    if ($("unmask-error")) $("unmask-error").textContent = "";
    $("details").scrollIntoView({ block: "nearest" });
  }

  async function showVisit(visitId) {
    const r = await call("/console/visit/" + encodeURIComponent(visitId));
    if (!r.ok) return openDetails([el("p", r.body.error || gettext("not available"), "error")], "");
    const v = r.body.visit;
    const nodes = [el("p", clock(v.arrived_unix) + " · " + kindText(v.kind, v.reason), "muted")];
    if (v.customer) {
      const img = el("img", null, "photo");
      img.alt = "";
      img.width = 128;
      img.height = 128;
      img.src = v.customer.photo_url;
      nodes.push(img, fieldList(customerFields(v.customer)));
    }
    const told = (v.responses || []).map((t) => format(gettext("{staff}: {state}"), { staff: t.staff_id, state: label(DELIVERY, t.state) }));
    nodes.push(el("p", format(gettext("Told: {names}"), { names: told.length ? names(told) : gettext("nobody") }), "muted"));
    openDetails(nodes, v.customer ? v.customer.customer_no : "");
  }

  async function showCustomer(customerNo) {
    const r = await call("/console/customer/" + encodeURIComponent(customerNo));
    if (!r.ok) return openDetails([el("p", r.body.error || gettext("not available"), "error")], "");
    const c = r.body.customer;
    const img = el("img", null, "photo");
    img.alt = "";
    img.width = 128;
    img.height = 128;
    img.src = c.photo_url;
    openDetails([img, fieldList(customerFields(c))], c.customer_no);
  }

  async function unmask(event) {
    event.preventDefault();
    const customerNo = $("details").dataset.customerNo;
    const reason = $("unmask-reason").value.trim();
    const r = await call("/console/customer/" + encodeURIComponent(customerNo) + "/unmask", {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ reason: reason }),
    });
    if (!r.ok) {
      $("unmask-error").textContent = r.body.error || gettext("refused");
      return;
    }
    const body = $("details-body");
    const id = body.querySelector(".d-id");
    const mobile = body.querySelector(".d-mobile");
    if (id) id.textContent = r.body.unmasked.id_number || "-";
    if (mobile) mobile.textContent = r.body.unmasked.mobile || "-";
    $("unmask-error").textContent = "";
  }

  // -- acknowledge -----------------------------------------------------------------------------------

  async function acknowledge() {
    const v = visits[0];
    if (!v) return;
    const btn = $("ack-btn");
    btn.disabled = true;
    const r = await call("/console/ack/" + encodeURIComponent(v.visit_id), { method: "POST" });
    if (r.ok || r.status === 409) {
      markAcknowledged(v.visit_id, me);
    } else {
      btn.disabled = false;
      $("ack-state").textContent = r.body.error || gettext("could not acknowledge");
    }
  }

  function markAcknowledged(visitId, staffId) {
    const v = visits.find((x) => x.visit_id === visitId);
    if (!v) return;
    v.acknowledged_by = v.acknowledged_by || [];
    if (!v.acknowledged_by.includes(staffId)) v.acknowledged_by.push(staffId);
    if (visits[0] === v) renderAck(v);
  }

  // -- look-up and history --------------------------------------------------------------------------

  async function lookup(event) {
    event.preventDefault();
    const out = $("lookup-result");
    const r = await call(cfg.lookupUrl, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ q: $("lookup-q").value.trim(), reason: $("lookup-reason").value.trim() }),
    });
    out.replaceChildren();
    if (r.status === 404) return out.append(el("p", gettext("No customer matches."), "muted"));
    if (!r.ok) return out.append(el("p", r.body.error || gettext("look-up failed"), "error"));
    for (const c of r.body.customers) {
      const button = el("button", c.name + " · " + c.customer_no + " · " + (tierText(c.tier, c.tier_name) || "-"), "lookup-hit");
      button.type = "button";
      button.dataset.customerNo = c.customer_no;
      button.addEventListener("click", () => showCustomer(c.customer_no));
      out.append(button);
    }
  }

  async function history(event) {
    if (event) event.preventDefault();
    const params = new URLSearchParams({ date: $("hist-date").value, from: $("hist-from").value, to: $("hist-to").value });
    const r = await call(cfg.visitsUrl + "?" + params.toString());
    const tbody = $("history-body");
    $("history-error").textContent = "";
    tbody.replaceChildren();
    if (!r.ok) {
      $("history-error").textContent = r.body.error || gettext("search failed");
      return;
    }
    for (const v of r.body.visits) {
      const tr = el("tr");
      tr.dataset.visitId = v.visit_id;
      const name = el("td");
      const link = el("button", displayName(v), "link");
      link.type = "button";
      link.addEventListener("click", () => showVisit(v.visit_id));
      name.append(link);
      tr.append(
        el("td", clock(v.arrived_unix)),
        name,
        el("td", v.customer_no || "-"),
        el("td", tierText(v.tier, v.tier_name) || "-"),
        el("td", (v.customer && v.customer.company) || "-"),
        el("td", kindText(v.kind, v.reason)),
        el("td", names(v.acknowledged_by || []) || "-"),
      );
      tbody.append(tr);
    }
    if (!r.body.visits.length) {
      const tr = el("tr");
      const td = el("td", gettext("No visits in this range."), "muted");
      td.colSpan = 7;
      tr.append(td);
      tbody.append(tr);
    }
    $("history").dataset.count = String(r.body.visits.length);
  }

  // -- the live stream -------------------------------------------------------------------------------

  function setLive(state, text) {
    const node = $("live-state");
    node.className = "state-" + state;
    node.textContent = text;
    document.body.dataset.sse = state === "connected" ? "open" : state;
  }

  function connect() {
    const source = new EventSource(cfg.eventsUrl);
    source.addEventListener("open", () => setLive("connected", gettext("live")));
    source.addEventListener("error", () => setLive("connecting", gettext("reconnecting…")));
    source.addEventListener("snapshot", (e) => {
      visits = JSON.parse(e.data).visits;
      render();
      setLive("connected", gettext("live"));
    });
    source.addEventListener("arrival", (e) => {
      const v = JSON.parse(e.data);
      const known = visits.findIndex((x) => x.visit_id === v.visit_id);
      if (known >= 0) {
        // an unresolved arrival that a store has now answered for: the same visit, judged
        if (visits[known].kind !== "unresolved") return;
        visits[known] = v;
        render();
        return;
      }
      visits.unshift(v);
      visits = visits.slice(0, STRIP + 1);
      render();
    });
    source.addEventListener("acknowledged", (e) => {
      const a = JSON.parse(e.data);
      markAcknowledged(a.visit_id, a.staff_id);
    });
    source.addEventListener("alert", (e) => {
      // a security alert for the branch manager (e.g. look-ups by ID number refused past the limit)
      const a = JSON.parse(e.data);
      const node = $("security-alert");
      node.textContent = format(gettext("Security alert: {message}"), { message: a.message });
      node.hidden = false;
    });
    source.addEventListener("ended", () => {
      // the session ended (logout elsewhere, revoked, too old): stop, and log in again
      source.close();
      window.location.assign("/login?expired=1");
    });
  }

  $("ack-btn").addEventListener("click", acknowledge);
  $("details-close").addEventListener("click", () => {
    $("details").hidden = true;
  });
  if ($("unmask-form")) $("unmask-form").addEventListener("submit", unmask);
  $("lookup-form").addEventListener("submit", lookup);
  $("history-form").addEventListener("submit", history);
  connect();
})();
