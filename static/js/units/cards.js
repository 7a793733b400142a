// Unit cards: label, category, IoU against its shuffled-label baseline, top images with the unit's region, histogram.
import { el } from "../common.js";
import { histogram } from "./plots.js";

export const CARD_IMAGES = 4;

// The address of a dataset image as the server renders it, with `unit`'s on-region highlighted when given.
export function imageUrl(project, item, layer, unit) {
  const query = layer === undefined ? "" : `?${new URLSearchParams({ layer, unit: String(unit) })}`;
  return `api/units/${encodeURIComponent(project)}/image/${item}${query}`;
}

export const formatIou = (iou) => (iou === null || iou === undefined ? "–" : iou.toFixed(3));

export function scoreLine(card) {
  return el("span", { class: "score" },
    el("span", { title: "intersection over union of the unit's on-region with the concept" }, `IoU ${formatIou(card.iou)}`),
    card.baseline_iou === null ? null :
      el("span", { class: "muted", title: "the same unit against shuffled image-concept pairings" },
        ` · baseline ${formatIou(card.baseline_iou)}`));
}

export function unitCard(card, { project, layer, selected, onOpen }) {
  const images = card.top.slice(0, CARD_IMAGES).map((top) =>
    el("img", { src: imageUrl(project, top.item, layer, card.unit), alt: `image ${top.item}`, loading: "lazy",
      width: 64, height: 64, title: `${top.image}: peak ${top.value.toPrecision(3)}` }));
  return el("article", {
    class: `unit-card${card.detector ? " detector" : ""}${selected ? " selected" : ""}`, tabindex: 0,
    "data-unit": card.unit, "aria-label": `unit ${card.unit}: ${card.label}`,
    onclick: () => onOpen(card.unit), onkeydown: (event) => { if (event.key === "Enter") onOpen(card.unit); },
  },
  el("header", {},
    el("span", { class: "unit-id" }, `#${card.unit}`),
    el("strong", { class: "unit-label", title: card.label }, card.label),
    el("span", { class: `category cat-${card.category}` }, card.category),
    card.detector ? el("span", { class: "detector-mark", title: "IoU reaches the detector threshold" }, "detector") : null),
  scoreLine(card),
  el("div", { class: "thumbs" }, ...images),
  histogram(card.quantiles, card.threshold, card.direction));
}
