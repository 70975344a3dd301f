/**
 * dashboard.js, the page's only script: it listens to `./events` (Server-Sent Events; the
 * browser reconnects by itself) and redraws the page from each update. Plain ES2020 for any
 * current browser, no build step. Every value from the backend (holder ids come from other
 * processes) goes into the page as text, never as markup.
 */
export const PAGE_SCRIPT = String.raw`"use strict";
(function () {
  // Okabe-Ito colours (distinguishable with the common colour-vision deficiencies), each with the
  // text colour that reads on it at a contrast of 4.5:1 or more.
  var PALETTE = [
    ["#0072B2", "#ffffff"], ["#E69F00", "#000000"], ["#009E73", "#000000"], ["#CC79A7", "#000000"],
    ["#56B4E9", "#000000"], ["#D55E00", "#000000"], ["#F0E442", "#000000"], ["#882255", "#ffffff"]
  ];
  var keys = new Map();
  var lastSeq = 0;

  function $(id) { return document.getElementById(id); }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    if (attrs) Object.keys(attrs).forEach(function (name) { node.setAttribute(name, String(attrs[name])); });
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // A holder keeps its colour and letter for as long as the page is open.
  function keyOf(holderId) {
    var key = keys.get(holderId);
    if (!key) {
      var n = keys.size;
      var letters = "";
      for (var i = n; ; i = Math.floor(i / 26) - 1) {
        letters = String.fromCharCode(65 + (i % 26)) + letters;
        if (i < 26) break;
      }
      var colours = PALETTE[n % PALETTE.length];
      key = { letter: letters, background: colours[0], color: colours[1] };
      keys.set(holderId, key);
    }
    return key;
  }

  function paint(node, key) {
    node.style.backgroundColor = key.background;
    node.style.color = key.color;
  }

  function seconds(ms) { return (ms / 1000).toFixed(1) + " s"; }
  function number(n) { return String(Math.round(n * 100) / 100); }
  function clock(at) {
    var d = new Date(at);
    function pad(n, w) { return String(n).padStart(w, "0"); }
    return pad(d.getHours(), 2) + ":" + pad(d.getMinutes(), 2) + ":" + pad(d.getSeconds(), 2) + "." + pad(d.getMilliseconds(), 3);
  }

  function renderPlan(s) {
    var plan = s.plan;
    var dl = $("plan");
    dl.replaceChildren();
    $("epoch").textContent = s.epoch === null ? "–" : String(s.epoch);
    if (!plan) {
      dl.append(el("div", null, "No plan is stored for this resource."));
      return;
    }
    var pools = Object.keys(plan.pools).sort().map(function (name) { return name + " " + plan.pools[name]; }).join(", ");
    var rows = [
      ["limit", number(plan.limit) + " per " + plan.intervalMs + " ms", "limit"],
      ["partitions", plan.partitions + " × " + number(plan.limit / plan.partitions), "partitions"],
      ["pools", pools || "none", "pools"],
      ["slices per interval", plan.slicesPerInterval, "slicesPerInterval"],
      ["lease TTL", plan.leaseTtlMs + " ms", "leaseTtlMs"],
      ["jitter", plan.jitterMs + " ms", "jitterMs"],
      ["drift factor", plan.driftFactor, "driftFactor"]
    ];
    rows.forEach(function (row) {
      var item = el("div", { "data-field": row[2] });
      item.append(el("dt", null, row[0]), el("dd", null, row[1]));
      dl.append(item);
    });
  }

  function renderBanners(s) {
    var error = $("error");
    error.hidden = s.error === null;
    error.textContent = s.error === null ? "" : "The backend is not answering (" + s.error + "); showing the last good reading.";
    var grace = $("grace");
    grace.hidden = !(s.graceMs > 0);
    grace.textContent = s.graceMs > 0 ? "Grace period: no lease is granted for " + seconds(s.graceMs) + " more." : "";
  }

  function renderGrid(s) {
    var grid = $("grid");
    grid.replaceChildren();
    var held = 0;
    s.partitions.forEach(function (p) {
      var cell = el("div", { "class": "cell", role: "listitem", "data-partition": p.partition, "data-holder": p.holderId === null ? "" : p.holderId });
      cell.append(el("span", { "class": "index" }, "#" + p.partition));
      if (p.pool !== null) cell.append(el("span", { "class": "pool" }, p.pool));
      if (p.holderId === null) {
        cell.classList.add("free");
        cell.append(el("span", { "class": "left" }, "free"));
        cell.title = "partition " + p.partition + (p.pool ? " (pool " + p.pool + ")" : "") + ": free";
      } else {
        held++;
        var key = keyOf(p.holderId);
        paint(cell, key);
        cell.append(el("span", { "class": "key", "aria-hidden": "true" }, key.letter));
        var left = p.expiresInMs === null ? "time left unknown" : seconds(p.expiresInMs) + " left";
        cell.append(el("span", { "class": "left" }, left));
        cell.title = "partition " + p.partition + (p.pool ? " (pool " + p.pool + ")" : "") + ": " + p.holderId + ", " + left;
        cell.setAttribute("aria-label", cell.title);
      }
      grid.append(cell);
    });
    $("partitions-summary").textContent = s.plan ? held + " of " + s.partitions.length + " held" : "";
  }

  function renderHolders(s) {
    var body = document.querySelector("#holders tbody");
    body.replaceChildren();
    $("no-holders").hidden = s.holders.length > 0;
    // Leases as the backend shows them now; a record's own list lags by up to a heartbeat.
    var leases = new Map();
    s.partitions.forEach(function (p) { if (p.holderId !== null) leases.set(p.holderId, (leases.get(p.holderId) || 0) + 1); });
    s.holders.forEach(function (h) {
      var key = keyOf(h.holderId);
      var row = el("tr", { "data-holder-id": h.holderId });
      var swatch = el("span", { "class": "swatch" }, key.letter);
      paint(swatch, key);
      var keyCell = el("td", { "data-field": "key" });
      keyCell.append(swatch);
      row.append(
        keyCell,
        el("td", { "class": "holder", "data-field": "holderId" }, h.holderId),
        el("td", { "data-field": "pool" }, h.pool === null ? "–" : h.pool),
        el("td", { "class": "num", "data-field": "wants" }, h.wants),
        el("td", { "class": "num", "data-field": "weight" }, number(h.weight)),
        el("td", { "class": "num", "data-field": "reserve" }, h.reserve),
        el("td", { "class": "num", "data-field": "fairShare" }, h.fairShare),
        el("td", { "class": "num", "data-field": "leases" }, leases.get(h.holderId) || 0),
        el("td", { "class": "num", "data-field": "held" }, h.held.length),
        el("td", { "class": "partitions", "data-field": "partitions" }, h.held.slice().sort(function (a, b) { return a - b; }).join(", ")),
        el("td", { "class": "num", "data-field": "rate" }, number(h.rate))
      );
      body.append(row);
    });
  }

  function describe(c) {
    switch (c.kind) {
      case "taken": return "partition " + c.partition + " taken by " + c.holderId;
      case "moved": return "partition " + c.partition + " moved from " + c.from + " to " + c.to;
      case "freed": return "partition " + c.partition + " freed by " + c.holderId;
      case "grace-started": return "grace period started: no grants for " + seconds(c.graceMs);
      case "grace-ended": return "grace period ended";
      case "epoch":
        if (c.from === null) return "plan stored: epoch " + c.to;
        if (c.to === null) return "plan deleted (was epoch " + c.from + ")";
        return "plan replaced: epoch " + c.from + " → " + c.to;
      case "holder-joined": return "holder " + c.holderId + " joined";
      case "holder-left": return "holder " + c.holderId + " left";
      case "backend-failing": return "backend not answering: " + c.reason;
      case "backend-back": return "backend answering again";
      default: return c.kind;
    }
  }

  function renderChanges(changes) {
    var list = $("changes");
    list.replaceChildren();
    $("no-changes").hidden = changes.length > 0;
    for (var i = changes.length - 1; i >= 0; i--) {
      var e = changes[i];
      var item = el("li", { "data-kind": e.change.kind, "data-seq": e.seq });
      if (e.seq > lastSeq && lastSeq > 0) item.classList.add("new");
      item.append(el("time", null, clock(e.at)), document.createTextNode(describe(e.change)));
      list.append(item);
    }
    if (changes.length > 0) lastSeq = Math.max(lastSeq, changes[changes.length - 1].seq);
  }

  function render(update) {
    var s = update.snapshot;
    $("resource").textContent = s.resource;
    $("backend").textContent = s.backend;
    document.title = s.resource + " · partitioned-rate-limiter";
    $("read-at").textContent = s.readAt ? clock(s.readAt) : "–";
    renderBanners(s);
    renderPlan(s);
    renderGrid(s);
    renderHolders(s);
    renderChanges(update.changes);
    document.body.setAttribute("data-read-at", String(s.readAt));
  }

  function setConnection(state, text) {
    var node = $("connection");
    node.setAttribute("data-state", state);
    node.textContent = text;
  }

  var source = new EventSource("./events");
  source.onopen = function () { setConnection("live", "live"); };
  source.onerror = function () { setConnection("reconnecting", source.readyState === EventSource.CLOSED ? "disconnected" : "reconnecting…"); };
  source.onmessage = function (event) {
    setConnection("live", "live");
    render(JSON.parse(event.data));
  };
})();
`;
