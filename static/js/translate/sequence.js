// The translation view, Seq2Seq-Vis style, in rows over a shared width: the source words, the attention between
// them and the output words as a bipartite graph, the output words, and the top-k candidates of every step.
// Gestures: click a word to select it; drag from an output word to a source word to put that step's attention
// there; click a candidate to force the output to begin with it.
import { el } from "../common.js";
import { svg, tip } from "./svg.js";

const MIN_COLUMN = 62;        // px per output step or source word before the view scrolls sideways
const GUTTER = 96;            // px of the row labels
const GRAPH_HEIGHT = 96;
const MIN_WEIGHT = 0.01;      // thinner attention is not drawn

export const probability = (logProb) => (logProb === null ? 0 : Math.exp(logProb));
// A score (a sum of log-probabilities; null for a word the model rules out) with two decimals, never "-0.00".
export const formatScore = (value) => (value === null ? "−∞" : Math.abs(value) < 0.005 ? "0.00" : value.toFixed(2));
export const percent = (p) => (p >= 0.995 ? "100%" : p >= 0.01 ? `${Math.round(100 * p)}%` : p > 0 ? "<1%" : "0%");

// A row's width: the panel's, or wider when its words would not fit (the view then scrolls sideways).
const rowWidth = (container, columns) => Math.max(container.clientWidth - GUTTER, columns * MIN_COLUMN);
const columnsStyle = (count, width) => `width: ${width}px; grid-template-columns: repeat(${count}, minmax(0, 1fr))`;

// A row of words `width` px wide; each activates by click or Enter (by `onPointerDown`, which then owns the mouse,
// when given).
function tokenRow(words, side, width, { classes, selected, onActivate, onPointerDown }) {
  return el("div", { class: `tokens ${side}`, style: columnsStyle(words.length, width) },
    ...words.map((word, i) => el("span", {
      class: ["tok", ...classes(i), selected === i ? "selected" : null].filter(Boolean).join(" "),
      "data-link": `${side}:${i}`, "data-side": side, "data-index": i, tabindex: 0, role: "button",
      title: `${side === "enc" ? "source word" : "output word"} ${i}: ${word}`,
      onpointerdown: onPointerDown ? (event) => onPointerDown(event, i) : undefined,
      onclick: onPointerDown ? undefined : () => onActivate(i),
      onkeydown: (event) => {
        if (event.key !== "Enter" && event.key !== " ") return;
        event.preventDefault();
        onActivate(i);
      },
    }, el("span", { class: "word" }, word))));
}

// The attention graph between the source row (`sourceWidth` px) and the output row (`outputWidth` px): an edge
// from source word s (top) to output word t (bottom) per weight, as thick and as opaque as the weight; edited steps
// in the edit colour.
function graph(sourceWidth, outputWidth, attention, sources, edited) {
  const steps = attention.length;
  const width = Math.max(sourceWidth, outputWidth);
  const xs = (s) => ((s + 0.5) * sourceWidth) / sources;
  const xt = (t) => ((t + 0.5) * outputWidth) / steps;
  const h = GRAPH_HEIGHT;
  const edges = [];
  attention.forEach((row, t) => row.forEach((w, s) => {
    if (w < MIN_WEIGHT) return;
    edges.push(svg("path", {
      class: edited.has(t) ? "edge edited" : "edge", "data-link": `enc:${s} dec:${t}`,
      d: `M${xs(s)},0 C${xs(s)},${h / 2} ${xt(t)},${h / 2} ${xt(t)},${h}`,
      "stroke-width": (0.6 + 7 * w).toFixed(2), "stroke-opacity": (0.12 + 0.88 * w).toFixed(3),
    }, tip(`step ${t} attends ${percent(w)} to source word ${s}`)));
  }));
  return svg("svg", { class: "graph", width, height: h, viewBox: `0 0 ${width} ${h}` }, ...edges,
    svg("line", { class: "drag-line", x1: 0, y1: 0, x2: 0, y2: 0, visibility: "hidden" }));
}

// The top-k candidates of each step as buttons: the probability as a bar, the word taken marked.
function topK(hypothesis, width, onForce) {
  return el("div", { class: "topk", style: columnsStyle(hypothesis.tokens.length, width) },
    ...hypothesis.top.map((top, t) => el("div", { class: "candidates", "data-link": `dec:${t}` },
      ...top.tokens.map((word, rank) => {
        const p = probability(top.log_probs[rank]);
        const chosen = word === hypothesis.tokens[t];
        return el("button", {
          type: "button", class: chosen ? "cand chosen" : "cand", style: `--p: ${p.toFixed(4)}`,
          "data-step": t, "data-word": word,
          title: chosen ? `step ${t}: '${word}' (${percent(p)}), the word taken`
            : `step ${t}: '${word}' (${percent(p)}); click to force the output to continue with it here`,
          onclick: chosen ? undefined : () => onForce(t, word),
        }, el("span", { class: "word" }, word), el("span", { class: "p" }, percent(p)));
      }))));
}

// Render the view into `container`. `hypothesis` is the one shown; `marks` says what the edits touched:
// {forced: output steps forced by the prefix, edited: Set of steps with attention edits, swapped: source position
// or null}; `selected` {side, index} or null.
export function renderSequence(container, {
  translation, hypothesis, marks, selected, onSelect, onForce, onAttention,
}) {
  const sources = translation.source.tokens;
  const outputs = hypothesis.tokens;
  const sourceWidth = rowWidth(container, sources.length);
  const outputWidth = rowWidth(container, outputs.length);
  const pick = (side) => (selected?.side === side ? selected.index : null);
  const attention = hypothesis.attention;
  const graphNode = attention ? graph(sourceWidth, outputWidth, attention, sources.length, marks.edited) : null;

  // Drag from an output word to a source word: that step's attention goes to the word. A press that does not
  // move selects the output word.
  const startDrag = (event, t) => {
    if (event.button !== 0) return;
    const token = event.currentTarget;
    const origin = { x: event.clientX, y: event.clientY };
    let moved = false;
    const line = graphNode?.querySelector(".drag-line");
    token.setPointerCapture(event.pointerId);
    const move = (e) => {
      moved ||= Math.hypot(e.clientX - origin.x, e.clientY - origin.y) > 4;
      if (!moved || !line) return;
      const box = graphNode.getBoundingClientRect();
      line.setAttribute("x1", ((t + 0.5) * outputWidth) / outputs.length);
      line.setAttribute("y1", GRAPH_HEIGHT);
      line.setAttribute("x2", e.clientX - box.left);
      line.setAttribute("y2", e.clientY - box.top);
      line.setAttribute("visibility", "visible");
      container.classList.add("dragging");
    };
    const up = (e) => {
      token.removeEventListener("pointermove", move);
      token.removeEventListener("pointerup", up);
      token.removeEventListener("pointercancel", up);
      container.classList.remove("dragging");
      line?.setAttribute("visibility", "hidden");
      if (!moved) { onSelect("dec", t); return; }
      if (e.type !== "pointerup" || !attention) return;
      const target = document.elementFromPoint(e.clientX, e.clientY)?.closest(".tok[data-side=enc]");
      if (target) onAttention(t, Number(target.dataset.index));
    };
    token.addEventListener("pointermove", move);
    token.addEventListener("pointerup", up);
    token.addEventListener("pointercancel", up);
  };

  const row = (label, hint, body) => el("div", { class: "seq-row" },
    el("span", { class: "seq-label", title: hint }, label), body);
  const width = Math.max(sourceWidth, outputWidth) + GUTTER;
  container.replaceChildren(el("div", { class: "seq", style: `width: ${width}px` },
    row("source", "the source words (encoder tokens); click one to swap it or see its neighbours",
      tokenRow(sources, "enc", sourceWidth, {
        selected: pick("enc"), onActivate: (s) => onSelect("enc", s),
        classes: (s) => [marks.swapped === s ? "swapped" : null],
      })),
    attention ? row("attention", "drag from an output word to a source word to put its attention there", graphNode)
      : row("attention", "", el("p", { class: "muted note no-attention" },
        "This model's decoder returns no attention.")),
    row("output", "the output words (decoder tokens) of the hypothesis shown; click one to edit its attention",
      tokenRow(outputs, "dec", outputWidth, {
        selected: pick("dec"), onPointerDown: startDrag, onActivate: (t) => onSelect("dec", t),
        classes: (t) => [t < marks.forced ? "forced" : null, marks.edited.has(t) ? "edited" : null,
          hypothesis.finished && t === outputs.length - 1 ? "end" : null],
      })),
    row(`top ${hypothesis.top[0]?.tokens.length ?? ""}`, "the most likely words at each step; click one to force it",
      topK(hypothesis, outputWidth, onForce))));
}
