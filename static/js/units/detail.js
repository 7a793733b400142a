// A unit's detail (top images, best concepts against their baselines, histogram) and its measured ablation effects.
import { el } from "../common.js";
import { formatIou, imageUrl, scoreLine } from "./cards.js";
import { histogram } from "./plots.js";

const percent = (rate) => (rate === null ? "–" : `${(100 * rate).toFixed(1)}%`);
const points = (change) => (change === null ? "–" : `${change > 0 ? "+" : change < 0 ? "−" : "±"}${Math.abs(100 * change).toFixed(1)}`);

// `onPick(item)`: a top image was clicked (to search from it).
export function unitDetail(unit, project, onPick) {
  const concepts = unit.concepts.map((concept) => el("tr", { class: concept.concept === unit.label ? "best" : "" },
    el("td", { class: "concept", title: concept.concept }, concept.concept),
    el("td", { class: "muted" }, concept.category),
    el("td", { class: "iou-cell" }, bar(concept.iou, unit.concepts[0].iou || 1, concept.baseline_iou),
      el("span", {}, formatIou(concept.iou)))));
  return [
    el("p", { class: "detail-head" },
      el("strong", { class: "unit-label" }, unit.label), " ", el("span", { class: `category cat-${unit.category}` }, unit.category),
      unit.detector ? el("span", { class: "detector-mark" }, "detector") : el("span", { class: "muted" }, " not a detector")),
    el("p", { class: "note" }, scoreLine(unit), el("span", { class: "muted" },
      ` · on ${unit.direction < 0 ? "below" : "above"} ${unit.threshold.toPrecision(3)}`)),
    el("div", { class: "detail-thumbs" }, ...unit.top.map((top) =>
      el("figure", { title: `${top.image}: search from this image`, onclick: () => onPick(top.item) },
        el("img", { src: imageUrl(project, top.item, unit.layer, unit.unit), alt: `image ${top.item}`, width: 96,
          height: 96 }), el("figcaption", {}, top.value.toPrecision(3))))),
    el("h3", {}, "Activations"), histogram(unit.quantiles, unit.threshold, unit.direction, { width: 300, height: 56 }),
    el("h3", {}, "Best concepts ", el("span", { class: "muted" }, "(tick: shuffled-label baseline)")),
    el("table", { class: "concepts" }, el("tbody", {}, ...concepts)),
  ];
}

function bar(value, most, baseline) {
  const width = (v) => `${Math.min(100, (100 * v) / most).toFixed(1)}%`;
  return el("span", { class: "iou-bar" }, el("span", { class: "fill", style: `width: ${width(value)}` }),
    baseline === null ? null : el("span", { class: "tick", style: `left: ${width(baseline)}` }));
}

// The measured effect of an ablation next to the label that it tests.
export function ablationResult(result, unit) {
  const what = result.label ? `all ${result.units.length} detector${result.units.length === 1 ? "" : "s"} labelled “${result.label}”`
    : `unit ${result.units.join(", ")}`;
  const change = result.accuracy.after - result.accuracy.before;
  const worst = Math.min(...result.classes.map((row) => row.change ?? 0));
  const scale = Math.max(0.01, ...result.classes.map((row) => Math.abs(row.change ?? 0)));
  return [
    el("p", { class: "claim" }, el("span", { class: "muted" }, "label "), el("strong", {}, unit.label),
      el("span", { class: "muted" }, ` (${unit.category}, IoU ${formatIou(unit.iou)})`)),
    el("p", { class: "claim" }, el("span", { class: "muted" }, "ablating "), what, el("span", { class: "muted" }, ": accuracy "),
      `${percent(result.accuracy.before)} → ${percent(result.accuracy.after)} `,
      el("strong", { class: change < 0 ? "drop" : change > 0 ? "gain" : "" }, `(${points(change)} pts)`),
      el("span", { class: "muted" }, ` on ${result.images} held-out images`)),
    el("table", { class: "effects" },
      el("thead", {}, el("tr", {}, el("th", {}, "class"), el("th", {}, "before"), el("th", {}, "after"), el("th", {}, "change (pts)"))),
      el("tbody", {}, ...result.classes.map((row) => el("tr", {
        "data-class": row.class,
        class: [row.change !== null && row.change === worst && worst < 0 ? "worst" : "",
          unit.label.includes(row.class) ? "named" : ""].join(" ").trim(),
        title: unit.label.includes(row.class) ? "this class is named in the unit's label" : null,
      },
      el("td", {}, row.class), el("td", {}, percent(row.before)), el("td", {}, percent(row.after)),
      el("td", { class: "change" }, diverging(row.change, scale), el("span", {}, points(row.change))))))),
  ];
}

function diverging(change, scale) {
  const size = change === null ? 0 : Math.min(50, (50 * Math.abs(change)) / scale);
  const style = change < 0 ? `right: 50%; width: ${size}%` : `left: 50%; width: ${size}%`;
  return el("span", { class: "diverging" }, el("span", { class: `part ${change < 0 ? "drop" : "gain"}`, style }));
}

// Units ranked by the change of one class's accuracy when each is ablated alone; each with its label.
export function rankingResult(result, onOpen) {
  const shown = result.units.slice(0, 12);
  return [
    el("p", { class: "note muted" }, `${result.class}: ${result.images} held-out images; accuracy `,
      percent(result.units[0]?.before ?? null), " with every unit"),
    el("ol", { class: "rank-list" }, ...shown.map((row) => el("li", {},
      el("button", { type: "button", class: "link", onclick: () => onOpen(row.unit) }, `#${row.unit}`),
      el("span", { class: "unit-label", title: row.label }, row.label),
      el("strong", { class: row.change < 0 ? "drop" : row.change > 0 ? "gain" : "" }, `${points(row.change)} pts`)))),
  ];
}
