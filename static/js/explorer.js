// The hidden-state explorer page: scroll a layer's states over the corpus, brush a range to select the units on
// there, match them over the whole corpus. The view lives in the address (history.replaceState) so it can be shared.
import { act, formatCount, showError } from "./common.js";
import { heatmap, histogram, legend, renderResults, renderUnitDetail, renderUnits } from "./explorer/panel.js";
import { wireGestures } from "./explorer/gestures.js";
import { CorpusBar } from "./explorer/overview.js";
import { LinePlot } from "./explorer/plot.js";
import { ExplorerService } from "./explorer/service.js";
import { isCharLevel, renderMeta, renderWords, shownWord } from "./explorer/tracks.js";
import { checkView, formatView, MAX_SIZE, MIN_SIZE, parseView } from "./explorer/viewstate.js";

const $ = (id) => document.getElementById(id);
const plot = new LinePlot($("plot"));
const corpusBar = new CorpusBar($("overview"), (token) => moveTo(token - page.view.size / 2));
const page = {
  view: null, project: null, service: null, chunk: null, labels: new Map(), match: null, matchedUnits: null,
  matching: false, activeResult: null, colourBy: "", hits: [], hit: -1, searchComplete: true, hover: null,
  preview: null, frame: 0,
};
const layerInfo = () => page.project.layers.find((layer) => layer.name === page.view.layer);
const clamp = (value, lo, hi) => Math.min(hi, Math.max(lo, value));

function remember() {
  history.replaceState(null, "", formatView(page.view));
}

// -- drawing -----------------------------------------------------------------------------------------------------
function schedule() {
  if (!page.frame) page.frame = requestAnimationFrame(draw);
}

// Re-render a part of the page only when its inputs changed (compared with ===): hovering redraws the plot alone.
const rendered = new Map();
function renderIfChanged(part, inputs, render) {
  const last = rendered.get(part);
  if (last && last.every((value, i) => value === inputs[i])) return;
  rendered.set(part, inputs);
  render();
}

// How many of the selected units are on at each visible token.
function onCounts(from, to) {
  const { chunk, view } = page;
  const rows = (view.units ?? []).map((unit) => chunk.states[chunk.units.indexOf(unit)]).filter(Boolean);
  const counts = new Int32Array(to - from);
  for (const row of rows) for (let i = from; i < to; i++) if (row[i] >= view.threshold) counts[i - from]++;
  return counts;
}

function draw() {
  page.frame = 0;
  const { chunk, view } = page;
  corpusBar.draw({
    tokens: page.project.tokens, position: view.position, size: view.size, brush: view.brush,
    results: page.match?.results ?? [], hits: page.hits,
  });
  if (!chunk || chunk.layer !== view.layer || view.position < chunk.start || view.position >= chunk.stop) return;
  const from = view.position - chunk.start;
  const to = Math.min(from + view.size, chunk.stop - chunk.start);
  plot.draw({
    chunk, position: view.position, size: view.size, selected: view.units ?? [], hover: page.hover,
    threshold: view.threshold, brush: view.brush, padding: view.padding, preview: page.preview,
    fixedRange: layerInfo().transform === "tanh" ? [-1, 1] : null,
  });
  Object.assign($("plot").dataset, { drawMs: plot.drawMilliseconds.toFixed(1), position: view.position });
  const cellWidth = plot.columns(view.size).cell;
  const brush = page.preview ?? view.brush;
  renderIfChanged("words", [chunk, from, to, String(view.units), view.threshold, String(brush),
    String(view.padding), page.hits, cellWidth], () => renderWords($("words"), {
    words: chunk.words.slice(from, to), position: view.position, on: onCounts(from, to),
    selected: view.units?.length ?? 0, brush, padding: view.padding, hits: page.hits, cellWidth,
  }));
  renderIfChanged("meta", [chunk, from, to, cellWidth], () => renderMeta($("meta-rows"), {
    meta: chunk.meta, from, to, cellWidth,
  }));
}

// Fetch the context the view needs (the service keeps a chunk around it), then draw.
async function showView() {
  const { view } = page;
  const wanted = { layer: view.layer, position: view.position };
  const stop = Math.min(page.project.tokens, view.position + view.size);
  const chunk = await page.service.context(view.layer, view.position, stop, page.project.tokens);
  if (wanted.layer === view.layer && wanted.position === view.position) {
    page.chunk = chunk;
    schedule();
  }
}

// -- view changes ------------------------------------------------------------------------------------------------
function syncControls() {
  const { view } = page;
  $("layer").value = view.layer ?? "";
  $("position").value = view.position;
  $("size").value = view.size;
  $("threshold").value = view.threshold;
  $("threshold-value").textContent = view.threshold.toFixed(2);
  $("pad-left").value = view.padding[0];
  $("pad-right").value = view.padding[1];
  $("query").value = view.query;
  $("regex").checked = view.regex;
  $("match-length").value = view.matchOptions.length;
  $("match-left").checked = view.matchOptions.left;
  $("match-right").checked = view.matchOptions.right;
}

function moveTo(position) {
  const { view } = page;
  view.position = clamp(Math.round(position), 0, Math.max(0, page.project.tokens - view.size));
  syncControls();
  remember();
  return act(showView);
}

function resize(size) {
  const { view } = page;
  const centre = view.position + view.size / 2;
  view.size = clamp(Math.round(size), MIN_SIZE, Math.min(MAX_SIZE, Math.max(MIN_SIZE, page.project.tokens)));
  return moveTo(centre - view.size / 2);
}

// The padding as far as the corpus reaches: at its ends there are no tokens for the units to be off at.
function paddingInCorpus() {
  const { brush, padding } = page.view;
  return [Math.min(padding[0], brush[0]), Math.min(padding[1], page.project.tokens - brush[1])];
}

// Ask the server which units the brush selects (replaces the selection), then redraw. Only the latest request's
// answer is used, whatever order the answers come in.
// #units is aria-busy from a change of the selection's inputs until its answer is shown.
let selectTicket = 0;
async function selectUnits() {
  const { view } = page;
  const ticket = ++selectTicket;
  renderSelection();
  if (!view.brush) { $("units").removeAttribute("aria-busy"); return; }
  $("units").setAttribute("aria-busy", "true");
  try {
    const units = await page.service.select(view.layer, view.brush, paddingInCorpus(), view.threshold);
    if (ticket === selectTicket) setUnits(units);
  } finally {
    if (ticket === selectTicket) $("units").removeAttribute("aria-busy");
  }
}

function setUnits(units) {
  page.view.units = units;
  page.view.match = false;
  remember();
  renderSelection();
  schedule();
}

function renderSelection() {
  const { view } = page;
  const units = view.units ?? [];
  $("unit-count").textContent = view.units ? `(${units.length})` : "";
  $("brush-status").textContent = view.brush
    ? `brush ${view.brush[0]}–${view.brush[1] - 1} (${view.brush[1] - view.brush[0]} tokens), padding ` +
      `${paddingInCorpus().join(" / ")}, threshold ${view.threshold.toFixed(2)}` +
      (view.units && !units.length ? ": no unit is on all along the brush and off around it" : "")
    : "Brush a range of tokens to select the units on there.";
  renderUnits($("units"), {
    units, labels: page.labels,
    onOpen: (unit) => act(() => openUnit(unit)),
    onRemove: (unit) => setUnits(units.filter((other) => other !== unit)),
    onHover: (unit) => { page.hover = unit; schedule(); },
  });
  showMatchStatus();
}

// A unit's detail in the side panel: its best concepts and where it is highest and lowest in the whole corpus.
async function openUnit(unit) {
  const box = $("unit-detail");
  box.setAttribute("aria-busy", "true");
  try {
    const detail = await page.service.unit(page.view.layer, unit);
    renderUnitDetail(box, {
      detail, separator: page.chunk && isCharLevel(page.chunk.words) ? "" : " ",
      onPick: (position) => moveTo(position - Math.floor(page.view.size / 2)),
    });
  } finally {
    box.removeAttribute("aria-busy");
  }
}

// What the match panel holds: in progress, or how many results for which units (and whether those changed).
function showMatchStatus() {
  const { match, view } = page;
  let text = "";
  if (page.matching) text = "matching…";
  else if (match) {
    const count = page.matchedUnits.length;
    const all = count === 1 ? "the unit" : count === 2 ? "both units" : `all ${count} units`;
    text = `${formatCount(match.total)} runs, ${formatCount(match.strictTotal)} with ${all} on` +
      (match.results.length < match.total ? `; the best ${match.results.length} below` : "");
    if (match.index.status !== "ready") text += `; scanned the states, the match index is ${indexState(match.index)}`;
    if (String(page.matchedUnits) !== String(view.units ?? [])) text += "; the selection has changed since: match again";
  }
  $("match-status").textContent = text;
}

function setBrush(brush) {
  page.view.brush = brush;
  page.activeResult = null;
  remember();
  schedule();
  return act(selectUnits);
}

// -- match, labels, search -----------------------------------------------------------------------------------------
const indexState = ({ status, progress }) =>
  (status === "building" && progress?.fraction != null ? `building (${Math.round(100 * progress.fraction)}%)` : status);

async function runMatch() {
  const { view } = page;
  const units = view.units ?? [];
  if (!units.length) throw new Error("match: select units first (brush a range, or add units by number)");
  page.matching = true;
  showMatchStatus();
  try {
    const match = await page.service.match(view.layer, units, view.threshold, view.matchOptions);
    page.match = match;
    page.matchedUnits = [...units];
  } finally {
    page.matching = false;
    showMatchStatus();
  }
  page.activeResult = null;
  view.match = true;
  remember();
  renderMatch();
}

function renderMatch() {
  const { match } = page;
  const units = page.matchedUnits.length;
  showMatchStatus();
  $("colour-legend").replaceChildren(...(page.colourBy ? legend(match.results, page.colourBy) : []));
  renderResults($("results"), {
    results: match.results, units, active: page.activeResult, colourBy: page.colourBy,
    separator: page.chunk && isCharLevel(page.chunk.words) ? "" : " ",
    onPick: (result, index) => {
      page.activeResult = index;
      const { view } = page;
      view.brush = [result.start, result.stop];
      renderSelection();
      renderMatch();
      moveTo(result.start - Math.floor((view.size - (result.stop - result.start)) / 2));
    },
  });
  $("match-summary").replaceChildren(
    ...match.lengths.map(histogram),
    ...Object.entries(match.meta).map(([name, track]) => heatmap({ name, ...track })));
}

// Load the layer's unit labels (concept badges), or say that it has none. The page does not wait for them: the
// server computes them in the background the first time they are asked for, and the page asks again until they
// are ready; a failure shows in #error.
const LABELS_POLL_MS = 2000;

function loadLabels() {
  const { layer } = page.view;
  const status = $("labels-status");
  page.labels = new Map();
  status.textContent = "Loading unit labels…";
  status.title = "";
  page.service.labels(layer).then(({ labels, missing, building }) => {
    if (layer !== page.view.layer) return;
    if (building) {
      const done = building.fraction != null ? ` ${Math.round(100 * building.fraction)}%` : "";
      status.textContent = `Computing unit labels for layer ${layer}…${done}`;
      setTimeout(() => { if (layer === page.view.layer) loadLabels(); }, LABELS_POLL_MS);
      return;
    }
    page.labels = labels;
    status.textContent = missing ? `No unit labels for layer ${layer}: ${missing}`
      : `Badges: each unit's best concept and its IoU (${formatCount(labels.size)} units labelled).`;
    status.title = missing ?? "";
    renderSelection();
  }).catch((error) => {
    status.textContent = "";
    showError(error);
  });
}

// Find the query's hits; `jump` moves the view to the first hit from the current position on.
async function runSearch(jump) {
  const { view } = page;
  view.query = $("query").value.trim();
  view.regex = $("regex").checked;
  remember();
  page.hits = [];
  page.hit = -1;
  if (view.query) {
    const answer = await page.service.search(view.query, view.regex);
    page.hits = answer.hits;
    page.searchComplete = answer.complete;
  }
  const next = page.hits.findIndex((hit) => hit.start >= view.position);
  await showHit(page.hits.length ? Math.max(0, next) : -1, jump);
}

function showHit(index, jump = true) {
  page.hit = index;
  const count = page.hits.length;
  $("hit-status").textContent = !page.view.query ? "" :
    count ? `${index + 1} / ${formatCount(count)}${page.searchComplete ? "" : "+"}` : "no hits";
  $("hit-back").disabled = $("hit-forward").disabled = count < 2;
  if (index < 0 || !jump) { schedule(); return Promise.resolve(); }
  return moveTo(page.hits[index].start - Math.floor(page.view.size / 4));
}

// -- interaction ---------------------------------------------------------------------------------------------------
// Highlight the unit line under the pointer and say its value (event null: the pointer left the plot).
function hoverPlot(event) {
  const tooltip = $("tooltip");
  const near = event && plot.unitNear(event.clientX, event.clientY);
  if (page.hover !== (near?.unit ?? null)) { page.hover = near?.unit ?? null; schedule(); }
  if (!near) { tooltip.hidden = true; return; }
  const token = plot.tokenAt(event.clientX, page.view);
  const label = page.labels.get(near.unit);
  tooltip.textContent = `unit ${near.unit}: ${near.value.toFixed(3)} at ${token} ` +
    `"${shownWord(page.chunk.words[token - page.chunk.start])}"${label?.label ? ` · ${label.label}` : ""}`;
  tooltip.style.left = `${event.pageX + 12}px`;
  tooltip.style.top = `${event.pageY + 12}px`;
  tooltip.hidden = false;
}

function wireControls() {
  const { view } = page;
  const step = (fraction) => () => moveTo(view.position + fraction * Math.max(1, Math.round(view.size)));
  $("layer").addEventListener("change", () => act(async () => {
    view.layer = $("layer").value;
    checkView(view, page.project);
    page.match = null;
    for (const id of ["results", "match-summary", "colour-legend"]) $(id).replaceChildren();
    showMatchStatus();
    view.match = false;
    if (!view.brush) view.units = null;
    remember();
    loadLabels();
    await Promise.all([showView(), selectUnits()]);
  }));
  $("page-back").addEventListener("click", step(-1));
  $("step-back").addEventListener("click", step(-0.1));
  $("step-forward").addEventListener("click", step(0.1));
  $("page-forward").addEventListener("click", step(1));
  $("position").addEventListener("change", () => moveTo(Number($("position").value) || 0));
  $("size").addEventListener("change", () => resize(Number($("size").value) || view.size));
  $("zoom-in").addEventListener("click", () => resize(view.size / 2));
  $("zoom-out").addEventListener("click", () => resize(view.size * 2));
  let reselect = 0;
  const afterSelectionInput = () => {
    syncControls();
    remember();
    schedule();
    clearTimeout(reselect);
    $("units").setAttribute("aria-busy", "true");
    reselect = setTimeout(() => act(selectUnits), 250);
  };
  $("threshold").addEventListener("input", () => { view.threshold = Number($("threshold").value); afterSelectionInput(); });
  for (const [id, side] of [["pad-left", 0], ["pad-right", 1]]) {
    $(id).addEventListener("change", () => { view.padding[side] = clamp(Number($(id).value) || 0, 0, 1000); afterSelectionInput(); });
  }
  $("controls").addEventListener("submit", (event) => { event.preventDefault(); act(() => runSearch(true)); });
  $("hit-back").addEventListener("click", () => act(() => showHit((page.hit - 1 + page.hits.length) % page.hits.length)));
  $("hit-forward").addEventListener("click", () => act(() => showHit((page.hit + 1) % page.hits.length)));
  $("colour-by").addEventListener("change", () => act(async () => {
    page.colourBy = $("colour-by").value;
    if (page.match) renderMatch();
  }));
  $("match-form").addEventListener("submit", (event) => {
    event.preventDefault();
    view.matchOptions = {
      length: clamp(Math.round(Number($("match-length").value) || 0), 0, 1000),
      left: $("match-left").checked, right: $("match-right").checked,
    };
    act(runMatch);
  });
  $("add-unit").addEventListener("submit", (event) => {
    event.preventDefault();
    act(async () => {
      const unit = Number($("unit-input").value);
      const count = layerInfo()?.units ?? 0;
      if (!Number.isInteger(unit) || unit < 0 || unit >= count) {
        throw new Error(`unit: layer '${view.layer}' has units 0..${count - 1}, got '${$("unit-input").value}'`);
      }
      if (!(view.units ?? []).includes(unit)) setUnits([...(view.units ?? []), unit]);
      $("unit-input").value = "";
    });
  });
  document.addEventListener("keydown", (event) => {
    if (event.target.closest("input, select, textarea") || event.ctrlKey || event.metaKey || event.altKey) return;
    const moves = { ArrowLeft: -0.1, ArrowRight: 0.1 };
    if (event.key in moves) step(moves[event.key] * (event.shiftKey ? 10 : 1))();
    else if (event.key === "+" || event.key === "=") resize(view.size / 2);
    else if (event.key === "-") resize(view.size * 2);
    else if (event.key === "Escape" && view.brush) { setBrush(null); setUnits(null); }
    else return;
    event.preventDefault();
  });
  window.addEventListener("resize", schedule);
  wireGestures($("view"), plot, {
    view: () => view, tokens: page.project.tokens, ready: () => page.chunk !== null,
    preview: (range) => { page.preview = range; schedule(); },
    brush: setBrush,
    padding: (padding) => { view.padding = padding; syncControls(); renderSelection(); schedule(); },
    paddingDone: () => { remember(); act(selectUnits); },
    scroll: (steps) => moveTo(view.position + steps * Math.max(1, Math.round(view.size / 20))),
    zoom: (factor) => resize(view.size * factor),
    hover: hoverPlot,
  });
}

// -- start ---------------------------------------------------------------------------------------------------------
async function start() {
  page.view = parseView(location.search);
  page.service = new ExplorerService(page.view.project);
  const project = page.project = await page.service.describe();
  document.title = `seqvis: ${project.name}`;
  $("project-name").textContent = project.name;
  $("project-sizes").textContent = `${formatCount(project.tokens)} tokens · ${project.layers.length} layers`;
  $("layer").replaceChildren(...project.layers.map((layer) =>
    new Option(`${layer.name} (${layer.units} units)`, layer.name)));
  const colourTracks = project.meta.filter((track) => track.type === "discrete" || track.type === "scalar");
  $("colour-by").replaceChildren(new Option("selected units on", ""),
    ...colourTracks.map((track) => new Option(track.name, track.name)));
  $("colour-by-row").hidden = !colourTracks.length;
  page.view.layer ??= project.layers[0]?.name;
  page.view.size = Math.min(page.view.size, Math.max(MIN_SIZE, project.tokens));
  syncControls();
  wireControls();
  renderSelection();
  checkView(page.view, project);
  remember();
  const wantsMatch = page.view.match;     // selecting units below starts a new selection, which clears it
  loadLabels();
  const loads = [showView()];
  if (page.view.brush && !page.view.units) loads.push(selectUnits());
  if (page.view.query) loads.push(runSearch(false));
  await Promise.all(loads);
  if (wantsMatch && page.view.units?.length) await runMatch();
}

act(start);
