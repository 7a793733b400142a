// The translation debugger page: translate a source and see every stage of the decoding (source words, attention as
// a graph and a matrix, output words, top-k per step, the beam tree); ask what if (force a word, move attention,
// swap a source word) and compare; ask why (the nearest training states of any word's state). The source, the
// settings and the edits live in the address (history.replaceState), so a session can be shared.
import { act, el, formatCount, showError } from "./common.js";
import { highlight, linkHover } from "./translate/link.js";
import { renderMatrix } from "./translate/matrix.js";
import { renderNeighbours } from "./translate/neighbours.js";
import { renderConceptUnits, renderEdits, renderHypotheses, renderSourceTools, renderStepTools } from "./translate/panel.js";
import { formatScore, renderSequence } from "./translate/sequence.js";
import { TranslateService } from "./translate/service.js";
import { formatState, hasEdits, MAX_BEAM, MAX_TOP_K, parseState } from "./translate/state.js";
import { renderTree } from "./translate/tree.js";

const $ = (id) => document.getElementById(id);
const page = {
  state: null, service: null, info: null,
  result: null,           // {shown, original, edits} of the last decode
  hypothesis: 0,          // the hypothesis shown
  selected: null,         // {side: "enc" | "dec", index}
  substitutes: null,      // the substitutes answer for the selected source word
  neighboursOpen: false,
};

function remember() {
  history.replaceState(null, "", formatState(page.state));
}

// Only the latest request of each kind is shown, whatever order the answers come in.
const tickets = { decode: 0, substitutes: 0, neighbours: 0 };

function busy(text) {
  $("status").textContent = text;
  $("body").setAttribute("aria-busy", String(Boolean(text)));
}

// -- decoding --------------------------------------------------------------------------------------------------
async function decode() {
  const ticket = ++tickets.decode;
  remember();
  busy(hasEdits(page.state) ? "re-decoding…" : "translating…");
  try {
    const result = await page.service.decode(page.state);
    if (ticket !== tickets.decode) return;
    page.result = result;
    page.hypothesis = 0;
    $("body").classList.remove("stale");
    if (!selectionFits()) page.selected = null;
    render();
    if (page.neighboursOpen && page.selected) await loadNeighbours();
  } catch (error) {
    if (ticket === tickets.decode) {
      $("body").classList.toggle("stale", page.result !== null);
      renderEditList(null);          // the edits stay removable when they are what failed
    }
    throw error;
  } finally {
    if (ticket === tickets.decode) busy("");
  }
}

const shown = () => page.result.shown;
const hypothesis = () => shown().hypotheses[page.hypothesis];

function selectionFits() {
  const { selected } = page;
  if (!selected || !page.result) return true;
  const count = selected.side === "enc" ? shown().source.tokens.length : hypothesis().tokens.length;
  return selected.index < count;
}

// The edits the views mark: forced output steps, steps with attention edits, the swapped source word.
function marks() {
  const { state } = page;
  return {
    forced: state.prefix ? (page.result.edits?.prefix.length ?? 0) : 0,
    edited: new Set(state.attention.map((edit) => edit.step)),
    swapped: state.swap?.position ?? null,
  };
}

// -- what-if edits ---------------------------------------------------------------------------------------------
// Force the output to begin with `words` (target words), keeping the other edits.
function force(words) {
  page.state.prefix = words.join(" ");
  return act(decode);
}

function setAttention(step, weights) {
  const edits = page.state.attention.filter((edit) => edit.step !== step);
  page.state.attention = [...edits, { step, weights }].sort((a, b) => a.step - b.step);
  return act(decode);
}

function oneHot(step, source) {
  const weights = shown().source.tokens.map((_, s) => (s === source ? 1 : 0));
  return setAttention(step, weights);
}

function swap(position, word) {
  page.state.swap = { position, word };
  return act(decode);
}

function removeEdit(key) {
  const { state } = page;
  if (key === "prefix") state.prefix = "";
  else if (key === "swap") state.swap = null;
  else if (key.startsWith("attention:")) {
    const step = Number(key.split(":")[1]);
    state.attention = state.attention.filter((edit) => edit.step !== step);
  }
  return act(decode);
}

function resetEdits() {
  Object.assign(page.state, { prefix: "", attention: [], swap: null });
  return act(decode);
}

// -- selection, substitutes, neighbours -------------------------------------------------------------------------
function select(selected) {
  page.selected = selected;
  page.substitutes = null;
  if (selected?.side === "enc" && page.info.embeddings) act(loadSubstitutes);
  renderTools();
  renderViews();
  if (selected && page.neighboursOpen) act(loadNeighbours);
}

async function loadSubstitutes() {
  const ticket = ++tickets.substitutes;
  const { index } = page.selected;
  const answer = await page.service.substitutes(page.state.source, index);
  if (ticket !== tickets.substitutes || page.selected?.side !== "enc" || page.selected.index !== index) return;
  page.substitutes = answer;
  renderTools();
}

async function loadNeighbours() {
  const ticket = ++tickets.neighbours;
  const { side, index } = page.selected;
  const h = hypothesis();
  const view = $("neighbours-view");
  view.hidden = false;
  page.neighboursOpen = true;
  view.setAttribute("aria-busy", "true");
  if (!$("neighbours").hasChildNodes()) {
    $("neighbours").append(el("p", { class: "muted note" },
      "Searching the training states (the first search of a project builds its index)…"));
  }
  try {
    const answer = await page.service.neighbours({
      // A swapped source is asked for as its words (the swap is in them).
      source: page.state.swap ? shown().source.tokens.join(" ") : page.state.source,
      side: side === "enc" ? "encoder" : "decoder", position: index, target: h.tokens.join(" "),
      attention: page.state.attention.filter((edit) => edit.step < h.tokens.length),
    });
    if (ticket !== tickets.neighbours) return;
    renderNeighbours($("neighbours"), answer);
  } catch (error) {
    if (ticket === tickets.neighbours) {
      page.neighboursOpen = false;
      view.hidden = true;
      $("neighbours").replaceChildren();
    }
    throw error;
  } finally {
    if (ticket === tickets.neighbours) view.removeAttribute("aria-busy");
  }
}

function openNeighbours() {
  page.neighboursOpen = true;
  return act(async () => {
    await loadNeighbours();
    $("neighbours-view").scrollIntoView({ behavior: "smooth", block: "nearest" });
  });
}

// -- rendering -------------------------------------------------------------------------------------------------
function renderViews() {
  const translation = shown();
  const h = hypothesis();
  const edited = marks().edited;
  renderSequence($("sequence"), {
    translation, hypothesis: h, marks: marks(), selected: page.selected,
    onSelect: (side, index) => select({ side, index }),
    onForce: (t, word) => force([...h.tokens.slice(0, t), word]),
    onAttention: oneHot,
  });
  renderMatrix($("matrix"), {
    sources: translation.source.tokens, outputs: h.tokens, attention: h.attention, edited,
    selectedStep: page.selected?.side === "dec" ? page.selected.index : null, onAttention: oneHot,
  });
  renderTree($("tree"), {
    tree: translation.tree, hypotheses: translation.hypotheses, shown: page.hypothesis, onForce: force,
  });
  highlight(null);
}

function renderTools() {
  const { selected } = page;
  const container = $("tools");
  if (!selected) {
    container.replaceChildren(el("p", { class: "muted note" }, "Click a source or output word."));
    return;
  }
  if (selected.side === "enc") {
    renderSourceTools(container, {
      word: shown().source.tokens[selected.index], position: selected.index, substitutes: page.substitutes,
      swappedFrom: page.state.swap?.position === selected.index ? page.result.edits?.swap?.from : null,
      embeddings: page.info.embeddings, neighbours: page.info.neighbours, onSwap: swap, onNeighbours: openNeighbours,
    });
  } else {
    renderStepTools(container, {
      step: selected.index, hypothesis: hypothesis(), sources: shown().source.tokens,
      edited: marks().edited.has(selected.index), neighbours: page.info.neighbours,
      onApply: (step, weights) => (weights.some((w) => w > 0) ? setAttention(step, weights)
        : showError(new Error(`attention: step ${step} needs a weight above 0`))),
      onRemove: (step) => removeEdit(`attention:${step}`), onNeighbours: openNeighbours,
    });
  }
}

function render() {
  const translation = shown();
  const h = hypothesis();
  const search = translation.settings.search === "beam" ? `beam ${translation.settings.width}` : "greedy";
  $("shown-label").textContent = `· hypothesis ${page.hypothesis + 1} of ${translation.hypotheses.length}, ` +
    `${search}, score ${formatScore(h.score)}${h.finished ? "" : ", unfinished"}`;
  renderViews();
  renderHypotheses($("hypotheses"), {
    hypotheses: translation.hypotheses, shown: page.hypothesis,
    onPick: (i) => {
      page.hypothesis = i;
      if (!selectionFits()) page.selected = null;
      render();
      if (page.neighboursOpen && page.selected?.side === "dec") act(loadNeighbours);
    },
  });
  renderEditList(page.result);
  renderTools();
}

function renderEditList(result) {
  renderEdits($("edits"), {
    state: page.state, edits: result?.edits, original: result?.original, shown: result?.shown,
    onRemove: removeEdit, onReset: resetEdits,
  });
}

// -- controls and start ----------------------------------------------------------------------------------------
function number(id, name, lo, hi) {
  const text = $(id).value.trim();
  const value = Number(text);
  if (!/^\d+$/.test(text) || value < lo || value > hi) {
    throw new Error(`${name}: must be a whole number from ${lo} to ${hi}, got '${text}'`);
  }
  return value;
}

function syncControls() {
  const { state } = page;
  $("source").value = state.source;
  $("beam").value = state.beam;
  $("top-k").value = state.topK;
}

function wireControls() {
  $("controls").addEventListener("submit", (event) => {
    event.preventDefault();
    act(async () => {
      const { state } = page;
      const beam = number("beam", "beam", 1, MAX_BEAM);
      const topK = number("top-k", "top-k", 1, MAX_TOP_K);
      const source = $("source").value;
      if (source !== state.source) {      // edits belong to the source they were made on
        Object.assign(state, { prefix: "", attention: [], swap: null });
        page.selected = null;
      }
      Object.assign(state, { source, beam, topK });
      await decode();
    });
  });
  $("example").addEventListener("change", () => {
    if (!$("example").value) return;
    $("source").value = $("example").value;
    $("example").value = "";
    $("controls").requestSubmit();
  });
  $("close-neighbours").addEventListener("click", () => {
    page.neighboursOpen = false;
    $("neighbours-view").hidden = true;
  });
  let resizing = 0;
  window.addEventListener("resize", () => {
    cancelAnimationFrame(resizing);
    resizing = requestAnimationFrame(() => { if (page.result) renderViews(); });
  });
  linkHover(document.body);
}

// The chosen side's unit labels: each concept's best unit. The server computes them in the background the first
// time they are asked for; the panel says so and asks again until they are there, or says why there are none.
const LABELS_POLL_MS = 2000;
function loadLabels() {
  const side = $("label-side").value;
  const status = $("labels-status");
  page.service.labels(side).then((answer) => {
    if (side !== $("label-side").value) return;
    if (answer.status === "failed") {
      status.textContent = `No ${side} unit labels: ${answer.error}`;
    } else if (answer.status !== "ready") {
      const done = answer.progress?.fraction != null ? ` ${Math.round(100 * answer.progress.fraction)}%` : "";
      status.textContent = `Computing ${side} unit labels…${done}`;
      setTimeout(loadLabels, LABELS_POLL_MS);
    } else {
      renderConceptUnits($("concept-units"), answer);
      status.textContent = `Each concept's best ${side} unit, by IoU at the unit's best threshold over ` +
        `${formatCount(answer.tokens)} training words.`;
    }
  }, (error) => { status.textContent = `No ${side} unit labels: ${error.message}`; });
}

async function start() {
  page.state = parseState(location.search);
  page.service = new TranslateService(page.state.project);
  wireControls();
  const info = page.info = await page.service.info();
  document.title = `seqvis: ${info.project}`;
  $("project-name").textContent = info.project;
  $("project-name").title = info.description ?? "";
  $("project-sizes").textContent = `${info.source_words} source words · ${info.target_words} output words` +
    (info.has_attention ? "" : " · no attention");
  $("example").append(...info.examples.map((example) => new Option(example, example)));
  $("example").parentElement.hidden = !info.examples.length;
  page.state.source ||= info.examples[0] ?? "";
  syncControls();
  $("label-side").addEventListener("change", () => { $("concept-units").replaceChildren(); loadLabels(); });
  loadLabels();
  if (page.state.source) await decode();
}

act(start);
