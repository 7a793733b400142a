// The rows under the plot, one cell per token: the words (tinted by how many selected units are on) and the
// meta tracks (discrete ids as coloured cells, scalars as a heat row, top-k words on hover).
import { el } from "../common.js";

const CATEGORIES = ["#c6dbef", "#fdd0a2", "#c7e9c0", "#dadaeb", "#fcbba1", "#d9d9d9", "#9ecae1", "#fdae6b",
  "#a1d99b", "#bcbddc", "#fc9272", "#bdbdbd"];
const VERTICAL_BELOW = 26;    // px per token under which words (not characters) are written top to bottom
const LABELS_FROM = 34;       // px per token from which meta cells show their label as text
const TEXT_FROM = 6;          // px per token under which a cell is too narrow for a character
const VERTICAL_TEXT_FROM = 11; // px per token under which a cell is too narrow for a word written top to bottom

const VISIBLE = { "\n": "↵", "\t": "⇥", " ": "␣", "": "∅" };
const IN_TEXT = { ...VISIBLE, " ": " " };
// A token as one cell shows it (whitespace as a visible sign), or as running text shows it (`inText`: spaces stay).
export const shownWord = (word, inText = false) => (inText ? IN_TEXT : VISIBLE)[word] ?? word;

// Whether tokens are characters (joined without spaces when shown as text), judged from a sample of words.
export const isCharLevel = (words) => words.filter((word) => word.length <= 1).length >= 0.9 * words.length;

// The background of a token on which `share` (0..1) of the selected units are on.
export const onTint = (share) =>
  (share > 0 ? `color-mix(in srgb, var(--on) ${Math.round(12 + 58 * share)}%, transparent)` : "");

// The colour of one value of a meta track (discrete: a category colour; scalar: a heat between its range's ends).
// Pass `range` when colouring many values of a scalar track without a declared range.
export function metaColour(track, value, range = track.range ?? extent(track.values)) {
  if (track.type === "scalar") {
    const [lo, hi] = range;
    const share = hi > lo ? Math.min(1, Math.max(0, (value - lo) / (hi - lo))) : 0;
    return `color-mix(in srgb, var(--accent) ${Math.round(100 * share)}%, var(--wash))`;
  }
  return CATEGORIES[Math.abs(value) % CATEGORIES.length];
}

function cells(container, size, cellWidth, { vertical = false } = {}) {
  container.style.gridTemplateColumns = `repeat(${size}, minmax(0, 1fr))`;
  container.classList.toggle("vertical", vertical);
  container.classList.toggle("narrow", cellWidth < LABELS_FROM);
  container.classList.toggle("tiny", cellWidth < (vertical ? VERTICAL_TEXT_FROM : TEXT_FROM));
}

// The word row of the view. `on[i]` is how many of the `selected` units are on at the i-th visible token.
export function renderWords(container, { words, position, on, selected, brush, padding, hits, cellWidth }) {
  const charLevel = isCharLevel(words);
  cells(container, words.length, cellWidth, { vertical: !charLevel && cellWidth < VERTICAL_BELOW });
  const inside = (token, [a, b]) => token >= a && token < b;
  const hitAt = (token) => hits.some((hit) => inside(token, [hit.start, hit.stop]));
  container.replaceChildren(...words.map((word, i) => {
    const token = position + i;
    const classes = ["cell"];
    if (brush && inside(token, brush)) classes.push("brushed");
    if (brush && (inside(token, [brush[0] - padding[0], brush[0]]) || inside(token, [brush[1], brush[1] + padding[1]]))) {
      classes.push("padded");
    }
    if (hitAt(token)) classes.push("hit");
    const count = selected ? ` · ${on[i]} of ${selected} selected units on` : "";
    return el("span", {
      class: classes.join(" "), "data-token": token, title: `${token}: ${JSON.stringify(word)}${count}`,
      style: selected && on[i] ? `background: ${onTint(on[i] / selected)}` : undefined,
    }, shownWord(word));
  }));
}

// One row per meta track for the visible tokens [from, to) of a context chunk.
export function renderMeta(container, { meta, from, to, cellWidth }) {
  container.replaceChildren(...Object.entries(meta).map(([name, track]) => {
    const row = el("div", { class: `cells meta ${track.type}`, "data-meta": name });
    cells(row, to - from, cellWidth);
    row.append(...metaCells(track, from, to));
    return el("div", { class: "xrow" }, el("span", { class: "xlabel", title: `${name} (${track.type})` }, name), row);
  }));
}

function metaCells(track, from, to) {
  const values = track.values.slice(from, to);
  if (track.type === "scalar") {
    const range = track.range ?? extent(track.values);
    return values.map((value) => el("span", {
      class: "cell", title: String(value), style: `background: ${metaColour(track, value, range)}`,
    }));
  }
  if (track.type === "wordvec") {
    const words = track.words?.slice(from, to) ?? values.map((value) => [String(value)]);
    return words.map((top) => el("span", {
      class: "cell", title: top.map((word) => shownWord(word)).join("  "),
    }, shownWord(top[0] ?? "")));
  }
  const labels = track.labels?.slice(from, to) ?? values.map(String);
  return values.map((value, i) => el("span", {
    class: "cell", title: labels[i], style: `background: ${metaColour(track, value)}`,
  }, labels[i]));
}

function extent(values) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const value of values) { lo = Math.min(lo, value); hi = Math.max(hi, value); }
  return [lo, hi];
}
