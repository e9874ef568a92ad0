// The feature browser's page: plain JavaScript, no library, no network.
// Data files are scripts in data/ that call featscaleBrowser.register(key, payload) (Chromium
// refuses to fetch file:// URLs); binary payloads are base64 gzip of packed arrays, whose
// layout featscale/browser/payload.py describes.
"use strict";

(function () {
  const TYPES = {
    uint8: Uint8Array, uint16: Uint16Array, uint32: Uint32Array, int32: Int32Array,
    float32: Float32Array, float64: Float64Array,
  };
  const STATUS = ["counted", "excluded", "dead"];
  const EXTREMES = 10; // rows of each end of the most / least universal table
  const SEARCH_RESULTS = 12;
  const $ = (id) => document.getElementById(id);

  // ------------------------------------------------------------ loading data scripts

  const waiting = new Map(); // key -> {promise, resolve, reject}: registered payloads
  const decoded = new Map(); // key -> promise of the decoded payload

  function slot(key) {
    if (!waiting.has(key)) {
      const entry = {};
      entry.promise = new Promise((resolve, reject) => Object.assign(entry, { resolve, reject }));
      waiting.set(key, entry);
    }
    return waiting.get(key);
  }

  function register(key, payload) {
    if (key === "manifest") {
      start(payload).catch(fail);
      return;
    }
    slot(key).resolve(payload);
  }

  // the payload of data/<path>, read once; binary payloads are inflated into typed arrays
  function load(key, path, binary) {
    if (!decoded.has(key)) {
      const entry = slot(key);
      const script = document.createElement("script");
      script.src = "data/" + path;
      script.onerror = () => entry.reject(new Error("could not read data/" + path + " beside index.html"));
      document.head.appendChild(script);
      decoded.set(key, entry.promise.then((payload) => (binary ? unpack(payload) : payload)));
    }
    return decoded.get(key);
  }

  async function unpack(base64) {
    const text = atob(base64);
    const bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    const inflated = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    const buffer = await new Response(inflated).arrayBuffer();
    const length = new DataView(buffer).getUint32(0, true);
    const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, length)));
    const arrays = {};
    for (const [name, spec] of Object.entries(header.arrays)) {
      const count = spec.shape.reduce((a, b) => a * b, 1);
      arrays[name] = new TYPES[spec.dtype](buffer, header.data_offset + spec.offset, count);
    }
    return { arrays, meta: header.meta };
  }

  // ------------------------------------------------------------ state

  const state = {
    manifest: null,
    index: {}, // model -> arrays of data/<model>/index.js
    drawn: [], // points on the canvas: {latent, x, y} in CSS pixels
    plot: null, // the scatter's scales
    hovered: null,
    selected: null, // {model, latent} open in the panel
  };

  function fail(error) {
    console.error(error);
    const box = $("problem");
    box.textContent = "Problem: " + (error && error.message ? error.message : error);
    box.hidden = false;
  }
  window.addEventListener("unhandledrejection", (event) => fail(event.reason));

  async function start(manifest) {
    state.manifest = manifest;
    $("title").textContent = `${manifest.run} · SAE ${manifest.sae} · ${manifest.n_tokens.toLocaleString("en")} ` +
      `${manifest.split} tokens`;
    document.title = `Feature browser: ${manifest.run} / ${manifest.sae}`;
    if (manifest.note) {
      $("note").textContent = manifest.note;
      $("note").hidden = false;
    }
    const models = manifest.models;
    for (const [id, chosen] of [["source", models[0]], ["target", models[1]]]) {
      const select = $(id);
      for (const model of models) select.add(new Option(model, model, false, model === chosen));
    }
    const indexes = await Promise.all(models.map((m) => load(m + "/index", m + "/index.js", true)));
    models.forEach((m, i) => { state.index[m] = indexes[i].arrays; });
    wireControls();
    renderCensus();
    renderOverview();
    document.body.dataset.state = "ready";
    window.addEventListener("hashchange", route);
    route();
  }

  function wireControls() {
    for (const id of ["importance-min", "importance-max", "similarity-min", "similarity-max", "collapsed",
      "show-rare", "show-dead"]) {
      $(id).addEventListener("input", renderOverview);
    }
    $("source").addEventListener("input", () => {
      if ($("target").value === $("source").value) pickOther("target", "source");
      renderOverview();
    });
    $("target").addEventListener("input", () => {
      if ($("target").value === $("source").value) pickOther("source", "target");
      renderOverview();
    });
    const canvas = $("scatter");
    canvas.addEventListener("mousemove", (event) => hover(event));
    canvas.addEventListener("mouseleave", () => { $("tooltip").hidden = true; state.hovered = null; });
    canvas.addEventListener("click", (event) => {
      const point = nearest(event);
      if (point) location.hash = `${$("source").value}/${point.latent}`;
    });
    window.addEventListener("resize", () => drawScatter());
    const search = $("search");
    search.addEventListener("input", renderSearch);
    search.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        const first = $("search-results").querySelector("a");
        if (first) first.click();
      } else if (event.key === "Escape") {
        $("search-results").hidden = true;
      }
    });
    $("search-results").addEventListener("click", () => { $("search-results").hidden = true; });
  }

  function pickOther(id, avoid) {
    const other = state.manifest.models.find((m) => m !== $(avoid).value);
    $(id).value = other;
  }

  // ------------------------------------------------------------ overview

  function filters() {
    const number = (id, fallback) => {
      const value = parseFloat($(id).value);
      return Number.isFinite(value) ? value : fallback;
    };
    return {
      importance: [number("importance-min", -Infinity), number("importance-max", Infinity)],
      similarity: [number("similarity-min", -Infinity), number("similarity-max", Infinity)],
      collapsed: $("collapsed").value,
      rare: $("show-rare").checked,
      dead: $("show-dead").checked,
    };
  }

  function keepCollapsed(flag, rule) {
    return rule === "all" || (rule === "only") === (flag === 1);
  }

  function pairEntry(source, target) {
    return state.manifest.pairs.find((p) => p.source === source && p.target === target);
  }

  function renderOverview() {
    drawScatter();
    renderPairTable();
    renderExtremes();
  }

  function drawScatter() {
    const source = $("source").value, target = $("target").value;
    const index = state.index[source];
    if (!index) return;
    const f = filters();
    const similarity = index["similarity/" + target];
    const relative = index.relative_importance;
    const canvas = $("scatter");
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth, height = canvas.clientHeight;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);

    const shown = [], excluded = [];
    let yLow = -0.2, yHigh = 1.05; // the report's limits, widened when points go further
    for (let i = 0; i < relative.length; i++) {
      const status = index.status[i];
      if (!keepCollapsed(index.collapsed[i], f.collapsed)) continue;
      const x = relative[i];
      if (x < f.importance[0] || x > f.importance[1]) continue;
      if (status === 0) {
        const y = similarity[i];
        if (!(y >= f.similarity[0] && y <= f.similarity[1])) continue;
        shown.push(i);
        yLow = Math.min(yLow, y - 0.05);
        yHigh = Math.max(yHigh, y + 0.05);
      } else if ((status === 1 && f.rare) || (status === 2 && f.dead)) {
        excluded.push(i);
      }
    }
    const margin = { left: 52, right: 14, top: 12, bottom: 66 };
    const plotWidth = width - margin.left - margin.right, plotHeight = height - margin.top - margin.bottom;
    const sx = (x) => margin.left + ((x + 0.02) / 1.04) * plotWidth;
    const sy = (y) => margin.top + ((yHigh - y) / (yHigh - yLow)) * plotHeight;
    const stripY = margin.top + plotHeight + 42;
    state.plot = { sx, sy };

    // axes and grid
    ctx.font = "11px system-ui, sans-serif";
    ctx.strokeStyle = "#e3e3e3";
    ctx.fillStyle = "#555";
    ctx.lineWidth = 1;
    ctx.textAlign = "center";
    for (let x = 0; x <= 1.0001; x += 0.2) {
      ctx.beginPath(); ctx.moveTo(sx(x), margin.top); ctx.lineTo(sx(x), margin.top + plotHeight); ctx.stroke();
      ctx.fillText(x.toFixed(1), sx(x), margin.top + plotHeight + 14);
    }
    ctx.textAlign = "right";
    for (let y = Math.ceil(yLow * 5) / 5; y <= yHigh; y += 0.2) {
      ctx.beginPath(); ctx.moveTo(margin.left, sy(y)); ctx.lineTo(margin.left + plotWidth, sy(y)); ctx.stroke();
      ctx.fillText(y.toFixed(1), margin.left - 6, sy(y) + 4);
    }
    ctx.strokeStyle = "#999";
    ctx.strokeRect(margin.left, margin.top, plotWidth, plotHeight);
    ctx.textAlign = "center";
    ctx.fillStyle = "#333";
    ctx.fillText("relative importance", margin.left + plotWidth / 2, margin.top + plotHeight + 28);
    ctx.save();
    ctx.translate(14, margin.top + plotHeight / 2);
    ctx.rotate(-Math.PI / 2);
    ctx.fillText(`max similarity in ${target}`, 0, 0);
    ctx.restore();

    // points: counted latents, collapsed ones in orange
    state.drawn = [];
    for (const i of shown) {
      const x = sx(relative[i]), y = sy(similarity[i]);
      ctx.fillStyle = index.collapsed[i] ? "rgba(230, 120, 20, 0.85)" : "rgba(31, 90, 160, 0.55)";
      ctx.beginPath(); ctx.arc(x, y, 2.4, 0, 2 * Math.PI); ctx.fill();
      state.drawn.push({ latent: i, x, y });
    }
    // latents excluded from the correlation, in a strip under the axis
    if (excluded.length) {
      ctx.fillStyle = "#777";
      ctx.textAlign = "left";
      ctx.fillText("excluded", 4, stripY + 4);
    }
    for (const i of excluded) {
      const x = sx(relative[i]);
      ctx.fillStyle = index.status[i] === 2 ? "rgba(0, 0, 0, 0.8)" : "rgba(120, 120, 120, 0.7)";
      ctx.fillRect(x - 1.5, stripY - 5, 3, 10);
      state.drawn.push({ latent: i, x, y: stripY });
    }
    // the latent open in the panel, ringed
    const open = state.selected && state.selected.model === source &&
      state.drawn.find((p) => p.latent === state.selected.latent);
    if (open) {
      ctx.strokeStyle = "#b3261e";
      ctx.lineWidth = 2;
      ctx.beginPath(); ctx.arc(open.x, open.y, 6, 0, 2 * Math.PI); ctx.stroke();
    }
    // the report's fit, of all latents or without the collapsed ones
    const pair = pairEntry(source, target) || {};
    const fit = f.collapsed === "exclude" ? pair.masked : pair.all;
    if (fit && fit.b !== null && fit.c !== null) {
      ctx.strokeStyle = "#c0392b";
      ctx.lineWidth = 1.6;
      ctx.beginPath();
      for (let k = 0; k <= 100; k++) {
        const x = k / 100, y = 1 - Math.exp(-fit.b * (x - fit.c));
        if (k === 0) ctx.moveTo(sx(x), sy(Math.max(y, yLow))); else ctx.lineTo(sx(x), sy(Math.max(y, yLow)));
      }
      ctx.stroke();
    }
    const r = (entry) => (entry && entry.pearson_r !== null ? entry.pearson_r.toFixed(3) : "n/a");
    const counted = countWhere(index.status, 0);
    const shownR = pearson(shown.map((i) => relative[i]), shown.map((i) => similarity[i]));
    $("pair-summary").textContent =
      `${source} → ${target}: ${shown.length} of ${counted} counted latents shown` +
      (excluded.length ? `, ${excluded.length} excluded below the axis` : "") +
      `. Report: r = ${r(pair.all)} (all counted), ${r(pair.masked)} without collapsed latents` +
      (fit && fit.b !== null ? `; fit y = 1 − exp(−${fit.b.toFixed(3)} (x ${fit.c < 0 ? "+" : "−"} ${Math.abs(fit.c).toFixed(3)}))` : "") +
      `. r of the points shown: ${Number.isNaN(shownR) ? "n/a" : shownR.toFixed(3)}.`;
    $("plot").dataset.points = String(shown.length);
  }

  function pearson(x, y) {
    const n = x.length;
    if (n < 2) return NaN;
    const mx = x.reduce((a, b) => a + b, 0) / n, my = y.reduce((a, b) => a + b, 0) / n;
    let sxy = 0, sxx = 0, syy = 0;
    for (let i = 0; i < n; i++) {
      sxy += (x[i] - mx) * (y[i] - my); sxx += (x[i] - mx) ** 2; syy += (y[i] - my) ** 2;
    }
    return sxx > 0 && syy > 0 ? sxy / Math.sqrt(sxx * syy) : NaN;
  }

  function countWhere(array, value) {
    let n = 0;
    for (let i = 0; i < array.length; i++) if (array[i] === value) n++;
    return n;
  }

  function nearest(event) {
    const box = $("scatter").getBoundingClientRect();
    const x = event.clientX - box.left, y = event.clientY - box.top;
    let best = null, bestDistance = 64; // within 8 px
    for (const point of state.drawn) {
      const d = (point.x - x) ** 2 + (point.y - y) ** 2;
      if (d < bestDistance) { best = point; bestDistance = d; }
    }
    return best;
  }

  function hover(event) {
    const point = nearest(event);
    const tip = $("tooltip");
    state.hovered = point;
    $("scatter").style.cursor = point ? "pointer" : "default";
    if (!point) { tip.hidden = true; return; }
    const source = $("source").value, target = $("target").value;
    const index = state.index[source];
    const i = point.latent;
    const lines = [`${source}/${i}`, `relative importance ${fmt(index.relative_importance[i])}`];
    if (index.status[i] === 0) {
      lines.push(`max similarity ${fmt(index["similarity/" + target][i])} with ${target}/` +
        `${index["partner/" + target][i]}`);
    } else {
      lines.push(index.status[i] === 2 ? "dead" : "excluded from the correlation");
    }
    if (index.collapsed[i]) lines.push("collapsed");
    tip.textContent = lines.join("\n");
    tip.hidden = false;
    const flip = point.x > $("scatter").clientWidth - 240; // keep the tooltip inside the plot
    tip.style.left = flip ? "" : `${point.x + 12}px`;
    tip.style.right = flip ? `${$("scatter").clientWidth - point.x + 12}px` : "";
    tip.style.top = `${point.y + 8}px`;
  }

  function renderPairTable() {
    const models = state.manifest.models;
    const table = $("pair-table");
    table.replaceChildren();
    const head = table.createTHead().insertRow();
    head.appendChild(cell("th", "source \\ target"));
    for (const m of models) head.appendChild(cell("th", m));
    const body = table.createTBody();
    const mask = $("collapsed").value === "exclude" ? "masked" : "all";
    for (const source of models) {
      const row = body.insertRow();
      row.appendChild(cell("th", source));
      for (const target of models) {
        const td = row.insertCell();
        if (source === target) { td.textContent = "—"; continue; }
        const entry = (pairEntry(source, target) || {})[mask];
        td.textContent = entry && entry.pearson_r !== null ? entry.pearson_r.toFixed(3) : "n/a";
        td.className = "choice" + (source === $("source").value && target === $("target").value ? " chosen" : "");
        td.addEventListener("click", () => {
          $("source").value = source;
          $("target").value = target;
          renderOverview();
        });
      }
    }
  }

  // per latent of a model: its mean max similarity over the other models (its universality)
  function universality(model) {
    const index = state.index[model];
    const others = state.manifest.models.filter((m) => m !== model);
    const mean = new Float64Array(index.status.length).fill(NaN);
    for (let i = 0; i < mean.length; i++) {
      if (index.status[i] !== 0) continue;
      let sum = 0;
      for (const other of others) sum += index["similarity/" + other][i];
      mean[i] = sum / others.length;
    }
    return { mean, others };
  }

  function renderExtremes() {
    const model = $("source").value;
    const index = state.index[model];
    const f = filters();
    const { mean, others } = universality(model);
    const chosen = [];
    for (let i = 0; i < mean.length; i++) {
      const x = index.relative_importance[i];
      if (Number.isNaN(mean[i]) || !keepCollapsed(index.collapsed[i], f.collapsed)) continue;
      if (x < f.importance[0] || x > f.importance[1]) continue;
      chosen.push(i);
    }
    chosen.sort((a, b) => mean[b] - mean[a] || a - b);
    $("extremes-title").textContent = `Most and least universal latents of ${model} ` +
      `(mean max similarity over ${others.join(", ")})`;
    const table = $("extremes");
    table.replaceChildren();
    const head = table.createTHead().insertRow();
    for (const title of ["", "latent", "relative importance", "frequency", ...others.map((o) => "in " + o), "mean"]) {
      head.appendChild(cell("th", title));
    }
    const body = table.createTBody();
    const ends = [["most", chosen.slice(0, EXTREMES)],
      ["least", chosen.slice(Math.max(EXTREMES, chosen.length - EXTREMES)).reverse()]];
    for (const [label, latents] of ends) {
      latents.forEach((i, k) => {
        const row = body.insertRow();
        row.className = label;
        row.appendChild(cell("th", k === 0 ? label + " universal" : ""));
        row.insertCell().appendChild(latentLink(model, i));
        row.insertCell().textContent = fmt(index.relative_importance[i]);
        row.insertCell().textContent = percent(index.count[i] / state.manifest.n_tokens);
        for (const other of others) row.insertCell().textContent = fmt(index["similarity/" + other][i]);
        row.insertCell().textContent = fmt(mean[i]);
      });
    }
  }

  function renderCensus() {
    const table = $("census");
    const columns = ["n_latents", "counted", "rare", "dead", "collapsed", "collapsed_counted"];
    const head = table.createTHead().insertRow();
    head.appendChild(cell("th", "model"));
    for (const c of columns) head.appendChild(cell("th", c.replace("_", " ")));
    head.appendChild(cell("th", "L0"));
    const body = table.createTBody();
    for (const model of state.manifest.models) {
      const entry = state.manifest.model_data[model];
      const row = body.insertRow();
      row.appendChild(cell("th", model));
      for (const c of columns) row.insertCell().textContent = (entry.census[c] ?? "").toLocaleString("en");
      row.insertCell().textContent = entry.l0.toFixed(1);
    }
  }

  // ------------------------------------------------------------ search

  function renderSearch() {
    const list = $("search-results");
    const text = $("search").value.trim();
    list.replaceChildren();
    const found = text ? searchLatents(text) : [];
    for (const [model, latent] of found) {
      const item = document.createElement("li");
      const link = latentLink(model, latent);
      link.classList.add("search-result");
      item.appendChild(link);
      const status = STATUS[state.index[model].status[latent]];
      item.appendChild(document.createTextNode(
        ` ${status}, relative importance ${fmt(state.index[model].relative_importance[latent])}`));
      list.appendChild(item);
    }
    if (text && !found.length) {
      const item = document.createElement("li");
      item.textContent = "no latent: type model/id, e.g. " + state.manifest.models[0] + "/0";
      list.appendChild(item);
    }
    list.hidden = !text;
  }

  // "w256/12" -> w256's latents whose id starts with 12; "12" -> latent 12 of every model
  function searchLatents(text) {
    const models = state.manifest.models;
    const out = [];
    const match = /^([^/\s]+)\s*\/\s*(\d*)$/.exec(text);
    if (match && models.includes(match[1])) {
      const n = state.index[match[1]].status.length;
      const exact = match[2] === "" ? NaN : parseInt(match[2], 10);
      if (exact < n) out.push([match[1], exact]);
      for (let i = 0; i < n && out.length < SEARCH_RESULTS; i++) {
        if (i !== exact && String(i).startsWith(match[2])) out.push([match[1], i]);
      }
    } else if (/^\d+$/.test(text)) {
      const latent = parseInt(text, 10);
      for (const model of models) if (latent < state.index[model].status.length) out.push([model, latent]);
    } else {
      for (const model of models) if (model.startsWith(text)) out.push([model, 0]);
    }
    return out.slice(0, SEARCH_RESULTS);
  }

  // ------------------------------------------------------------ one latent

  function route() {
    const match = /^#([^/]+)\/(\d+)$/.exec(decodeURIComponent(location.hash));
    if (!match) return;
    openLatent(match[1], parseInt(match[2], 10)).catch(fail);
  }

  async function openLatent(model, latent) {
    const panel = $("panel");
    const manifest = state.manifest;
    const index = state.index[model];
    if (!index || latent >= index.status.length) {
      panel.dataset.state = "missing";
      panel.replaceChildren(paragraph(`No latent ${model}/${latent} in this browser.`));
      return;
    }
    panel.dataset.state = "loading";
    panel.dataset.latent = `${model}/${latent}`;
    state.selected = { model, latent };
    drawScatter();
    panel.replaceChildren(paragraph(`Loading ${model}/${latent} …`));
    const entry = manifest.model_data[model];
    const shard = Math.floor(latent / entry.latents_per_shard);
    const [examples, tokens, vocab] = await Promise.all([
      load(`${model}/shard-${shard}`, `${model}/shard-${shard}.js`, true),
      load("tokens", "tokens.js", true),
      load("vocab", "vocab.js", false),
    ]);
    if (panel.dataset.latent !== `${model}/${latent}`) return; // another latent was opened meanwhile
    const local = latent - examples.meta.first_latent;
    panel.replaceChildren(...latentView(model, latent, local, examples.arrays, tokens.arrays.tokens, vocab));
    panel.dataset.state = "ready";
    panel.scrollTop = 0;
  }

  function latentView(model, latent, local, shard, tokens, vocab) {
    const m = state.manifest;
    const index = state.index[model];
    const status = index.status[latent];
    const count = index.count[latent];
    const parts = [];
    const title = document.createElement("h2");
    title.textContent = `${model} / latent ${latent}`;
    parts.push(title);
    let statusText = "counted in the correlation";
    if (status === 1) {
      statusText = count < m.min_count
        ? `excluded from the correlation: fires on ${count} < ${m.min_count} tokens (correlation.min_count)`
        : "excluded from the correlation: active on every token (constant)";
    } else if (status === 2) {
      statusText = `dead: never active on the ${m.n_tokens.toLocaleString("en")} analysis tokens, so it has no contexts`;
    }
    const badge = paragraph(statusText);
    badge.className = "status status-" + STATUS[status];
    parts.push(badge);

    parts.push(definitionTable([
      ["firing count", `${count.toLocaleString("en")} of ${m.n_tokens.toLocaleString("en")} tokens`],
      ["frequency", percent(count / m.n_tokens)],
      ["max activation", fmt(index.max[latent])],
      ["importance", `${fmt(index.importance[latent])} (max × decoder norm)`],
      ["relative importance", fmt(index.relative_importance[latent]) +
        (status === 0 ? "" : " (over the SAE's largest counted importance; not in the study)")],
    ]));

    // best partner in every other model, and that partner's own best match back
    const heading = document.createElement("h3");
    heading.textContent = "Best partner in each other model";
    parts.push(heading);
    if (status === 0) {
      const table = document.createElement("table");
      table.className = "partners";
      const head = table.createTHead().insertRow();
      for (const t of ["model", "max similarity", "best partner", "its best match here", "mutual"]) {
        head.appendChild(cell("th", t));
      }
      const body = table.createTBody();
      for (const other of m.models) {
        if (other === model) continue;
        const partner = index["partner/" + other][latent];
        const row = body.insertRow();
        row.insertCell().textContent = other;
        row.insertCell().textContent = fmt(index["similarity/" + other][latent]);
        const back = state.index[other]["partner/" + model][partner];
        const link = latentLink(other, partner);
        link.classList.add("partner");
        row.insertCell().appendChild(link);
        const backCell = row.insertCell();
        backCell.appendChild(latentLink(model, back));
        backCell.appendChild(document.createTextNode(` (${fmt(state.index[other]["similarity/" + model][partner])})`));
        const mutual = row.insertCell();
        mutual.textContent = back === latent ? "✓ mutual" : "✗";
        mutual.className = back === latent ? "mutual" : "one-way";
      }
      parts.push(table);
    } else {
      parts.push(paragraph("None: the latent is excluded from the correlation."));
    }

    parts.push(collapsedView(model, latent));
    if (status === 2) return parts;

    const histogramTitle = document.createElement("h3");
    histogramTitle.textContent = "Activations";
    parts.push(histogramTitle, histogram(shard.histogram, local, index.max[latent], count));

    const begin = shard.offsets[local], end = shard.offsets[local + 1];
    const top = [], sampled = [];
    for (let e = begin; e < end; e++) (shard.band[e] === 0 ? top : sampled).push(e);
    const topTitle = document.createElement("h3");
    topTitle.textContent = `Top ${top.length} contexts`;
    parts.push(topTitle, contextList(top, shard, tokens, vocab, index.max[latent], "top"));
    const sampledTitle = document.createElement("h3");
    sampledTitle.textContent = `${sampled.length} contexts sampled from lower activations`;
    parts.push(sampledTitle);
    if (sampled.length) {
      parts.push(contextList(sampled, shard, tokens, vocab, index.max[latent], "sampled"));
    } else {
      parts.push(paragraph(`It fires only ${count} times: every activation is among the top contexts.`));
    }
    return parts;
  }

  function collapsedView(model, latent) {
    const m = state.manifest;
    const index = state.index[model];
    const box = document.createElement("div");
    box.className = "collapsed-info";
    const begin = index.cluster_offsets[latent], end = index.cluster_offsets[latent + 1];
    const neighbours = index.neighbours[latent];
    if (!index.collapsed[latent]) {
      box.appendChild(paragraph(`Not collapsed: ${neighbours} other latent(s) share its decoder direction ` +
        `(cosine ≥ ${m.collapsed_threshold}); a cluster needs ${m.collapsed_min_neighbours}.`));
      return box;
    }
    box.classList.add("is-collapsed");
    box.appendChild(paragraph(`Collapsed: ${neighbours} other latents share its decoder direction ` +
      `(cosine ≥ ${m.collapsed_threshold}); the masked r table leaves it out. Its cluster:`));
    const list = document.createElement("p");
    list.className = "cluster";
    for (let k = begin; k < end; k++) {
      list.appendChild(latentLink(model, index.cluster_members[k]));
      list.appendChild(document.createTextNode(" "));
    }
    if (neighbours > end - begin) list.appendChild(document.createTextNode(`… and ${neighbours - (end - begin)} more`));
    box.appendChild(list);
    return box;
  }

  function histogram(counts, local, max, total) {
    const bins = state.manifest.examples.bins;
    const w = 360, h = 110, left = 34, bottom = 22;
    const svgNS = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(svgNS, "svg");
    svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
    svg.setAttribute("class", "histogram");
    let top = 1;
    for (let b = 0; b < bins; b++) top = Math.max(top, counts[local * bins + b]);
    const scale = (c) => (c > 0 ? (Math.log10(c) + 1) / (Math.log10(top) + 1) : 0);
    const barWidth = (w - left - 4) / bins;
    for (let b = 0; b < bins; b++) {
      const c = counts[local * bins + b];
      const barHeight = scale(c) * (h - bottom - 6);
      const rect = document.createElementNS(svgNS, "rect");
      rect.setAttribute("x", left + b * barWidth + 0.5);
      rect.setAttribute("y", h - bottom - barHeight);
      rect.setAttribute("width", Math.max(barWidth - 1, 1));
      rect.setAttribute("height", barHeight);
      const tip = document.createElementNS(svgNS, "title");
      tip.textContent = `${fmt((b / bins) * max)}–${fmt(((b + 1) / bins) * max)}: ${c.toLocaleString("en")}`;
      rect.appendChild(tip);
      svg.appendChild(rect);
    }
    const label = (x, y, text, anchor) => {
      const t = document.createElementNS(svgNS, "text");
      t.setAttribute("x", x); t.setAttribute("y", y); t.setAttribute("text-anchor", anchor);
      t.textContent = text;
      svg.appendChild(t);
    };
    label(left, h - 6, "0", "start");
    label(w - 4, h - 6, fmt(max), "end");
    label((left + w) / 2, h - 6, "activation", "middle");
    label(left - 4, 12, top.toLocaleString("en"), "end");
    label(left - 4, h - bottom, "0", "end");
    const figure = document.createElement("figure");
    figure.appendChild(svg);
    const caption = document.createElement("figcaption");
    caption.textContent = `${total.toLocaleString("en")} activations in ${bins} bins of (0, max]; log count`;
    figure.appendChild(caption);
    return figure;
  }

  function contextList(examples, shard, tokens, vocab, max, kind) {
    const m = state.manifest;
    const radius = m.examples.radius, width = 2 * radius + 1;
    const perWindow = m.context - m.first_position;
    const list = document.createElement("ol");
    list.className = "contexts " + kind;
    for (const e of examples) {
      const row = shard.rows[e];
      const window_ = Math.floor(row / perWindow), position = m.first_position + (row % perWindow);
      const item = document.createElement("li");
      item.className = "context";
      const value = document.createElement("span");
      value.className = "value";
      value.textContent = fmt(shard.values[e]);
      if (kind === "sampled") {
        const band = shard.band[e];
        value.title = `activation ranks ${(band - 1) * 10}–${band * 10}% below the top contexts`;
      }
      item.appendChild(value);
      const text = document.createElement("span");
      text.className = "tokens";
      for (let j = 0; j < width; j++) {
        const q = position - radius + j;
        if (q < 0 || q >= m.context) continue; // beyond the window: the model never saw it with this token
        const id = tokens[window_ * m.context + q];
        const span = document.createElement("span");
        span.className = "token";
        span.textContent = show(vocab[id] ?? `<${id}>`);
        const counted = q >= m.first_position && window_ * perWindow + q - m.first_position < m.n_tokens;
        const shade = shard.shades[e * width + j];
        if (!counted) {
          span.classList.add("uncounted");
          span.title = `token ${id}: position ${q}, not among the counted tokens`;
        } else if (shade > 0) {
          span.style.backgroundColor = `rgba(255, 128, 0, ${(0.12 + 0.88 * shade / 255).toFixed(3)})`;
          span.title = `token ${id}: activation ≈ ${fmt((shade / 255) * max)}`;
        } else {
          span.title = `token ${id}: 0`;
        }
        if (j === radius) {
          span.classList.add("peak");
          span.title = `token ${id}: activation ${fmt(shard.values[e])} (the peak)`;
        }
        text.appendChild(span);
      }
      item.appendChild(text);
      const where = document.createElement("span");
      where.className = "where";
      where.textContent = `window ${window_}, position ${position}`;
      item.appendChild(where);
      list.appendChild(item);
    }
    return list;
  }

  // ------------------------------------------------------------ small helpers

  function show(text) {
    return text.replace(/\n/g, "↵").replace(/\t/g, "⇥").replace(/\r/g, "␍");
  }

  function fmt(value) {
    if (value === null || value === undefined || Number.isNaN(value)) return "n/a";
    const magnitude = Math.abs(value);
    if (magnitude !== 0 && (magnitude < 1e-3 || magnitude >= 1e5)) return value.toExponential(2);
    return Number(value.toPrecision(3)).toString();
  }

  function percent(fraction) {
    return fmt(100 * fraction) + "%";
  }

  function cell(tag, text) {
    const element = document.createElement(tag);
    element.textContent = text;
    return element;
  }

  function paragraph(text) {
    return cell("p", text);
  }

  function latentLink(model, latent) {
    const link = document.createElement("a");
    link.href = `#${model}/${latent}`;
    link.textContent = `${model}/${latent}`;
    link.dataset.latent = `${model}/${latent}`;
    return link;
  }

  function definitionTable(rows) {
    const table = document.createElement("table");
    table.className = "numbers";
    const body = table.createTBody();
    for (const [name, value] of rows) {
      const row = body.insertRow();
      row.appendChild(cell("th", name));
      row.insertCell().textContent = value;
    }
    return table;
  }

  // the page's entry point for data scripts, and what tests need to find a drawn point
  window.featscaleBrowser = {
    register,
    pointPosition(model, latent) {
      if (model !== $("source").value) return null;
      const point = state.drawn.find((p) => p.latent === latent);
      return point ? { x: point.x, y: point.y } : null;
    },
  };
})();
