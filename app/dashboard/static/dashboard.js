// The oversight workbench. Everything it shows comes from the guarded API with the bearer
// token of the signed-in officer, kept in this tab's sessionStorage only (a bearer header,
// not a cookie: a page on another site cannot send a request as the officer, so there is
// no cross-site request to forge). Data goes on the page as text, never as HTML. No
// library, nothing loaded from elsewhere. The view and its filters live in the URL.
"use strict";

(() => {
  const TOKEN_KEY = "access-audit.token";
  const QUEUE_KEY = "access-audit.queue";
  const SVG = "http://www.w3.org/2000/svg"; // an XML namespace name, not a resource
  const READERS = ["oversight", "auditor"];
  const VIEWS = ["board", "queue", "events", "event", "policies", "transparency"];
  const ACCESS_KINDS = ["decision", "report"];
  const $ = (id) => document.getElementById(id);
  const app = { roles: new Set(), zone: "UTC", facilities: new Map(), version: null };
  let lastExportId = null;

  const token = () => sessionStorage.getItem(TOKEN_KEY);
  const can = (role) => app.roles.has(role);

  // --- talking to the API --------------------------------------------------------------

  class SignedOut extends Error {}

  async function api(path, init = {}) {
    const headers = { Authorization: "Bearer " + token(), ...(init.headers || {}) };
    const response = await fetch(path, { ...init, headers });
    if (response.status === 401) {
      signOut("Your session has ended: sign in again.");
      throw new SignedOut();
    }
    return response;
  }

  async function problem(response) {
    try {
      const body = await response.json();
      if (typeof body.detail === "string") return body.detail;
      return body.detail.map((e) => e.loc.slice(1).join(".") + ": " + e.msg).join("; ");
    } catch {
      return response.status + " " + response.statusText;
    }
  }

  async function getJSON(path) {
    const response = await api(path);
    if (!response.ok) throw new Error(await problem(response));
    return response.json();
  }

  async function getText(path) {
    const response = await fetch(path);
    if (!response.ok) throw new Error(path + ": " + response.status);
    return response.text();
  }

  // --- building the page ---------------------------------------------------------------

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function href(query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      if (v !== undefined && v !== null && v !== "") params.set(k, v);
    }
    return "/dashboard?" + params;
  }

  function link(text, query, label) {
    const a = el("a", text);
    a.href = href(query);
    if (label) a.setAttribute("aria-label", label);
    return a;
  }

  const eventLink = (seq) => link(seq, { view: "event", seq }, "event " + seq);
  const count = (n) => Number(n).toLocaleString("en-US");

  function fillTable(table, rows, empty = "none") {
    const body = table.querySelector("tbody");
    body.replaceChildren(...rows);
    if (!rows.length) {
      const tr = el("tr");
      const td = el("td", empty, "empty");
      td.colSpan = table.querySelectorAll("thead th").length || 1;
      tr.append(td);
      body.append(tr);
    }
  }

  function row(cells) {
    const tr = el("tr");
    for (const cell of cells) {
      const td = el("td");
      if (cell instanceof Node) td.append(cell);
      else if (cell && typeof cell === "object" && "num" in cell) {
        td.className = "num";
        td.append(cell.num instanceof Node ? cell.num : count(cell.num));
      } else td.textContent = cell === null || cell === undefined ? "" : String(cell);
      tr.append(td);
    }
    return tr;
  }

  const num = (value) => ({ num: value });
  const words = (code) => (code ? String(code).replaceAll("_", " ") : "");
  const facilityName = (key) => (key ? app.facilities.get(key) || key : "");

  // Times in the mission's zone, named: "2025-10-21 14:14 CDT".
  function when(iso) {
    if (!iso) return "";
    const parts = Object.fromEntries(new Intl.DateTimeFormat("en-US", {
      timeZone: app.zone, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit",
      minute: "2-digit", hourCycle: "h23", timeZoneName: "short",
    }).formatToParts(new Date(iso)).map((p) => [p.type, p.value]));
    return `${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute} ` +
      parts.timeZoneName;
  }

  function pager(container, query, nextCursor, cursorName = "cursor") {
    const nav = container.querySelector(".pager");
    const parts = [];
    if (query[cursorName]) parts.push(link("First page", { ...query, [cursorName]: "" }));
    if (nextCursor) parts.push(link("Next page", { ...query, [cursorName]: nextCursor }));
    nav.replaceChildren(...parts);
  }

  // --- signing in and out --------------------------------------------------------------

  async function signIn(event) {
    event.preventDefault();
    const form = event.target;
    $("sign-in-error").textContent = "";
    const body = new URLSearchParams({
      grant_type: "password",
      username: form.username.value,
      password: form.password.value,
    });
    const response = await fetch("/v1/auth/token", { method: "POST", body });
    if (!response.ok) {
      $("sign-in-error").textContent = response.status === 429
        ? "Too many attempts: wait a few minutes, then try again."
        : "Sign-in failed: check your username and password.";
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, (await response.json()).access_token);
    form.password.value = "";
    await start();
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    app.roles = new Set();
    for (const view of document.querySelectorAll(".view")) view.hidden = true;
    $("nav").hidden = true;
    $("who").hidden = true;
    $("refused").hidden = true;
    $("status").textContent = "";
    $("error").textContent = "";
    $("sign-in-panel").hidden = false;
    $("sign-in-error").textContent = message || "";
  }

  async function start() {
    const me = await getJSON("/v1/auth/me");
    app.roles = new Set(me.roles);
    $("who-name").textContent = me.name + " (" + me.roles.join(", ") + ")";
    $("who").hidden = false;
    $("sign-in-panel").hidden = true;
    if (!READERS.some(can)) {
      $("refused-text").textContent = "You are signed in as " + me.name + " (" +
        (me.roles.join(", ") || "no role") + "). The workbench shows the log to oversight " +
        "officers and auditors only.";
      $("refused").hidden = false;
      return;
    }
    await loadPolicy();
    for (const node of document.querySelectorAll(".auditor-only")) node.hidden = !can("auditor");
    for (const node of document.querySelectorAll(".oversight-only")) {
      node.dataset.allowed = can("oversight") ? "yes" : "no";
    }
    document.querySelector('[data-view="transparency"]').hidden = !can("oversight");
    $("nav").hidden = false;
    await route();
  }

  // The policy in force names the facilities and the mission's time zone.
  async function loadPolicy() {
    const versions = await getJSON("/v1/policies");
    const active = versions.find((v) => v.status === "active") || versions[0];
    if (!active) return;
    const policy = await getJSON("/v1/policies/" + encodeURIComponent(active.version));
    const content = policy.content || {};
    app.version = active.version;
    app.zone = (content.mission && content.mission.timezone) || "UTC";
    app.facilities = new Map(Object.entries(content.facilities || {}).map(
      ([key, f]) => [key, f.name || key]));
    for (const select of document.querySelectorAll("select[data-facilities]")) {
      select.replaceChildren(new Option("All facilities", ""),
        ...[...app.facilities].map(([key, name]) => new Option(name, key)));
    }
    const zone = "Days and times are in the mission's time zone, " + app.zone + ".";
    for (const hint of document.querySelectorAll(".zone-hint")) hint.textContent = zone;
    for (const th of document.querySelectorAll(".when-col")) {
      th.textContent = (th.dataset.label || "when") + " (" + app.zone + ")";
    }
  }

  // --- the URL is the state ------------------------------------------------------------

  const query = () => Object.fromEntries(new URLSearchParams(location.search));

  function go(url, replace = false) {
    history[replace ? "replaceState" : "pushState"](null, "", url);
    route();
  }

  function fillForm(form, values) {
    for (const name of form.dataset.filters.split(" ")) {
      const field = form.elements[name];
      if (field) field.value = values[name] || "";
    }
  }

  function submitForm(event) {
    event.preventDefault();
    const form = event.target;
    const view = form.id.replace("-scope", "");
    const values = { ...query(), view };
    delete values.cursor;
    for (const name of form.dataset.filters.split(" ")) {
      const field = form.elements[name];
      if (field) values[name] = field.value.trim();
    }
    go(href(values));
  }

  async function route() {
    if (!token() || !READERS.some(can)) return;
    const q = query();
    const view = VIEWS.includes(q.view) ? q.view : "board";
    for (const name of VIEWS) $("view-" + name).hidden = name !== view;
    for (const a of $("nav").querySelectorAll("a")) {
      if (a.dataset.view === view) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    $("error").textContent = "";
    $("status").textContent = "Loading…";
    try {
      await SHOW[view](q);
      $("status").textContent = "";
    } catch (error) {
      $("status").textContent = "";
      if (!(error instanceof SignedOut)) $("error").textContent = error.message;
    }
  }

  // --- the board -----------------------------------------------------------------------

  async function defaultPeriod() {
    // The 30 days up to the latest recorded access (today if none): the log of a mission
    // that has ended should not open on an empty month.
    const days = await getJSON("/v1/reports/summary?group_by=day");
    const latest = days.groups.map((g) => g.key.day).filter(Boolean).sort().pop();
    const end = latest ? new Date(latest + "T00:00:00Z") : new Date();
    const start = new Date(end.getTime() - 29 * 86400000);
    return { since: start.toISOString().slice(0, 10), until: end.toISOString().slice(0, 10) };
  }

  async function showBoard(q) {
    if (!q.since || !q.until) {
      go(href({ ...q, view: "board", ...(await defaultPeriod()) }), true);
      return;
    }
    fillForm($("board-scope"), q);
    const scope = { since: q.since, until: q.until, facility: q.facility };
    const params = new URLSearchParams(href(scope).split("?")[1]);
    const [days, denials, flags] = await Promise.all([
      getJSON("/v1/reports/summary?group_by=day&" + params),
      getJSON("/v1/reports/denials?" + params),
      getJSON("/v1/reports/flags?limit=1&" + params),
    ]);
    const accesses = { view: "events", kind: "access", ...scope };
    const total = days.groups.reduce((sum, g) => sum + g.count, 0);
    tile("tile-accesses", total, accesses);
    tile("tile-denied", denials.denied, { ...accesses, decision: "deny" });
    tile("tile-creep", denials.mission_creep.attempts, null, "#creep-title");
    tile("tile-open", flags.open, { view: "queue", status: "open", ...scope });
    tile("tile-follow-up", flags.follow_up, { view: "queue", status: "follow_up", ...scope });
    drawDays(days.groups, scope);
    const deny = { ...accesses, decision: "deny" };
    fillTable($("denials-reason"), denials.by_reason.map((r) => row([
      words(r.reason), num(link(count(r.count), { ...deny, reason: r.reason },
                                count(r.count) + " denials: " + words(r.reason))),
    ])));
    fillTable($("denials-facility"), denials.by_facility.map((f) => row([
      facilityName(f.facility) || "(none)",
      num(link(count(f.count), { ...deny, facility: f.facility || "" },
               count(f.count) + " denials at " + (facilityName(f.facility) || "no facility"))),
    ])));
    fillTable($("denials-actor"), denials.by_actor.map((a) => row([
      a.actor || "(unknown)",
      num(link(count(a.count), { ...deny, actor: a.actor || "" },
               count(a.count) + " denials of " + (a.actor || "unknown actor"))),
    ])));
    fillTable($("creep"), denials.mission_creep.events.slice().reverse().map((e) => row([
      eventLink(e.seq), when(e.occurred_at), e.actor, words(e.action),
      facilityName(e.facility), e.decision,
    ])), "none in this period");
  }

  function tile(id, value, target, anchor) {
    const node = $(id);
    node.querySelector(".value").textContent = count(value);
    node.href = anchor || href(target);
  }

  function dayList(since, until) {
    const days = [];
    for (let d = new Date(since + "T00:00:00Z"); d <= new Date(until + "T00:00:00Z");
         d = new Date(d.getTime() + 86400000)) {
      days.push(d.toISOString().slice(0, 10));
    }
    return days;
  }

  function niceStep(max) {
    const rough = max / 4;
    const power = 10 ** Math.floor(Math.log10(Math.max(1, rough)));
    for (const m of [1, 2, 5, 10]) if (m * power >= rough) return m * power;
    return 10 * power;
  }

  function drawDays(groups, scope) {
    const byDay = new Map(groups.map((g) => [g.key.day, g]));
    const days = dayList(scope.since, scope.until);
    const values = days.map((day) => byDay.get(day) || { count: 0, denied: 0, flagged: 0 });
    const chart = $("per-day");
    const width = Math.max(300, Math.min(chart.clientWidth || 800, 1200));
    const height = 240;
    const pad = { left: 44, right: 8, top: 18, bottom: 40 };
    const max = Math.max(1, ...values.map((g) => g.count));
    const step = niceStep(max);
    const top = Math.ceil(max / step) * step;
    const slot = (width - pad.left - pad.right) / Math.max(1, days.length);
    const scale = (height - pad.top - pad.bottom) / top;
    const base = height - pad.bottom;
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("role", "img");
    const total = values.reduce((s, g) => s + g.count, 0);
    svg.setAttribute("aria-label", `Accesses per day from ${scope.since} to ${scope.until}: ` +
      `${count(total)} in all, at most ${count(max)} in a day. The table below lists every day.`);
    const add = (tag, attrs, text) => {
      const node = document.createElementNS(SVG, tag);
      for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
      if (text !== undefined) node.textContent = text;
      svg.append(node);
      return node;
    };
    for (let v = 0; v <= top; v += step) {
      const y = base - v * scale;
      add("line", { x1: pad.left, y1: y, x2: width - pad.right, y2: y, class: v ? "grid" : "axis" });
      add("text", { x: pad.left - 6, y: y + 4, class: "label end" }, count(v));
    }
    const labelEvery = Math.max(1, Math.ceil(days.length / Math.floor((width - pad.left) / 64)));
    values.forEach((g, i) => {
      const x = pad.left + i * slot + slot * 0.12;
      const w = Math.max(1, slot * 0.76);
      const allowed = (g.count - g.denied) * scale;
      const denied = g.denied * scale;
      add("rect", { x, y: base - allowed - denied, width: w, height: allowed, class: "allowed" });
      add("rect", { x, y: base - denied, width: w, height: denied, class: "denied" });
      if (slot >= 22 && g.count) {
        add("text", { x: x + w / 2, y: base - allowed - denied - 4, class: "label mid small" },
            count(g.count));
      }
      if (i % labelEvery === 0) {
        add("line", { x1: x + w / 2, y1: base, x2: x + w / 2, y2: base + 4, class: "axis" });
        add("text", { x: x + w / 2, y: base + 16, class: "label mid" }, days[i].slice(5));
      }
    });
    add("text", { x: pad.left, y: height - 6, class: "label" },
        "day (" + days[0].slice(0, 4) + ", facility-local) · accesses per day");
    chart.replaceChildren(svg);

    const events = { view: "events", kind: "access", facility: scope.facility };
    fillTable($("days"), days.map((day, i) => {
      const g = values[i];
      const that = { ...events, since: day, until: day };
      return row([
        day,
        num(g.count ? link(count(g.count), that, count(g.count) + " accesses on " + day) : 0),
        num(g.denied ? link(count(g.denied), { ...that, decision: "deny" },
                            count(g.denied) + " denied on " + day) : 0),
        num(g.flagged ? link(count(g.flagged), {
          view: "queue", status: "", since: day, until: day, facility: scope.facility,
        }, count(g.flagged) + " flagged on " + day) : 0),
      ]);
    }));
  }

  // --- exports (auditors) --------------------------------------------------------------

  function save(blob, filename) {
    const url = URL.createObjectURL(blob);
    const a = el("a");
    a.href = url;
    a.download = filename;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  async function exportEvents() {
    const status = $("export-status");
    status.textContent = "Exporting…";
    const q = query();
    const response = await api("/v1/exports/events.csv?" +
      href({ since: q.since, until: q.until, facility: q.facility }).split("?")[1]);
    if (!response.ok) {
      status.textContent = await problem(response);
      return;
    }
    lastExportId = response.headers.get("X-Export-Id");
    save(await response.blob(), "events-" + lastExportId + ".csv");
    status.textContent = "Export " + lastExportId + " downloaded.";
    $("manifest").hidden = false;
  }

  async function downloadManifest() {
    if (!lastExportId) return;
    const response = await api("/v1/exports/" + lastExportId + "/manifest");
    if (!response.ok) {
      $("export-status").textContent = await problem(response);
      return;
    }
    save(await response.blob(), "events-" + lastExportId + ".manifest.json");
  }

  // --- the review queue ----------------------------------------------------------------

  const QUEUE_FILTERS = ["status", "facility", "flag", "actor", "since", "until", "cursor"];

  function reviewState(item) {
    if (!item.latest_review) return "open";
    const d = item.latest_review.disposition;
    return d === "follow_up" ? "in follow-up" : "reviewed: " + d;
  }

  async function showQueue(q) {
    if (!("status" in q)) {
      go(href({ ...q, view: "queue", status: "open" }), true);
      return;
    }
    fillForm($("queue-scope"), q);
    sessionStorage.setItem(QUEUE_KEY, location.search);
    const params = {};
    for (const name of QUEUE_FILTERS) if (q[name]) params[name] = q[name];
    // Open flags oldest first: the longest waiting is reviewed first.
    const report = await getJSON("/v1/reports/flags?limit=25&" + href(params).split("?")[1]);
    const scope = { ...params, cursor: "" };
    $("queue-counts").replaceChildren(
      link(count(report.open) + " open", { view: "queue", ...scope, status: "open" }), " · ",
      link(count(report.follow_up) + " in follow-up",
           { view: "queue", ...scope, status: "follow_up" }), " · ",
      link(count(report.reviewed) + " reviewed", { view: "queue", ...scope, status: "reviewed" }),
    );
    fillTable($("queue"), report.items.map((item) => row([
      eventLink(item.seq), when(item.occurred_at), item.actor, words(item.action),
      facilityName(item.facility), item.flags.map(words).join(", "),
      el("span", reviewState(item), "state " + (item.latest_review ? item.latest_review.disposition : "open")),
    ])), "no flagged events in this state");
    pager($("view-queue"), { view: "queue", ...params }, report.next_cursor);
  }

  // --- events --------------------------------------------------------------------------

  const EVENT_FILTERS = [
    "kind", "decision", "reason", "facility", "actor", "action", "category", "purpose",
    "record_type", "record_id", "flag", "since", "until", "cursor",
  ];

  async function showEvents(q) {
    fillForm($("events-scope"), q);
    const params = {};
    for (const name of EVENT_FILTERS) if (q[name]) params[name] = q[name];
    const extra = ["reason", "action", "category", "purpose", "record_type", "record_id", "flag"]
      .filter((name) => q[name]);
    const more = $("events-more-filters");
    more.replaceChildren();
    if (extra.length) {
      more.append("Also filtered by " + extra.map((n) => words(n) + " " + q[n]).join(", ") + ". ");
      const cleared = { ...q };
      for (const n of [...extra, "cursor"]) delete cleared[n];
      more.append(link("Remove these filters", cleared));
    }
    const page = await getJSON("/v1/events?limit=50&" + href(params).split("?")[1]);
    fillTable($("events"), page.items.map((e) => row([
      eventLink(e.seq), when(e.occurred_at), e.kind, e.actor, words(e.action),
      e.record_id ? e.record_type + " " + e.record_id : "", facilityName(e.facility), e.decision,
      [...e.reasons.map((r) => words(r.code)), ...e.flags.map(words)].join(", "),
    ])), "no events match these filters");
    pager($("view-events"), { view: "events", ...params }, page.next_cursor);
  }

  // --- one event -----------------------------------------------------------------------

  const FIELD_LABELS = [
    ["seq", "Sequence number"], ["kind", "Kind"], ["occurred_at", "Occurred"],
    ["recorded_at", "Recorded"], ["actor", "Actor"], ["actor_roles", "Actor's roles then"],
    ["action", "Action"], ["action_category", "Action category"], ["record_type", "Record type"],
    ["record_id", "Record"], ["facility", "Facility"], ["purpose", "Purpose"],
    ["justification", "Justification"], ["break_glass", "Break glass"],
    ["decision", "Decision"], ["source", "Sent by"], ["client_event_id", "Sender's event id"],
    ["workstation", "Workstation"], ["source_ip", "Sender's address"],
    ["policy_version", "Judged by policy"], ["event_id", "Event id"],
    ["prev_hash", "Previous hash"], ["hash", "Hash"],
  ];

  function fieldValue(event, name) {
    const value = event[name];
    if (value === null || value === undefined || value === "") return el("span", "—", "none");
    if (name === "occurred_at" || name === "recorded_at") return when(value);
    if (name === "actor") return link(value, { view: "events", kind: "access", actor: value });
    if (name === "facility") return facilityName(value);
    if (name === "break_glass") return value ? "yes" : "no";
    if (name === "actor_roles") return value.join(", ") || "none";
    if (name === "action") return words(value);
    if (name === "policy_version") {
      return link(value.slice(0, 19) + "…", { view: "policies", version: value }, "policy " + value);
    }
    if (name === "hash" || name === "prev_hash" || name === "event_id") {
      return el("code", value, "hash");
    }
    return String(value);
  }

  function definitions(list, pairs) {
    list.replaceChildren();
    for (const [label, value] of pairs) {
      const dd = el("dd");
      if (value instanceof Node) dd.append(value);
      else dd.textContent = String(value);
      list.append(el("dt", label), dd);
    }
  }

  function valueNode(value) {
    if (value === null || value === undefined) return el("span", "—", "none");
    if (Array.isArray(value)) return value.map((v) => (typeof v === "object" ? JSON.stringify(v) : v)).join(", ") || "none";
    if (typeof value === "object") {
      const dl = el("dl", null, "fields nested");
      definitions(dl, Object.entries(value).map(([k, v]) => [words(k), valueNode(v)]));
      return dl;
    }
    if (typeof value === "boolean") return value ? "yes" : "no";
    return String(value);
  }

  async function showEvent(q) {
    const seq = q.seq;
    if (!/^\d+$/.test(seq || "")) throw new Error("No event chosen.");
    $("event-title").textContent = "Event " + seq;
    const event = await getJSON("/v1/events/" + seq);
    definitions($("event-fields"), FIELD_LABELS.map(([name, label]) => [label, fieldValue(event, name)]));
    if (event.record_id) {
      const dd = $("event-fields").querySelectorAll("dd")[FIELD_LABELS.findIndex(([n]) => n === "record_id")];
      dd.replaceChildren(link(event.record_id, {
        view: "events", kind: "access", record_type: event.record_type, record_id: event.record_id,
      }, "every access to record " + event.record_id));
    }

    const reasons = $("event-reasons");
    reasons.replaceChildren(...event.reasons.map((r) => {
      const li = el("li");
      li.append(el("strong", words(r.code)), ": " + r.message);
      if (r.data && Object.keys(r.data).length) li.append(valueNode(r.data));
      return li;
    }));
    if (!event.reasons.length) reasons.append(el("li", "No deny reasons."));
    const flags = $("event-flags");
    flags.replaceChildren(...event.flags.map((f) => el("li", "Flag: " + words(f), "flag")));
    if (!event.flags.length) flags.append(el("li", "No flags."));

    const details = { ...(event.details || {}) };
    const facts = details.facts;
    delete details.facts;
    delete details.reasons;
    const factPairs = facts ? Object.entries(facts).map(([k, v]) => [words(k), valueNode(v)]) : [];
    for (const [k, v] of Object.entries(details)) factPairs.push([words(k), valueNode(v)]);
    definitions($("event-facts"), factPairs.length ? factPairs : [["Recorded facts", "none"]]);

    const access = ACCESS_KINDS.includes(event.kind);
    await Promise.all([
      showReviews(event, access),
      checkProof(event),
      access && event.record_id ? showHistory(event, q) : clearHistory(),
    ]);
  }

  async function showReviews(event, access) {
    const list = $("event-reviews");
    const form = $("review-form");
    form.hidden = !(access && form.dataset.allowed === "yes");
    $("review-status").textContent = "";
    if (!access) {
      list.replaceChildren(el("li", "Only access events are reviewed."));
      return;
    }
    const reviews = await getJSON("/v1/events/" + event.seq + "/reviews");
    list.replaceChildren(...reviews.map((r) => {
      const li = el("li");
      li.append(el("strong", words(r.disposition)), " by " + r.reviewer + ", " +
                when(r.reviewed_at) + (r.note ? ": " + r.note : ""), " (", eventLink(r.seq), ")");
      return li;
    }));
    if (!reviews.length) list.append(el("li", "Not reviewed yet."));
  }

  async function submitReview(submit) {
    submit.preventDefault();
    const form = submit.target;
    const status = $("review-status");
    const disposition = form.disposition.value;
    const note = form.note.value.trim();
    if (disposition === "violation" && !note) {
      status.textContent = "A violation needs a note: say what was wrong.";
      form.note.focus();
      return;
    }
    const seq = query().seq;
    const response = await api("/v1/events/" + seq + "/reviews", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ disposition, note: note || null }),
    });
    if (response.status !== 201) {
      status.textContent = "Not recorded: " + await problem(response);
      return;
    }
    const review = await response.json();
    form.reset();
    await showReviews({ seq: Number(seq) }, true);
    status.replaceChildren("Review recorded as event " + review.seq + ". ");
    const back = sessionStorage.getItem(QUEUE_KEY);
    const a = el("a", "Back to the review queue");
    a.href = "/dashboard" + (back || "?view=queue&status=open");
    status.append(a);
  }

  async function checkProof(event) {
    const result = $("proof-result");
    const steps = $("proof-steps");
    result.className = "proof";
    result.textContent = "Checking…";
    steps.replaceChildren();
    try {
      const [checkpoint, key] = await Promise.all([
        getText("/v1/log/checkpoint"), getText("/v1/log/key"),
      ]);
      $("proof-key").textContent = key.trim();
      const size = window.AuditProof.parseCheckpoint(checkpoint).size;
      if (event.seq > size) {
        result.textContent = "Not yet covered: the latest published checkpoint holds " +
          count(size) + " events; this one is proven once the next checkpoint is signed.";
        result.className = "proof pending";
        return;
      }
      const proof = await getJSON(`/v1/log/proof/inclusion?seq=${event.seq}&size=${size}`);
      const outcome = await window.AuditProof.verifyEvent(event, proof, checkpoint, key);
      result.textContent = "✓ In the log: verified in this browser against checkpoint " +
        count(outcome.size) + " of " + outcome.origin + ".";
      result.className = "proof ok";
      steps.replaceChildren(...outcome.steps.map((s) => el("li", s)));
    } catch (error) {
      if (error instanceof SignedOut) throw error;
      result.textContent = "✗ Not verified: " + error.message + ".";
      result.className = "proof failed";
    }
  }

  function clearHistory() {
    fillTable($("history"), [], "not an access to a record");
    $("view-event").querySelector(".pager").replaceChildren();
  }

  async function showHistory(event, q) {
    const params = new URLSearchParams({ limit: "20" });
    if (q.hcursor) params.set("cursor", q.hcursor);
    const path = "/v1/records/" + encodeURIComponent(event.record_type) + "/" +
      encodeURIComponent(event.record_id) + "/accesses?" + params;
    const page = await getJSON(path);
    fillTable($("history"), page.items.map((e) => {
      const tr = row([
        Number(e.seq) === Number(event.seq) ? el("strong", e.seq + " (this one)") : eventLink(e.seq),
        when(e.occurred_at), e.actor, words(e.action), words(e.purpose), e.decision,
      ]);
      return tr;
    }));
    pager($("view-event"), { view: "event", seq: event.seq, hcursor: q.hcursor }, page.next_cursor,
          "hcursor");
  }

  // --- policy history ------------------------------------------------------------------

  async function showPolicies(q) {
    const versions = await getJSON("/v1/policies");
    fillTable($("policies"), versions.map((v, i) => {
      const older = versions.slice(i + 1).find((o) => o.status !== "rejected" && o.status !== "proposed");
      const code = el("code", v.version.slice(7, 19), "hash");
      code.title = v.version;
      return row([
        v.version === q.version ? el("strong", v.version.slice(7, 19) + " (shown)") : code,
        v.status, when(v.effective_from), v.authority, v.proposed_by || "—", v.approved_by || "—",
        older ? link("changes from " + older.version.slice(7, 15),
                     { view: "policies", version: v.version, against: older.version },
                     "changes of " + v.version.slice(7, 19) + " from " + older.version.slice(7, 19))
          : "first version",
      ]);
    }));
    const panel = $("diff-panel");
    panel.hidden = !(q.version && q.against);
    if (panel.hidden) return;
    const diff = await getJSON("/v1/policies/" + encodeURIComponent(q.version) + "/diff?against=" +
                               encodeURIComponent(q.against));
    $("diff-title").textContent = "Changes of " + q.version.slice(7, 19) + " from " +
      q.against.slice(7, 19);
    const table = el("table");
    const head = el("thead");
    head.append(row(["rule", "change", "was", "now"]));
    for (const td of head.querySelectorAll("td")) {
      const th = el("th", td.textContent);
      th.scope = "col";
      td.replaceWith(th);
    }
    const body = el("tbody");
    const show = (v) => (v === null || v === undefined ? "—" : typeof v === "object" ? JSON.stringify(v) : String(v));
    for (const c of diff.changes) {
      body.append(row([c.path, c.change, show(c.was ?? c.removed), show(c.now ?? c.added)]));
    }
    if (!diff.changes.length) body.append(row(["no rule differs", "", "", ""]));
    table.append(head, body);
    const wrap = el("div", null, "table-wrap");
    wrap.tabIndex = 0;
    wrap.append(table);
    $("diff").replaceChildren(wrap);
  }

  // --- the public transparency report --------------------------------------------------

  let lastReport = null;

  async function showTransparency(q) {
    if (!q.month) {
      const previous = new Date();
      previous.setUTCDate(1);
      previous.setUTCMonth(previous.getUTCMonth() - 1);
      go(href({ view: "transparency", month: previous.toISOString().slice(0, 7) }), true);
      return;
    }
    fillForm($("transparency-scope"), q);
    const report = await getJSON("/v1/reports/transparency?month=" + encodeURIComponent(q.month));
    lastReport = report;
    renderTransparency(report);
  }

  // Measures down, facilities across: a handful of columns fits a phone, and a reader
  // compares a measure across facilities along one line.
  function renderTransparency(report) {
    const rows = report.rows || [];
    const table = $("transparency");
    const head = el("tr");
    head.append(el("th", "measure"));
    for (const r of rows) head.append(el("th", r.name || facilityName(r.facility), "num"));
    for (const th of head.children) th.scope = "col";
    table.querySelector("thead").replaceChildren(head);
    fillTable(table, (report.columns || []).map((column) => row([
      words(column),
      ...rows.map((r) => (r.cells[column] === null || r.cells[column] === undefined
        ? { num: el("span", "suppressed", "suppressed") } : num(r.cells[column]))),
    ])), "no data for this month");
    const sentence = (text) => (text && !/[.!?]$/.test(text) ? text + "." : text);
    $("transparency-note").textContent = [
      sentence(report.suppression && report.suppression.rule),
      report.complete === false ? "The month is not over: its counts will still change." : "",
      report.key_id ? "Signed with key " + report.key_id + "." : "",
      report.tree_size ? "Anchored to the log's checkpoint of " + count(report.tree_size) +
        " events." : "",
    ].filter(Boolean).join(" ");
  }

  async function downloadTransparency(format) {
    const month = query().month;
    if (!month) return;
    const path = "/v1/reports/transparency?month=" + encodeURIComponent(month) +
      (format === "csv" ? "&format=csv" : "");
    const response = await api(path);
    if (!response.ok) {
      $("error").textContent = await problem(response);
      return;
    }
    save(await response.blob(), "transparency-" + month + "." + format);
  }

  const SHOW = {
    board: showBoard, queue: showQueue, events: showEvents, event: showEvent,
    policies: showPolicies, transparency: showTransparency,
  };

  // --- wiring --------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("sign-in").addEventListener("submit", (e) => signIn(e).catch((error) => {
      if (!(error instanceof SignedOut)) $("sign-in-error").textContent = error.message;
    }));
    $("sign-out").addEventListener("click", () => signOut());
    for (const form of document.querySelectorAll("form[data-filters]")) {
      form.addEventListener("submit", submitForm);
    }
    $("review-form").addEventListener("submit", (e) => submitReview(e).catch(() => {}));
    $("export").addEventListener("click", exportEvents);
    $("manifest").addEventListener("click", downloadManifest);
    $("transparency-json").addEventListener("click", () => downloadTransparency("json"));
    $("transparency-csv").addEventListener("click", () => downloadTransparency("csv"));
    // Links within the workbench change the view without reloading the page.
    document.addEventListener("click", (event) => {
      const a = event.target.closest("a[href^='/dashboard?']");
      if (!a || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
      event.preventDefault();
      go(a.getAttribute("href"));
      $("main").focus({ preventScroll: false });
    });
    window.addEventListener("popstate", route);
    if (token()) start().catch((error) => signOut(error instanceof SignedOut ? undefined : ""));
  });
})();
