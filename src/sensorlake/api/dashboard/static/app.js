// The sensorlake dashboard: a map coloured by AQI, charts per device, a status page.
// Everything it needs is bundled (Leaflet, uPlot, a Natural Earth base map); OpenStreetMap
// tiles are drawn on top only when the browser can reach them.
"use strict";

const RANGES = { "1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400 };
const STALE_SECONDS = 600;
const state = { catalog: null, me: null, map: null, markers: {}, layer: null, device: null,
                range: "24h", metric: null, series: null, statusPrev: null, fitted: false };
window.sensorlake = state;  // for people poking around (and the browser test)

const $ = (id) => document.getElementById(id);
const text = (value) => document.createTextNode(value == null ? "" : String(value));

function show(message) {
  const box = $("message");
  box.hidden = !message;
  box.textContent = message || "";
}

function ago(seconds) {
  if (seconds == null) return "no data yet";
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 129600) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} days ago`;
}

function unit(metric) {
  const entry = (state.catalog.metrics || []).find((m) => m.name === metric);
  return entry ? entry.unit : "";
}

function category(metric, value) {
  const scale = state.catalog.aqi[metric];
  if (!scale || value == null) return null;
  return scale.find((band) => value <= band.to) || scale[scale.length - 1];
}

// -- the map ---------------------------------------------------------------------------------
async function baseMap(map) {
  const world = await fetch("/static/basemap/countries-50m.json").then((r) => r.json());
  const land = topojson.feature(world, world.objects.countries);
  L.geoJSON(land, { interactive: false, style: { color: "#b9b1a3", weight: 0.8,
    fillColor: "#f2efe9", fillOpacity: 1 } }).addTo(map);
  const url = state.catalog.dashboard.tile_url;
  if (!url) return;
  // Tiles only when reachable: one probe tile, a few seconds at most.
  const probe = new Image();
  const timer = setTimeout(() => { probe.src = ""; }, 4000);
  probe.onload = () => {
    clearTimeout(timer);
    L.tileLayer(url, { maxZoom: 19, attribution:
      '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors'
    }).addTo(map);
  };
  probe.src = url.replace("{z}", "0").replace("{x}", "0").replace("{y}", "0").replace("{s}", "a");
}

function legend() {
  const control = L.control({ position: "bottomleft" });
  control.onAdd = () => {
    const box = L.DomUtil.create("div", "legend");
    const title = document.createElement("h4");
    title.textContent = "US AQI (EPA, PM)";
    box.appendChild(title);
    for (const band of state.catalog.aqi.aqi_us) {
      const line = document.createElement("div");
      const swatch = document.createElement("i");
      swatch.style.background = band.colour;
      line.appendChild(swatch);
      line.appendChild(text(`${band.from}–${band.to} ${band.name}`));
      box.appendChild(line);
    }
    const none = document.createElement("div");
    const grey = document.createElement("i");
    grey.style.background = "#9E9E9E";
    none.appendChild(grey);
    none.appendChild(text("no recent value"));
    box.appendChild(none);
    return box;
  };
  control.addTo(state.map);
}

async function refreshMap() {
  let layer;
  try {
    layer = await Api.get("/api/v1/map", { metric: "aqi_us" });
  } catch (error) {
    show(error.status === 401 ? "Sign in to see the sensors." : `Map: ${error.message}`);
    document.body.dataset.devices = "0";
    return;
  }
  show(layer.features.length ? "" : "No sensors with a location yet.");
  const seen = new Set();
  for (const feature of layer.features) {
    const [lon, lat] = feature.geometry.coordinates;
    const p = feature.properties;
    seen.add(feature.id);
    let marker = state.markers[feature.id];
    if (!marker) {
      marker = L.circleMarker([lat, lon], { radius: 9, weight: 1.5, color: "#263238",
        fillOpacity: 0.9, className: "device-marker" }).addTo(state.map);
      marker.on("click", () => openPanel(feature.id));
      state.markers[feature.id] = marker;
    }
    marker.setLatLng([lat, lon]);
    marker.setStyle({ fillColor: p.colour });
    marker.feature = feature;
    const label = p.value == null ? "no recent AQI" : `AQI ${Math.round(p.value)} · ${p.category}`;
    const tip = document.createElement("span");  // text only: names come from users
    tip.textContent = `${p.name || feature.id}: ${label}`;
    marker.bindTooltip(tip);
    if (marker.getElement()) marker.getElement().setAttribute("data-device", feature.id);
  }
  for (const id of Object.keys(state.markers)) {
    if (!seen.has(id)) { state.map.removeLayer(state.markers[id]); delete state.markers[id]; }
  }
  if (!state.fitted && layer.features.length) {
    const bounds = L.latLngBounds(layer.features.map((f) =>
      [f.geometry.coordinates[1], f.geometry.coordinates[0]]));
    state.map.fitBounds(bounds.pad(0.2), { maxZoom: 14 });
    state.fitted = true;
  }
  document.body.dataset.devices = String(layer.features.length);
  if (state.device && state.markers[state.device]) renderLatest(state.device);
}

// -- the device panel ------------------------------------------------------------------------
function renderLatest(id) {
  const feature = state.markers[id].feature;
  const p = feature.properties;
  $("panel-title").textContent = `${p.name || id} (${id})`;
  const fresh = $("panel-fresh");
  fresh.textContent = `Updated ${ago(p.age_seconds)}` + (p.ts ? ` · ${new Date(p.ts).toLocaleString()}` : "");
  fresh.classList.toggle("stale", p.age_seconds == null || p.age_seconds > STALE_SECONDS);
  const table = $("panel-latest");
  table.replaceChildren();
  for (const metric of Object.keys(p.values).sort()) {
    const row = table.insertRow();
    row.insertCell().textContent = metric;
    const cell = row.insertCell();
    const band = category(metric, p.values[metric]);
    if (band) {
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = band.colour;
      cell.appendChild(swatch);
    }
    cell.appendChild(text(`${p.values[metric]} ${unit(metric)}${band ? " · " + band.name : ""}`));
  }
  const picker = $("metric");
  const metrics = Object.keys(p.values).filter((m) => m !== "latitude" && m !== "longitude").sort();
  if (picker.options.length !== metrics.length || state.metricsOf !== id) {
    picker.replaceChildren(...metrics.map((m) => new Option(m, m)));
    state.metricsOf = id;
    state.metric = metrics.includes(state.metric) ? state.metric
      : (metrics.includes("pm2_5") ? "pm2_5" : metrics[0]);
  }
  picker.value = state.metric || "";
}

async function openPanel(id) {
  state.device = id;
  $("panel").hidden = false;
  renderLatest(id);
  await drawChart();
}

async function drawChart() {
  const chart = $("chart");
  const note = $("chart-note");
  chart.replaceChildren();
  note.textContent = "";
  state.series = null;
  document.body.dataset.chart = "loading";
  if (!state.metric) { note.textContent = "No values yet."; return; }
  const seconds = RANGES[state.range];
  let body;
  try {
    body = await Api.get(`/api/v1/devices/${encodeURIComponent(state.device)}/readings`, {
      metric: state.metric, from: `-${state.range}`, to: "now", every: "auto", agg: "mean" });
  } catch (error) {
    note.textContent = error.status === 401 || error.status === 403
      ? "Sign in with an account that may read this device's history." : error.message;
    document.body.dataset.chart = "denied";
    return;
  }
  state.series = body;
  const xs = body.results.map((r) => Date.parse(r.ts) / 1000);
  const ys = body.results.map((r) => r.value);
  const now = Date.now() / 1000;
  const opts = {
    width: Math.max(300, chart.clientWidth || 500), height: 260,
    scales: { x: { time: true, range: [now - seconds, now] } },
    series: [{}, { label: `${state.metric} (${unit(state.metric)})`, stroke: "#1565c0",
                   width: 2, fill: "rgba(21,101,192,0.08)", spanGaps: false }],
    axes: [{}, { label: unit(state.metric) }],
  };
  new uPlot(opts, [xs, ys], chart);
  note.textContent = `${body.results.length} points, one per ${body.meta.every || "reading"}` +
    ` (${body.meta.agg || "raw"}), last ${state.range}.`;
  document.body.dataset.chart = "ready";
}

function downloadCsv() {
  if (!state.series) return;
  const lines = ["ts,device_id,metric,value,count"];
  for (const r of state.series.results) {
    lines.push([r.ts, state.device, state.metric, r.value, r.count ?? ""].join(","));
  }
  const blob = new Blob([lines.join("\n") + "\n"], { type: "text/csv" });
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = `${state.device}-${state.metric}-${state.range}.csv`;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

// -- the status page -------------------------------------------------------------------------
function card(label, value) {
  const box = document.createElement("div");
  box.className = "card";
  const l = document.createElement("div"); l.className = "label"; l.textContent = label;
  const v = document.createElement("div"); v.className = "value"; v.textContent = value;
  box.append(l, v);
  return box;
}

async function refreshStatus() {
  if ($("view-status").hidden) return;
  const cards = $("status-cards");
  let status;
  try {
    status = await Api.get("/api/v1/status");
  } catch (error) {
    cards.replaceChildren(card("Status", error.status === 403 || error.status === 401
      ? "owners only" : error.message));
    return;
  }
  const now = Date.now() / 1000;
  const worker = status.worker || {};
  const log = status.log || {};
  let rate = "…";
  if (status.rates && status.rates.stored_per_second != null) {
    rate = `${status.rates.stored_per_second}/s`;
  } else if (state.statusPrev) {
    const dt = now - state.statusPrev.at;
    rate = `${Math.max(0, ((worker.readings || 0) - state.statusPrev.readings) / dt).toFixed(1)}/s`;
  }
  state.statusPrev = { at: now, readings: worker.readings || 0 };
  const since = (iso) => (iso ? ago(now - Date.parse(iso) / 1000) : "never");
  cards.replaceChildren(
    card("Readings stored per second", rate),
    card("Readings since start", (worker.readings || 0).toLocaleString()),
    card("Log backlog (envelopes)", (log.backlog ?? "?").toLocaleString()),
    card("Oldest not in the lake", log.oldest_unacked_age_seconds == null ? "none"
      : ago(log.oldest_unacked_age_seconds).replace(" ago", "")),
    card("Last hot-store commit", since(worker.last_hot_commit)),
    card("Last lake commit", since(worker.last_lake_commit)),
    card("Quarantined", ((status.quarantine || {}).count ?? 0).toLocaleString()),
    card("Worker errors", (worker.errors ?? 0).toLocaleString()),
    ...(status.healthy === undefined ? [] : [card("Healthy", status.healthy ? "yes" : "no")]),
  );
  const table = $("quarantine");
  try {
    const rows = (await Api.get("/api/v1/quarantine", { limit: 10 })).results;
    table.replaceChildren();
    const head = table.insertRow();
    for (const h of ["when", "device", "stage", "reason"]) {
      const th = document.createElement("th"); th.textContent = h; head.appendChild(th);
    }
    for (const r of rows) {
      const row = table.insertRow();
      for (const v of [r.quarantined_at, r.device_id, r.stage, r.reason]) row.insertCell().textContent = v;
    }
  } catch (error) { table.replaceChildren(); }
}

// -- sign-in ---------------------------------------------------------------------------------
async function whoAmI() {
  try {
    state.me = await Api.get("/api/v1/auth/me");
  } catch (error) {
    state.me = null;
    if (error.status === 401) Api.token = null;
  }
  const signedIn = state.me && state.me.kind !== "anonymous";
  $("login").hidden = !!signedIn;
  $("logout").hidden = !signedIn;
  $("who").textContent = signedIn ? `${state.me.user || "token"} · ${state.me.role} · ${state.me.tenant}`
    : (state.me ? "public view" : "");
}

async function signIn(event) {
  event.preventDefault();
  try {
    const session = await Api.request("POST", "/api/v1/auth/login", {
      username: $("login-user").value, password: $("login-password").value,
      tenant: $("login-tenant").value || null });
    Api.token = session.token;
    $("login-password").value = "";
  } catch (error) {
    show(`Sign-in failed: ${error.message}`);
    return;
  }
  await whoAmI();
  state.fitted = false;
  await refreshMap();
}

async function signOut() {
  try { await Api.request("POST", "/api/v1/auth/logout"); } catch (error) { /* gone already */ }
  Api.token = null;
  await whoAmI();
  await refreshMap();
}

function selectTab(name) {
  for (const view of ["map", "status"]) {
    $(`view-${view}`).hidden = view !== name;
    $(`tab-${view}`).classList.toggle("active", view === name);
  }
  if (name === "map") state.map.invalidateSize();
  else refreshStatus();
}

async function main() {
  state.catalog = await Api.get("/api/v1/catalog");
  document.title = $("title").textContent = state.catalog.dashboard.title;
  state.map = L.map("map", { zoomControl: true, worldCopyJump: true }).setView([30, 0], 2);
  L.control.scale({ imperial: false }).addTo(state.map);
  legend();
  $("login").addEventListener("submit", signIn);
  $("logout").addEventListener("click", signOut);
  $("panel-close").addEventListener("click", () => { $("panel").hidden = true; state.device = null; });
  $("metric").addEventListener("change", (e) => { state.metric = e.target.value; drawChart(); });
  $("csv").addEventListener("click", downloadCsv);
  for (const button of document.querySelectorAll("#ranges button")) {
    button.addEventListener("click", () => {
      state.range = button.dataset.range;
      for (const b of document.querySelectorAll("#ranges button")) b.classList.toggle("active", b === button);
      drawChart();
    });
  }
  $("tab-map").addEventListener("click", () => selectTab("map"));
  $("tab-status").addEventListener("click", () => selectTab("status"));
  await whoAmI();
  baseMap(state.map).catch((error) => show(`Base map: ${error.message}`));
  await refreshMap();
  setInterval(refreshMap, 15000);
  setInterval(refreshStatus, 5000);
  document.body.dataset.ready = "true";
}

main().catch((error) => show(`Dashboard failed to start: ${error.message}`));
