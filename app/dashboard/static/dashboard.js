// The oversight dashboard. Everything it shows comes from the guarded API with the bearer
// token of the signed-in officer (kept in this tab's sessionStorage only). Data is put on
// the page as text, never as HTML. No library, nothing loaded from elsewhere.
"use strict";

(() => {
  const TOKEN_KEY = "access-audit.token";
  const SVG = "http://www.w3.org/2000/svg"; // an XML namespace name, not a resource
  const $ = (id) => document.getElementById(id);
  let lastExportId = null;

  const token = () => sessionStorage.getItem(TOKEN_KEY);

  async function api(path) {
    const response = await fetch(path, { headers: { Authorization: "Bearer " + token() } });
    if (response.status === 401) {
      signOut("Your session has ended: sign in again.");
      throw new Error("not signed in");
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

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function fillTable(id, rows) {
    const body = $(id).querySelector("tbody");
    body.replaceChildren(...rows);
    if (!rows.length) {
      const tr = el("tr");
      const td = el("td", "none in this period", "empty");
      td.colSpan = $(id).querySelectorAll("th").length;
      tr.append(td);
      body.append(tr);
    }
  }

  function row(cells) {
    const tr = el("tr");
    for (const cell of cells) {
      const td = el("td");
      if (cell instanceof Node) td.append(cell);
      else td.textContent = cell === null || cell === undefined ? "" : String(cell);
      tr.append(td);
    }
    return tr;
  }

  function eventLink(seq) {
    const a = el("a", seq);
    a.href = "#event-" + seq;
    return a;
  }

  const when = (iso) => new Date(iso).toLocaleString();

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
      $("sign-in-error").textContent = "Sign-in failed: check your username and password.";
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, (await response.json()).access_token);
    form.password.value = "";
    await showBoard();
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    $("board").hidden = true;
    $("who").hidden = true;
    $("sign-in-panel").hidden = false;
    $("sign-in-error").textContent = message || "";
  }

  async function showBoard() {
    const me = await getJSON("/v1/auth/me");
    $("who-name").textContent = me.name + " (" + me.roles.join(", ") + ")";
    $("who").hidden = false;
    $("sign-in-panel").hidden = true;
    $("board").hidden = false;
    const scope = $("scope");
    if (!scope.since.value) {
      // The 30 days up to the latest recorded access (today's if there is none): a log of a
      // mission that has ended should not open on an empty month.
      const days = await getJSON("/v1/reports/summary?group_by=day");
      const latest = days.groups.map((g) => g.key.day).filter(Boolean).sort().pop();
      const end = latest ? new Date(latest + "T00:00:00Z") : new Date();
      const start = new Date(end.getTime() - 29 * 86400000);
      scope.until.value = end.toISOString().slice(0, 10);
      scope.since.value = start.toISOString().slice(0, 10);
    }
    await loadFacilities();
    await refresh();
    if (location.hash.startsWith("#event-")) await showEvent();
  }

  async function loadFacilities() {
    const select = $("scope").facility;
    if (select.options.length > 1) return;
    const summary = await getJSON("/v1/reports/summary?group_by=facility");
    for (const group of summary.groups) {
      if (group.key.facility) select.append(new Option(group.key.facility, group.key.facility));
    }
  }

  // --- the board -------------------------------------------------------------------------

  function scopeParams() {
    const scope = $("scope");
    const params = new URLSearchParams({ since: scope.since.value, until: scope.until.value });
    if (scope.facility.value) params.set("facility", scope.facility.value);
    return params;
  }

  async function refresh(event) {
    if (event) event.preventDefault();
    $("board-error").textContent = "";
    const params = scopeParams();
    const flagParams = new URLSearchParams(params);
    flagParams.set("newest_first", "true");
    flagParams.set("limit", "10");
    try {
      const [days, denials, flags] = await Promise.all([
        getJSON("/v1/reports/summary?group_by=day&" + params),
        getJSON("/v1/reports/denials?" + params),
        getJSON("/v1/reports/flags?" + flagParams),
      ]);
      drawDays(days.groups, params.get("since"), params.get("until"));
      showDenials(denials);
      showFlags(flags);
    } catch (error) {
      if (error.message !== "not signed in") $("board-error").textContent = error.message;
    }
  }

  function drawDays(groups, since, until) {
    const byDay = new Map(groups.map((g) => [g.key.day, g]));
    const days = [];
    for (let d = new Date(since + "T00:00:00Z"); d <= new Date(until + "T00:00:00Z");
         d = new Date(d.getTime() + 86400000)) {
      days.push(d.toISOString().slice(0, 10));
    }
    const total = groups.reduce((sum, g) => sum + g.count, 0);
    const denied = groups.reduce((sum, g) => sum + g.denied, 0);
    $("total-accesses").textContent = total.toLocaleString();
    $("total-denied").textContent = denied.toLocaleString();

    const width = Math.max(320, $("per-day").clientWidth || 800);
    const height = 220;
    const pad = { left: 48, right: 8, top: 10, bottom: 28 };
    const max = Math.max(1, ...groups.map((g) => g.count));
    const step = (width - pad.left - pad.right) / Math.max(1, days.length);
    const scale = (height - pad.top - pad.bottom) / max;
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
    const add = (tag, attrs, text) => {
      const node = document.createElementNS(SVG, tag);
      for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
      if (text !== undefined) node.textContent = text;
      svg.append(node);
      return node;
    };
    add("line", { x1: pad.left, y1: height - pad.bottom, x2: width - pad.right,
                  y2: height - pad.bottom, class: "axis" });
    add("text", { x: pad.left - 6, y: pad.top + 10, class: "label end" }, max.toLocaleString());
    add("text", { x: pad.left - 6, y: height - pad.bottom, class: "label end" }, "0");
    days.forEach((day, i) => {
      const g = byDay.get(day) || { count: 0, denied: 0, flagged: 0 };
      const x = pad.left + i * step + step * 0.1;
      const w = Math.max(1, step * 0.8);
      const allowedHeight = (g.count - g.denied) * scale;
      const deniedHeight = g.denied * scale;
      const base = height - pad.bottom;
      const bar = add("rect", { x, y: base - allowedHeight - deniedHeight, width: w,
                                height: allowedHeight, class: "allowed" });
      add("rect", { x, y: base - deniedHeight, width: w, height: deniedHeight, class: "denied" });
      const title = document.createElementNS(SVG, "title");
      title.textContent = day + ": " + g.count + " accesses, " + g.denied + " denied, " +
        g.flagged + " flagged";
      bar.append(title);
    });
    add("text", { x: pad.left, y: height - 8, class: "label" }, days[0] || "");
    add("text", { x: width - pad.right, y: height - 8, class: "label end" },
        days[days.length - 1] || "");
    $("per-day").replaceChildren(svg);
  }

  function showDenials(report) {
    $("creep-attempts").textContent = report.mission_creep.attempts.toLocaleString();
    fillTable("denials", report.by_reason.map((r) => row([r.reason, r.count])));
    const latest = report.mission_creep.events.slice(-10).reverse();
    fillTable("creep", latest.map((e) => row([eventLink(e.seq), when(e.occurred_at), e.actor,
                                              e.action, e.facility, e.decision])));
  }

  function showFlags(report) {
    $("open-flags").textContent = report.open.toLocaleString();
    fillTable("flags", report.items.map((e) => row([
      eventLink(e.seq), when(e.occurred_at), e.actor, e.action, e.flags.join(", "),
      e.latest_review ? e.latest_review.disposition : "open",
    ])));
  }

  async function showEvent() {
    const seq = location.hash.slice("#event-".length);
    if (!/^\d+$/.test(seq) || !token()) return;
    $("event-panel").hidden = false;
    $("event-seq").textContent = seq;
    try {
      $("event-body").textContent = JSON.stringify(await getJSON("/v1/events/" + seq), null, 2);
    } catch (error) {
      $("event-body").textContent = error.message;
    }
    $("event-panel").scrollIntoView({ behavior: "smooth" });
  }

  // --- exports (auditors) ----------------------------------------------------------------

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
    const response = await api("/v1/exports/events.csv?" + scopeParams());
    if (response.status === 403) {
      status.textContent = "Exports are for auditors: ask one to export this period.";
      return;
    }
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

  document.addEventListener("DOMContentLoaded", () => {
    $("sign-in").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", () => signOut());
    $("scope").addEventListener("submit", refresh);
    $("export").addEventListener("click", exportEvents);
    $("manifest").addEventListener("click", downloadManifest);
    window.addEventListener("hashchange", showEvent);
    if (token()) showBoard().catch(() => signOut());
  });
})();
