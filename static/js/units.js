// The CNN unit inspector: per layer, unit cards (sortable, filterable), NetDissect's detector graph, and a unit's
// detail with its ablation effects. The view lives in the address; every API error is shown in the page.
import { api, el, showError } from "./common.js";
import { unitCard } from "./units/cards.js";
import { ablationResult, rankingResult, unitDetail } from "./units/detail.js";
import { detectorGraph } from "./units/detectors.js";
import { searchPanel } from "./units/search.js";
import { parseView, viewQuery } from "./units/state.js";

const $ = (id) => document.getElementById(id);
let view;
let base;
let layers = [];
let cards = [];
let current = null;                // the unit whose detail is shown
let detailRequest = 0;
let searchRequest = 0;
let search = null;                 // the feature search panel
let canAblate = false;             // the project names its classes and held-out targets

const route = (path, params = {}) => `${base}/${path}?${new URLSearchParams(params)}`;

// Run an API call with `node` marked busy; the error box is cleared as it starts and shows its error (the promise
// then resolves to null).
async function busy(node, call) {
  node?.setAttribute("aria-busy", "true");
  showError(null);
  try {
    return await call();
  } catch (error) {
    showError(error);
    return null;
  } finally {
    node?.setAttribute("aria-busy", "false");
  }
}

function syncAddress(push = false) {
  const query = viewQuery(view);
  if (query !== location.search) history[push ? "pushState" : "replaceState"](null, "", query);
}

function visibleCards() {
  const filter = view.filter.trim().toLowerCase();
  return cards.filter((card) => (!view.detectorsOnly || card.detector) &&
    (!filter || card.label.toLowerCase().includes(filter)));
}

function drawCards() {
  const shown = visibleCards();
  $("unit-count").textContent = `${shown.length} of ${cards.length}`;
  $("unit-cards").replaceChildren(...shown.map((card) => unitCard(card, {
    project: view.project, layer: view.layer, selected: card.unit === view.unit, onOpen: openUnit })));
  if (!shown.length && cards.length) {
    $("unit-cards").append(el("p", { class: "muted note" }, "No unit matches the filter."));
  }
}

async function loadUnits() {
  const data = await busy($("units-view"), () => api(route("units", { layer: view.layer, sort: view.sort })));
  cards = data?.units ?? [];
  drawCards();
}

async function loadDetectors() {
  const data = await busy($("detectors-view"), () => api(route("detectors", { layer: view.layer })));
  $("detector-note").textContent = data ? `IoU ≥ ${data.min_iou}; click a bar to show its units` : "";
  $("detectors").replaceChildren(...(data ? detectorGraph(data, { onPick: pickConcept }) : []));
}

function pickConcept(concept) {
  view.filter = concept;
  view.detectorsOnly = true;
  $("filter").value = concept;
  $("detectors-only").checked = true;
  syncAddress(true);
  drawCards();
}

async function openUnit(unit, push = true) {
  view.unit = unit;
  syncAddress(push);
  for (const node of document.querySelectorAll(".unit-card.selected")) node.classList.remove("selected");
  document.querySelector(`.unit-card[data-unit="${unit}"]`)?.classList.add("selected");
  if (unit === null) {
    $("detail").hidden = true;
    current = null;
    return;
  }
  const request = ++detailRequest;
  $("detail").hidden = false;
  const data = await busy($("detail"), () => api(route("unit", { layer: view.layer, unit })));
  if (request !== detailRequest) return;
  current = data;
  $("detail-title").textContent = data ? `Unit ${data.unit} of ${data.layer}` : `Unit ${unit}`;
  $("detail-body").replaceChildren(...(data ? unitDetail(data, view.project, (item) => {
    pickQuery(item);
    $("search-view").scrollIntoView({ behavior: "smooth", block: "start" });
  }) : []));
  $("ablation").replaceChildren();
  $("ablate-unit").disabled = !data || !canAblate;
  $("ablate-label").disabled = !data?.detector || !canAblate;
  $("ablate-label").textContent = data?.detector ? `Ablate all “${data.label}” detectors` : "Ablate all detectors of its label";
}

async function ablate(byLabel) {
  if (!current) return;
  const unit = current;
  const body = byLabel ? { layer: unit.layer, label: unit.label } : { layer: unit.layer, units: [unit.unit] };
  $("ablation").replaceChildren(el("p", { class: "muted note" }, "measuring…"));
  const result = await busy($("ablation"), () => api(`${base}/ablate`, body));
  if (current !== unit) return;
  $("ablation").replaceChildren(...(result ? ablationResult(result, unit) : []));
}

async function rank(event) {
  event.preventDefault();
  const name = $("rank-class").value;
  $("ranking").replaceChildren(el("p", { class: "muted note" }, `ablating every unit of ${view.layer} in turn…`));
  $("rank").disabled = true;
  const result = await busy($("ranking"), () => api(route("rank", { layer: view.layer, class: name })));
  $("rank").disabled = false;
  $("ranking").replaceChildren(...(result ? rankingResult(result, (unit) => openUnit(unit)) : []));
}

function pickQuery(item) {
  view.query = { item, box: null, mask: null };
  syncAddress(true);
  runSearch();
}

// Wait until the layer's features for region search are computed (once, in the background), saying how far along
// they are; false when a newer search took over meanwhile.
const FEATURES_POLL_MS = 1000;
async function featuresReady(layer, request) {
  for (;;) {
    const answer = await api(route("features", { layer }));
    if (request !== searchRequest) return false;
    if (answer.status === "ready") return true;
    if (answer.status === "failed") throw new Error(`the features of ${layer} could not be computed: ${answer.error}`);
    const done = answer.progress?.fraction != null ? ` ${Math.round(100 * answer.progress.fraction)}%` : "";
    $("search-status").textContent = `computing the features of ${layer} over the dataset (once)…${done}`;
    await new Promise((resolve) => { setTimeout(resolve, FEATURES_POLL_MS); });
  }
}

// Show the query image and, with a box, the regions most similar to it at the current layer.
async function runSearch() {
  const query = view.query ?? { item: 0, box: null, mask: null };
  const request = ++searchRequest;
  search.show(query.item, query.box, Boolean(query.mask));
  if (!query.box && !query.mask) {
    $("search-status").textContent = "Drag a box on the image to search.";
    $("search-results").replaceChildren();
    api(route("features", { layer: view.layer })).catch(showError);     // computed while the user picks a region
    return;
  }
  if (!(await busy($("search-view"), () => featuresReady(view.layer, request)))) return;
  $("search-status").textContent = `searching ${view.layer}…`;
  const region = query.box ? { box: query.box } : { mask: query.mask };
  const answer = await busy($("search-view"), () => api(`${base}/search`,
    { layer: view.layer, item: query.item, ...region, k: 12 }));
  if (request !== searchRequest) return;
  $("search-status").textContent = answer ? `${answer.results.length} most similar regions at ${answer.layer} ` +
    `(${answer.window[0]}×${answer.window[1]} cells) to ${query.box ? "box" : "the brushed region in"} ` +
    `${answer.region.join(",")} of image ${answer.item}` : "";
  $("search-results").replaceChildren(...(answer ? search.draw(answer, pickQuery) : []));
}

async function showLayer() {
  $("layer").value = view.layer;
  const layer = layers.find((entry) => entry.name === view.layer);
  $("layer-info").textContent = layer ? `${layer.units} units · ${layer.height}×${layer.width} maps · ` +
    `${layer.detectors} detectors · quantile ${layer.quantile}, ${layer.union} union` : "";
  $("ranking").replaceChildren();
  await Promise.all([loadUnits(), loadDetectors(), openUnit(view.unit, false), runSearch()]);
}

async function start() {
  try {
    view = parseView(location.search);
  } catch (error) {
    showError(error);
    return;
  }
  base = `api/units/${encodeURIComponent(view.project)}`;
  $("project-name").textContent = view.project;
  document.title = `seqvis: ${view.project} units`;
  const data = await busy(document.body, () => api(`${base}/layers`));
  if (!data) return;
  layers = data.layers;
  search = searchPanel({ project: view.project, imageSize: data.image_size, onSearch: (item, box, mask) => {
    view.query = { item, box, mask };
    syncAddress(true);
    runSearch();
  } });
  $("layer").replaceChildren(...layers.map((layer) => el("option", { value: layer.name }, layer.name)));
  $("project-sizes").textContent = `${layers.length} layer${layers.length === 1 ? "" : "s"} · ${data.images} images`;
  view.layer ??= layers[layers.length - 1]?.name;
  $("sort").value = view.sort;
  $("filter").value = view.filter;
  $("detectors-only").checked = view.detectorsOnly;
  syncAddress();
  const classes = await api(`${base}/classes`).catch((error) => {
    $("ablate-unit").title = $("ablate-label").title = $("rank").title = `no ablation: ${error.message}`;
    return null;
  });
  $("rank-class").replaceChildren(...(classes?.classes ?? []).map((name) => el("option", { value: name }, name)));
  canAblate = classes !== null;
  $("rank").disabled = !canAblate;
  await showLayer();
}

$("layer").addEventListener("change", () => {
  view.layer = $("layer").value;
  view.unit = null;
  syncAddress(true);
  showLayer();
});
$("sort").addEventListener("change", () => {
  view.sort = $("sort").value;
  syncAddress(true);
  loadUnits();
});
$("detectors-only").addEventListener("change", () => {
  view.detectorsOnly = $("detectors-only").checked;
  syncAddress(true);
  drawCards();
});
$("filter").addEventListener("input", () => {
  view.filter = $("filter").value;
  syncAddress();
  drawCards();
});
$("controls").addEventListener("submit", (event) => event.preventDefault());
$("detail-close").addEventListener("click", () => openUnit(null));
$("ablate-unit").addEventListener("click", () => ablate(false));
$("ablate-label").addEventListener("click", () => ablate(true));
$("rank-form").addEventListener("submit", rank);
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && view?.unit !== null && !event.target.matches("input, select")) openUnit(null);
});
window.addEventListener("popstate", () => {
  const previous = view;
  try {
    view = parseView(location.search);
  } catch (error) {
    showError(error);
    return;
  }
  view.layer ??= previous.layer;
  $("sort").value = view.sort;
  $("filter").value = view.filter;
  $("detectors-only").checked = view.detectorsOnly;
  if (view.layer !== previous.layer) showLayer();
  else if (view.sort !== previous.sort) loadUnits().then(() => openUnit(view.unit, false));
  else {
    drawCards();
    openUnit(view.unit, false);
    if (JSON.stringify(view.query) !== JSON.stringify(previous.query)) runSearch();
  }
});

start();
