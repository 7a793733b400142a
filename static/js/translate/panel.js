// The side panel: the hypotheses returned, the what-if edits with the original and edited translation side by side,
// and the selected word's tools (swap it for a substitute, edit a step's attention weights, ask for neighbours).
import { el } from "../common.js";
import { formatScore as score, percent, probability } from "./sequence.js";

export function renderHypotheses(list, { hypotheses, shown, onPick }) {
  list.replaceChildren(...hypotheses.map((h, i) => el("li", {
    class: i === shown ? "active" : null, "data-rank": i, tabindex: 0,
    title: `score ${score(h.score)} (sum of log-probabilities)${h.finished ? "" : "; unfinished"}`,
    onclick: () => onPick(i),
    onkeydown: (event) => { if (event.key === "Enter") onPick(i); },
  }, el("span", { class: "rank" }, `${i + 1}`), el("span", { class: "text" }, h.text || "∅"),
  el("span", { class: "score" }, score(h.normalized)))));
}

// One translation's words, those that differ from `other`'s at the same place marked.
function words(tokens, other, changedAt = null) {
  return el("span", { class: "snippet" }, ...tokens.flatMap((word, i) => [
    i ? " " : null,
    el("span", { class: (other && other[i] !== word) || i === changedAt ? "changed" : null }, word)]));
}

// The edits in force (each removable) and, when there are any, the original and edited translations side by side
// (`original` and `shown` null when the edits could not be decoded: the list then still offers to remove them).
export function renderEdits(container, { state, edits, original, shown, onRemove, onReset }) {
  const items = [];
  if (state.prefix) {
    items.push(["prefix", "forced start: ", el("code", {}, state.prefix)]);
  }
  for (const { step, weights } of state.attention) {
    const sources = shown?.source.tokens;
    const normalised = edits?.attention?.[String(step)] ?? weights;
    const total = normalised.reduce((a, b) => a + b, 0) || 1;
    const top = normalised.map((w, s) => [w / total, s]).sort((a, b) => b[0] - a[0]).filter(([w]) => w >= 0.05)
      .slice(0, 3);
    items.push([`attention:${step}`, `attention at step ${step}: `,
      el("code", {}, top.map(([w, s]) => `${sources?.[s] ?? `word ${s}`} ${percent(w)}`).join(", "))]);
  }
  if (state.swap) {
    const from = edits?.swap?.from ?? `word ${state.swap.position}`;
    items.push(["swap", "swapped: ", el("code", {}, `${from} → ${state.swap.word}`)]);
  }
  if (!items.length) {
    container.replaceChildren(el("p", { class: "muted note" },
      "No edits. Click a top-k word or a tree node to force it, drag an output word to a source word or click an " +
      "attention cell to move attention, click a source word to swap it."));
    return;
  }
  const list = el("ul", { class: "edit-list" }, ...items.map(([key, label, value]) => el("li", { "data-edit": key },
    label, value, el("button", {
      type: "button", class: "remove", title: "remove this edit and re-decode", onclick: () => onRemove(key),
    }, "×"))));
  const reset = el("button", { type: "button", class: "reset", onclick: onReset }, "Remove all edits");
  if (!original || !shown) {
    container.replaceChildren(list, reset);
    return;
  }
  const before = original.hypotheses[0];
  const after = shown.hypotheses[0];
  container.replaceChildren(list,
    el("div", { class: "compare" },
      el("div", { class: "side-by-side", id: "compare-original" }, el("h3", {}, "original"),
        words(original.source.tokens, null), el("div", { class: "arrow" }, "↓"),
        words(before.tokens, after.tokens), el("div", { class: "score" }, `score ${score(before.score)}`)),
      el("div", { class: "side-by-side", id: "compare-edited" }, el("h3", {}, "edited"),
        words(shown.source.tokens, null, state.swap?.position ?? null), el("div", { class: "arrow" }, "↓"),
        words(after.tokens, before.tokens), el("div", { class: "score" }, `score ${score(after.score)}`))),
    reset);
}

// The button that opens a word's neighbours, or why there are none (`available`: the project stores training states).
function neighboursButton(available, side, onNeighbours) {
  if (!available) return el("p", { class: "muted note" }, "This project stores no training states to search.");
  return el("button", { type: "button", class: "primary", id: "show-neighbours", onclick: onNeighbours },
    `Neighbours of its ${side} state`);
}

// The selected source word (`swappedFrom`: the typed word when a swap replaced it): its substitutes (swap on
// click) and its neighbours.
export function renderSourceTools(container, { word, swappedFrom, position, substitutes, embeddings, neighbours,
  onSwap, onNeighbours }) {
  let offer;
  if (!embeddings) {
    offer = el("p", { class: "muted note" }, "This model exposes no source embeddings to offer substitutes from.");
  } else if (!substitutes) {
    offer = el("p", { class: "muted note" }, "Finding substitutes…");
  } else {
    offer = el("div", { class: "substitutes" }, ...substitutes.neighbours.map((n) => el("button", {
      type: "button", class: "substitute", "data-word": n.word,
      title: `cosine of the embeddings ${n.similarity.toFixed(3)}`,
      onclick: () => onSwap(position, n.word),
    }, n.word, el("span", { class: "p" }, n.similarity.toFixed(2)))));
  }
  container.replaceChildren(
    el("p", { class: "selected-word" }, "source word ",
      swappedFrom ? el("strong", {}, `'${swappedFrom}' → '${word}'`) : el("strong", {}, `'${word}'`),
      ` (position ${position})`),
    el("h3", {}, `swap ${swappedFrom ? `'${swappedFrom}'` : "it"} for one of its embedding neighbours`), offer,
    neighboursButton(neighbours, "encoder", onNeighbours));
}

// The selected output step: its probability, its attention as editable weights, its neighbours.
export function renderStepTools(container, { step, hypothesis, sources, edited, neighbours, onApply, onRemove,
  onNeighbours }) {
  const word = hypothesis.tokens[step];
  const p = probability(hypothesis.log_probs[step]);
  const weights = hypothesis.attention?.[step];
  let editor = el("p", { class: "muted note" }, "This model's decoder returns no attention to edit.");
  if (weights) {
    const inputs = weights.map((w) => el("input", { type: "range", min: 0, max: 1, step: 0.01, value: w.toFixed(2) }));
    const outputs = weights.map((w) => el("output", {}, percent(w)));
    const normalised = () => {
      const values = inputs.map((input) => Number(input.value));
      const total = values.reduce((a, b) => a + b, 0);
      return values.map((v) => (total > 0 ? v / total : 0));
    };
    const refresh = () => normalised().forEach((w, s) => { outputs[s].textContent = percent(w); });
    inputs.forEach((input) => input.addEventListener("input", refresh));
    editor = el("form", {
      class: "weights", autocomplete: "off",
      onsubmit: (event) => { event.preventDefault(); onApply(step, inputs.map((input) => Number(input.value))); },
    },
    ...sources.map((source, s) => el("label", { "data-link": `enc:${s}` },
      el("span", { class: "word" }, source), inputs[s], outputs[s])),
    el("div", { class: "buttons" },
      el("button", { type: "submit", class: "primary" }, "Re-decode with these weights"),
      edited ? el("button", { type: "button", onclick: () => onRemove(step) }, "Remove this edit") : null));
  }
  container.replaceChildren(
    el("p", { class: "selected-word" }, "output word ", el("strong", {}, `'${word}'`),
      ` (step ${step}, ${percent(p)})`),
    el("h3", {}, "attention of this step (weights are normalised)"), editor,
    neighboursButton(neighbours, "decoder", onNeighbours));
}

// Each concept's best unit of one side (encoder or decoder states), best IoU first; a concept whose best unit does
// not beat the best any unit reaches with the concepts shifted is shown faded.
export function renderConceptUnits(table, { concepts }) {
  const two = (value) => (typeof value === "number" ? value.toFixed(2) : "–");
  const rows = [...concepts].sort((a, b) => b.iou - a.iou);
  table.replaceChildren(
    el("thead", {}, el("tr", {}, ...["concept", "unit", "IoU", "AP", "base"].map((head) => el("th", {}, head)))),
    el("tbody", {}, ...rows.map((concept) => el("tr", {
      "data-unit": concept.unit,
      class: concept.iou > concept.best_baseline_iou ? null : "weak",
      title: `unit ${concept.unit} is on ${concept.direction < 0 ? "below" : "above"} ${concept.threshold.toFixed(3)} ` +
        `where ${concept.label} (${concept.category}); base: the best IoU of any unit with the concepts shifted`,
    },
    el("td", {}, concept.label),
    el("td", {}, `${concept.unit}${concept.direction < 0 ? " −h" : ""}`),
    el("td", {}, two(concept.iou)), el("td", {}, two(concept.ap)), el("td", {}, two(concept.best_baseline_iou))))));
}
