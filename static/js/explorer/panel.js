// The side panel: the selected units (editable, with concept badges) and the match results with their summaries.
import { el } from "../common.js";
import { unitColour } from "./plot.js";
import { metaColour, onTint, shownWord } from "./tracks.js";

const twoDigits = (value) => value.toFixed(2).replace(/^(-?)0\./, "$1.");

// A unit's concept badge ("in string .42"), or null when there is no label for it. A label that does not beat
// the shuffled-label baseline is shown faded.
function badge(label) {
  if (!label?.label) return null;
  const number = (value) => typeof value === "number";
  const details = [
    label.category ? `category ${label.category}` : null,
    label.direction ? `${label.direction} direction` : null,
    number(label.iou) ? `IoU ${twoDigits(label.iou)}` : null,
    number(label.baseline_iou) ? `shuffled-label baseline ${twoDigits(label.baseline_iou)}` : null,
    number(label.ap) ? `average precision ${twoDigits(label.ap)}` : null,
  ].filter(Boolean);
  const weak = number(label.iou) && number(label.baseline_iou) && label.iou <= label.baseline_iou;
  return el("span", {
    class: weak ? "badge weak" : "badge",
    title: `best concept: ${label.label}${details.length ? `; ${details.join(", ")}` : ""}`,
  }, label.label, number(label.iou) ? el("span", { class: "iou" }, twoDigits(label.iou)) : null);
}

// The selected units, each with its plot colour, its id (opens its detail), concept badge and a remove button.
export function renderUnits(list, { units, labels, onOpen, onRemove, onHover }) {
  list.replaceChildren(...units.map((unit, index) => el("li", {
    "data-unit": unit,
    onmouseenter: () => onHover(unit),
    onmouseleave: () => onHover(null),
  },
  el("span", { class: "swatch", style: `background: ${unitColour(index, units.length)}` }),
  el("button", { type: "button", class: "unit-id", title: `unit ${unit}: its best concepts and where it is highest`,
    onclick: () => onOpen(unit) }, `unit ${unit}`),
  badge(labels.get(unit)),
  el("button", { type: "button", class: "remove", title: `remove unit ${unit}`, onclick: () => onRemove(unit) }, "×"))));
}

// How a result's words are tinted: by how many selected units are on (`colourBy` null), or by the value of the
// meta track `colourBy` where the match answer holds the tracks of each result's context.
function wordStyle(context, i, units, colourBy) {
  if (colourBy) {
    const track = context.meta?.[colourBy];
    if (!track) return {};
    const value = track.values[i];
    const label = track.labels?.[i] ?? String(value);
    return { style: `background: ${metaColour(track, value)}`, title: `${colourBy}: ${label}` };
  }
  const share = units ? context.on_counts[i] / units : 0;
  return share ? { style: `background: ${onTint(share)}`, title: `${context.on_counts[i]} of ${units} units on` } : {};
}

// The ranked match results: each a context snippet tinted by how many units are on (or by a meta track), the
// match underlined. `separator` goes between words (a space for word tokens, nothing for characters).
export function renderResults(list, { results, units, separator, active, colourBy, onPick }) {
  list.replaceChildren(...results.map((result, index) => {
    const { context } = result;
    const words = context.words.map((word, i) => {
      const token = context.start + i;
      const inside = token >= result.start && token < result.stop;
      const style = wordStyle(context, i, units, colourBy);
      return el("span", { class: inside ? "matched" : null, ...style }, shownWord(word, true));
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
    el("figcaption", {}, `${name} over the tokens of the results`),
    el("div", { class: "heat" }, ...order.map((i) => el("span", {
      title: `${labels[i]}: ${counts[i]} of the matched tokens (${Math.round(100 * counts[i] / total)}%)`,
      style: `background: color-mix(in srgb, var(--accent) ${Math.round(100 * counts[i] / most)}%, var(--paper))`,
      class: counts[i] / most > 0.55 ? "strong" : null,
    }, labels[i]))));
}

// The colours of a meta track's values among the results' words (discrete tracks; a scalar's heat needs none).
export function legend(results, name) {
  const seen = new Map();
  for (const { context } of results) {
    const track = context.meta?.[name];
    if (track?.type !== "discrete") continue;
    track.values.forEach((value, i) => seen.set(value, { track, label: track.labels?.[i] ?? String(value) }));
  }
  return [...seen].sort(([a], [b]) => a - b).map(([value, { track, label }]) =>
    el("span", { style: `background: ${metaColour(track, value)}` }, label));
}

// One unit's detail: its best concepts, and the contexts where it is highest and lowest (the peak word marked);
// a click on a context calls onPick(position).
export function renderUnitDetail(box, { detail, separator, onPick }) {
  const concept = (label) => el("li", {}, badge(label) ?? label.label,
    typeof label.ap === "number" ? el("span", { class: "muted" }, ` AP ${twoDigits(label.ap)}`) : null);
  const contexts = (title, list) => [
    el("h3", {}, title),
    el("ol", { class: "results contexts" }, ...list.map((context) => el("li", {
      "data-position": context.position, title: `token ${context.position}: click to go there`,
      onclick: () => onPick(context.position),
    },
    el("div", { class: "result-head" }, el("span", {}, `@${context.position}`), el("span", {}, context.value.toFixed(3))),
    el("div", { class: "snippet" }, ...context.words.flatMap((word, i) => {
      const cell = el("span", { class: context.start + i === context.position ? "matched" : null }, shownWord(word, true));
      return i && separator ? [separator, cell] : [cell];
    }))))),
  ];
  box.replaceChildren(
    el("h2", {}, `Unit ${detail.unit}`, el("button", {
      type: "button", class: "remove", title: "close", onclick: () => { box.hidden = true; } }, "×")),
    detail.labels.length ? el("ul", { class: "concepts" }, ...detail.labels.map(concept))
      : el("p", { class: "muted note" }, "No concept labels for this layer yet."),
    ...contexts("Highest", detail.top),
    ...contexts("Lowest", detail.bottom));
  box.hidden = false;
}
