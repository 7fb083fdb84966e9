// resilient_conn live dashboard. No build step, no library, no request to any other host.
// Data arrives as Server-Sent Events from "dashboard/events" (relative to this page):
//   snapshot {seq, sample, timelines, series, config}   draw everything from scratch
//   sample   {t, name, status, detail, tiles, points}   every `interval` seconds
//   change   {seq, name, what, old, new, reason, at}    every state change, as it happens
// Every text is set with textContent (never parsed as HTML).
"use strict";
(() => {
  const SVG = "http://www.w3.org/2000/svg";
  const TIMELINE_SHOWN = 12;
  const view = {
    sample: null, timelines: new Map(), series: new Map(), tiles: new Map(),
    config: { interval: 1, points: 120, history: 30 },
  };
  let source = null;
  let lastMessage = Date.now();
  let retryDelay = 1000;
  let reopenTimer = null;

  const byId = (id) => document.getElementById(id);
  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    return node;
  }
  function secs(s) {
    if (s === null || s === undefined || !isFinite(s)) return "–";
    if (s < 10) return s.toFixed(1) + " s";
    if (s < 120) return Math.round(s) + " s";
    if (s < 7200) return Math.floor(s / 60) + " m " + Math.round(s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " m";
  }
  function ms(s) {
    if (s === null || s === undefined) return "–";
    const v = s * 1000;
    return (v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : Math.round(v)) + " ms";
  }
  function clock(t) {
    return new Date(t * 1000).toLocaleTimeString([], { hour12: false });
  }
  function text(v) { return v === null || v === undefined ? "" : String(v); }

  // --- the stream ------------------------------------------------------------------------
  function setLink(stateName, label) {
    const link = byId("link");
    link.dataset.link = stateName;
    link.textContent = label;
  }
  function connect() {
    reopenTimer = null;
    setLink("connecting", "connecting…");
    source = new EventSource("dashboard/events");
    lastMessage = Date.now();
    source.onopen = () => { setLink("live", "live"); retryDelay = 1000; };
    source.onerror = () => {
      setLink("reconnecting", "reconnecting…");
      // The browser retries by itself after a network error, but gives up on an HTTP error
      // (a 503 when too many pages watch, a proxy's 502): then retry here, with backoff.
      if (source.readyState === EventSource.CLOSED) reopenLater();
    };
    source.addEventListener("snapshot", (e) => handle(e, onSnapshot));
    source.addEventListener("sample", (e) => handle(e, onSample));
    source.addEventListener("change", (e) => handle(e, onChange));
  }
  function reopenLater() {
    if (source) source.close();
    if (reopenTimer !== null) return;
    const delay = retryDelay * (0.5 + Math.random());
    retryDelay = Math.min(retryDelay * 2, 30000);
    reopenTimer = setTimeout(connect, delay);
  }
  function handle(event, fn) {
    lastMessage = Date.now();
    if (byId("link").dataset.link !== "live") setLink("live", "live");
    let data;
    try { data = JSON.parse(event.data); } catch (err) { return; }
    fn(data);
  }
  // A silent stream (a proxy holding a dead connection) is a dead one: start over.
  setInterval(() => {
    const limit = Math.max(10000, view.config.interval * 5000);
    if (reopenTimer === null && Date.now() - lastMessage > limit) {
      setLink("reconnecting", "reconnecting… (no update for " + Math.round(limit / 1000) + " s)");
      reopenLater();
    }
    tickProbes();
  }, 1000);

  // --- events ----------------------------------------------------------------------------
  function onSnapshot(data) {
    view.config = Object.assign(view.config, data.config || {});
    view.timelines = new Map(Object.entries(data.timelines || {}));
    view.series = new Map(Object.entries(data.series || {}));
    for (const tile of view.tiles.values()) tile.root.remove();
    view.tiles.clear();
    onSample(data.sample || {}, true);
  }
  function onSample(sample, fromSnapshot) {
    view.sample = sample;
    view.sampledAt = Date.now();
    byId("registry").textContent = text(sample.name) || "resilient_conn";
    document.title = (sample.status ? sample.status.toUpperCase() + " · " : "") + text(sample.name) + " · dashboard";
    const overall = byId("overall");
    overall.dataset.status = sample.status || "unknown";
    overall.textContent = sample.status || "unknown";
    byId("detail").textContent = text(sample.error || sample.detail);
    byId("updated").textContent = sample.t ? "updated " + clock(sample.t) : "";
    byId("hidden").textContent = sample.hidden ? sample.hidden + " more component(s) not shown" : "";
    const tiles = sample.tiles || [];
    byId("empty").hidden = tiles.length > 0 || Boolean(sample.error);
    const seen = new Set();
    for (const data of tiles) {
      seen.add(data.name);
      if (!fromSnapshot) {
        const point = (sample.points || {})[data.name];
        if (point) pushPoint(data.name, point);
      }
      renderTile(data);
    }
    for (const [name, tile] of view.tiles) {
      if (!seen.has(name)) { tile.root.remove(); view.tiles.delete(name); view.series.delete(name); view.timelines.delete(name); }
    }
  }
  function onChange(change) {
    const list = view.timelines.get(change.name) || [];
    list.push(change);
    while (list.length > view.config.history) list.shift();
    view.timelines.set(change.name, list);
    const tile = view.tiles.get(change.name);
    if (!tile) return;
    if (change.what === "state" && change.new) {
      tile.root.dataset.state = change.new;
      tile.state.dataset.state = change.new;
      tile.state.textContent = change.new;
    } else if (change.what === "breaker" && change.new) {
      tile.root.dataset.breaker = change.new;
      tile.breaker.textContent = "breaker " + change.new;
    }
    renderTimeline(tile, change.name);
    renderChart(tile, change.name);
  }
  function pushPoint(name, point) {
    const list = view.series.get(name) || [];
    list.push(point);
    while (list.length > view.config.points) list.shift();
    view.series.set(name, list);
  }

  // --- tiles -----------------------------------------------------------------------------
  const FACTS = [
    ["uptime", (d) => secs(d.uptime)],
    ["reconnects", (d) => text(d.reconnects)],
    ["last RTT", (d) => ms(d.rtt)],
    ["buffered", (d) => text(d.buffered)],
    ["dead letters", (d) => text(d.dead_letters)],
    ["failures in a row", (d) => text(d.consecutive_failures)],
  ];
  function makeTile(name) {
    const root = el("article", "tile");
    root.dataset.name = name;
    const head = el("header");
    const title = el("h2", "name", name);
    const kind = el("span", "kind");
    const status = el("span", "badge status");
    head.append(title, kind, status);
    const states = el("div", "states");
    const state = el("span", "state");
    const breaker = el("span", "breaker");
    const probe = el("span", "probe");
    states.append(state, breaker, probe);
    const facts = el("dl", "facts");
    const values = FACTS.map(([label]) => {
      const box = el("div");
      const dd = el("dd");
      dd.dataset.fact = label;
      box.append(el("dt", null, label), dd);
      facts.append(box);
      return dd;
    });
    const why = el("p", "why");
    const error = el("p", "error");
    const chart = svg("svg", { class: "chart", viewBox: "0 0 300 78", preserveAspectRatio: "none", role: "img" });
    const legend = el("div", "legend");
    const lRtt = el("span", "l-rtt");
    const lDials = el("span", "l-dials");
    legend.append(lRtt, lDials);
    const timeline = el("ol", "timeline");
    root.append(head, states, facts, why, error, chart, legend, timeline);
    const tile = { root, kind, status, state, breaker, probe, values, why, error, chart, lRtt, lDials, timeline, data: null };
    view.tiles.set(name, tile);
    insertSorted(root);
    return tile;
  }
  function insertSorted(root) {
    byId("tiles").append(root);
  }
  function renderTile(data) {
    const tile = view.tiles.get(data.name) || makeTile(data.name);
    tile.data = data;
    const r = tile.root;
    r.dataset.status = data.status;
    r.dataset.kind = data.kind;
    r.dataset.state = data.state || "";
    r.dataset.breaker = data.breaker_state || "";
    tile.kind.textContent = data.kind + (data.critical ? "" : " · non-critical");
    tile.status.dataset.status = data.status;
    tile.status.textContent = data.status;
    tile.state.dataset.state = data.state || "";
    tile.state.textContent = data.state || "";
    tile.breaker.textContent = data.breaker_state ? "breaker " + data.breaker_state : "";
    FACTS.forEach(([, fn], i) => { tile.values[i].textContent = fn(data); });
    tile.why.textContent = text(data.detail);
    tile.error.textContent = data.last_error ? "last error: " + data.last_error : "";
    tickProbe(tile);
    renderChart(tile, data.name);
    renderTimeline(tile, data.name);
  }
  function tickProbe(tile) {
    const d = tile.data;
    const open = d && (d.breaker_state === "open" || d.breaker_state === "forced_open" || d.state === "circuit_open");
    if (!open) { tile.probe.textContent = ""; return; }
    if (d.retry_after === null || d.retry_after === undefined) { tile.probe.textContent = "no probe scheduled"; return; }
    const left = Math.max(0, d.retry_after - (Date.now() - view.sampledAt) / 1000);
    tile.probe.textContent = "next probe in " + secs(left);
  }
  function tickProbes() { for (const tile of view.tiles.values()) tickProbe(tile); }

  function renderTimeline(tile, name) {
    const entries = (view.timelines.get(name) || []).slice(-TIMELINE_SHOWN).reverse();
    const items = entries.map((c) => {
      const li = el("li");
      li.dataset.what = c.what;
      const when = el("time", null, clock(c.at));
      const body = el("span");
      body.append(el("span", "move", (c.what === "breaker" ? "breaker " : "") + text(c.old) + " → " + text(c.new)));
      if (c.reason) body.append(el("span", "reason", " " + c.reason));
      li.append(when, body);
      return li;
    });
    tile.timeline.replaceChildren(...items);
  }

  // --- chart: state strip, dial-rate bars, RTT line ---------------------------------------
  function renderChart(tile, name) {
    const points = view.series.get(name) || [];
    const W = 300, STRIP = 8, TOP = 22, H = 78, BOTTOM = H - 2;
    const now = points.length ? points[points.length - 1][0] : Date.now() / 1000;
    const span = Math.max(view.config.points * view.config.interval, 10);
    const t0 = now - span;
    const x = (t) => Math.max(0, Math.min(W, ((t - t0) / span) * W));
    const nodes = [svg("line", { class: "axis", x1: 0, y1: BOTTOM, x2: W, y2: BOTTOM })];
    // state strip from the timeline (what the state was over the window)
    const changes = (view.timelines.get(name) || []).filter((c) => c.what === "state");
    let current = tile.data && tile.data.state ? tile.data.state : "unknown";
    const segments = [];
    let end = now;
    for (let i = changes.length - 1; i >= 0 && end > t0; i--) {
      const c = changes[i];
      segments.push([Math.max(c.at, t0), end, c.new || "unknown"]);
      end = c.at;
      current = c.old || "unknown";
    }
    if (end > t0) segments.push([t0, end, changes.length ? current : (tile.data && tile.data.state) || "unknown"]);
    for (const [a, b, s] of segments) {
      const rect = svg("rect", { x: x(a), y: 0, width: Math.max(0.5, x(b) - x(a)), height: STRIP });
      rect.setAttribute("class", "seg-" + s);
      const title = svg("title");
      title.textContent = s;
      rect.append(title);
      nodes.push(rect);
    }
    const rates = points.map((p) => p[2]).filter((v) => v !== null && v !== undefined);
    const rtts = points.map((p) => p[1]).filter((v) => v !== null && v !== undefined);
    const maxRate = Math.max(1, ...rates);
    const maxRtt = Math.max(0.001, ...rtts);
    const bar = Math.max(1, (W / Math.max(view.config.points, 1)) * 0.8);
    for (const p of points) {
      if (!p[2]) continue;
      const h = (p[2] / maxRate) * (BOTTOM - TOP);
      nodes.push(svg("rect", { class: "dials", x: x(p[0]) - bar, y: BOTTOM - h, width: bar, height: h }));
    }
    let run = [];
    const flush = () => {
      if (run.length > 1) nodes.push(svg("polyline", { class: "rtt", points: run.join(" ") }));
      else if (run.length === 1) {
        const [cx, cy] = run[0].split(",");
        nodes.push(svg("circle", { class: "rtt", cx, cy, r: 1.5 }));
      }
      run = [];
    };
    for (const p of points) {
      if (p[1] === null || p[1] === undefined) { flush(); continue; }
      const y = BOTTOM - (p[1] / maxRtt) * (BOTTOM - TOP);
      run.push(x(p[0]).toFixed(1) + "," + y.toFixed(1));
    }
    flush();
    const label = svg("text", { x: 2, y: STRIP + 10 });
    label.textContent = "last " + secs(span);
    nodes.push(label);
    tile.chart.replaceChildren(...nodes);
    const topRtt = rtts.length ? Math.max(...rtts) : null;
    const topRate = rates.length ? Math.max(...rates) : null;
    tile.lRtt.textContent = topRtt === null ? "— RTT (none measured)" : "— RTT (max " + ms(topRtt) + ")";
    tile.lDials.textContent = topRate === null ? "" : "▮ dials/s (max " + topRate.toFixed(1) + ")";
  }

  connect();
})();
