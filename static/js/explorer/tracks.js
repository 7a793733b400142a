// The rows under the plot, one cell per token: the words (tinted by how many selected units are on) and the
// meta tracks (discrete ids as coloured cells, scalars as a heat row, top-k words on hover).
import { el } from "../common.js";

const CATEGORIES = ["#c6dbef", "#fdd0a2", "#c7e9c0", "#dadaeb", "#fcbba1", "#d9d9d9", "#9ecae1", "#fdae6b",
  "#a1d99b", "#bcbddc", "#fc9272", "#bdbdbd"];
const VERTICAL_BELOW = 26;    // px per token under which words are written top to bottom
const LABELS_FROM = 34;       // px per token from which meta cells show their label as text

const VISIBLE = { "\n": "↵", "\t": "⇥", " ": "␣", "": "∅" };
export const shownWord = (word) => VISIBLE[word] ?? word;

// Whether tokens are characters (joined without spaces when shown as text), judged from a sample of words.
export const isCharLevel = (words) => words.filter((word) => word.length <= 1).length >= 0.9 * words.length;

const tint = (share) => (share > 0 ? `color-mix(in srgb, var(--on) ${Math.round(12 + 58 * share)}%, transparent)` : "");

function cells(container, size, cellWidth) {
  container.style.gridTemplateColumns = `repeat(${size}, minmax(0, 1fr))`;
  container.classList.toggle("vertical", cellWidth < VERTICAL_BELOW);
  container.classList.toggle("narrow", cellWidth < LABELS_FROM);
}

// The word row of the view. `on[i]` is how many of the `selected` units are on at the i-th visible token.
export function renderWords(container, { words, position, on, selected, brush, padding, hits, cellWidth }) {
  cells(container, words.length, cellWidth);
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
      style: selected && on[i] ? `background: ${tint(on[i] / selected)}` : undefined,
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
    const [lo, hi] = track.range ?? extent(values);
    return values.map((value) => {
      const share = hi > lo ? Math.min(1, Math.max(0, (value - lo) / (hi - lo))) : 0;
      return el("span", {
        class: "cell", title: String(value),
        style: `background: color-mix(in srgb, var(--accent) ${Math.round(100 * share)}%, var(--paper))`,
      });
    });
  }
  if (track.type === "wordvec") {
    const words = track.words?.slice(from, to) ?? values.map((value) => [String(value)]);
    return words.map((top) => el("span", { class: "cell", title: top.map(shownWord).join("  ") }, shownWord(top[0] ?? "")));
  }
  const labels = track.labels?.slice(from, to) ?? values.map(String);
  return values.map((value, i) => el("span", {
    class: "cell", title: labels[i], style: `background: ${CATEGORIES[Math.abs(value) % CATEGORIES.length]}`,
  }, labels[i]));
}

function extent(values) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const value of values) { lo = Math.min(lo, value); hi = Math.max(hi, value); }
  return [lo, hi];
}
