// The attention matrix: a row per output step, a column per source word, each cell shaded by its weight. Click a
// cell to put all of that step's attention on that source word.
import { el } from "../common.js";
import { percent } from "./sequence.js";

export function renderMatrix(container, { sources, outputs, attention, edited, selectedStep, onAttention }) {
  if (!attention) {
    container.replaceChildren(el("p", { class: "muted note" }, "This model's decoder returns no attention."));
    return;
  }
  const head = el("tr", {}, el("th", { class: "corner" }),
    ...sources.map((word, s) => el("th", { class: "col", scope: "col", "data-link": `enc:${s}`, title: word },
      el("span", {}, word))));
  const rows = attention.map((weights, t) => el("tr", { class: selectedStep === t ? "selected" : null },
    el("th", { class: "row", scope: "row", "data-link": `dec:${t}`, title: `output step ${t}` },
      edited.has(t) ? el("span", { class: "edit-mark", title: "attention edited at this step" }, "✎ ") : null,
      outputs[t]),
    ...weights.map((w, s) => el("td", {
      "data-link": `dec:${t} enc:${s}`, "data-step": t, "data-source": s,
      style: `--w: ${w.toFixed(4)}`, class: w > 0.55 ? "strong" : null,
      title: `'${outputs[t]}' attends ${percent(w)} to '${sources[s]}'; click to put all of step ${t}'s attention here`,
      onclick: () => onAttention(t, s),
    }, w >= 0.095 ? (w * 100).toFixed(0) : ""))));
  container.replaceChildren(el("table", { class: "matrix" }, el("thead", {}, head), el("tbody", {}, ...rows)),
    el("p", { class: "hint muted" },
      "Click a cell to put all of that step's attention on that source word; ✎ marks edited steps."));
}
