// The side panel: the selected units (editable, with concept badges) and the match results with their summaries.
import { el } from "../common.js";
import { unitColour } from "./plot.js";
import { shownWord } from "./tracks.js";

const tint = (share) => (share > 0 ? `color-mix(in srgb, var(--on) ${Math.round(12 + 58 * share)}%, transparent)` : "");

// A unit's concept badge ("string .42"), or null when there is no label for it.
function badge(label) {
  if (!label?.label) return null;
  const iou = typeof label.iou === "number" ? ` ${label.iou.toFixed(2).replace(/^0/, "")}` : "";
  const direction = label.direction ? ` (${label.direction})` : "";
  return el("span", { class: "badge", title: `best concept: ${label.label}${direction}, IoU${iou || " unknown"}` },
    `${label.label}${iou}`);
}

// The selected units, each with its plot colour, concept badge and a remove button.
export function renderUnits(list, { units, labels, onRemove, onHover }) {
  list.replaceChildren(...units.map((unit, index) => el("li", {
    "data-unit": unit,
    onmouseenter: () => onHover(unit),
    onmouseleave: () => onHover(null),
  },
  el("span", { class: "swatch", style: `background: ${unitColour(index)}` }),
  el("span", { class: "unit-id" }, `unit ${unit}`),
  badge(labels.get(unit)),
  el("button", { type: "button", class: "remove", title: `remove unit ${unit}`, onclick: () => onRemove(unit) }, "×"))));
}

// The ranked match results: each a context snippet tinted by how many units are on, the match underlined.
// `separator` goes between words (a space for word tokens, nothing for characters).
export function renderResults(list, { results, units, separator, active, onPick }) {
  list.replaceChildren(...results.map((result, index) => {
    const { context } = result;
    const words = context.words.map((word, i) => {
      const token = context.start + i;
      const inside = token >= result.start && token < result.stop;
      const share = units ? context.on_counts[i] / units : 0;
      return el("span", { class: inside ? "matched" : null, style: share ? `background: ${tint(share)}` : undefined },
        shownWord(word));
    });
    return el("li", {
      class: index === active ? "active" : null, "data-result": index, "data-start": result.start,
      title: `tokens ${result.start}–${result.stop - 1}: click to go there`, onclick: () => onPick(result, index),
    },
    el("div", { class: "result-head" },
      el("strong", {}, `#${index + 1}`),
      el("span", {}, `@${result.start}`),
      el("span", {}, `length ${result.length ?? result.stop - result.start}`),
      result.on !== undefined ? el("span", { title: "selected units on all along / units on anywhere in it" },
        `${result.on}/${units} on${result.union !== undefined ? ` · union ${result.union}` : ""}`) : null),
    el("div", { class: "snippet" }, ...words.flatMap((word, i) => (i && separator ? [separator, word] : [word]))));
  }));
}

// A bar chart of counts (a length histogram): {labels, counts, title}.
export function histogram({ title, labels, counts }) {
  const most = Math.max(1, ...counts);
  return el("figure", { class: "histogram" },
    el("figcaption", {}, title),
    el("div", { class: "columns" }, ...counts.map((count, i) => el("div", { class: "column", title: `${labels[i]}: ${count}` },
      el("div", { style: `height: ${Math.round(100 * count / most)}%` }),
      el("span", {}, labels[i])))));
}

// A heat strip of how often each value of a meta track occurs among the matched tokens: {name, labels, counts}.
export function heatmap({ name, labels, counts }) {
  const total = counts.reduce((sum, count) => sum + count, 0) || 1;
  const most = Math.max(1, ...counts);
  const order = counts.map((_, i) => i).sort((a, b) => counts[b] - counts[a]);
  return el("figure", { class: "heatmap", "data-meta": name },
    el("figcaption", {}, name),
    el("div", { class: "heat" }, ...order.map((i) => el("span", {
      title: `${labels[i]}: ${counts[i]} of the matched tokens (${Math.round(100 * counts[i] / total)}%)`,
      style: `background: color-mix(in srgb, var(--accent) ${Math.round(100 * counts[i] / most)}%, var(--paper))`,
      class: counts[i] / most > 0.55 ? "strong" : null,
    }, labels[i]))));
}
