// NetDissect's bar graph: how many units of the layer detect each concept, grouped by category.
import { el } from "../common.js";

export function detectorGraph(data, { onPick }) {
  if (!data.categories.length) {
    return [el("p", { class: "muted note" }, `No unit of this layer reaches IoU ${data.min_iou}.`)];
  }
  const most = Math.max(...data.categories.flatMap((group) => group.concepts.map((c) => c.units)));
  return data.categories.map((group) => el("div", { class: `detector-group cat-${group.category}` },
    el("div", { class: "group-name" }, `${group.category} `, el("span", { class: "muted" }, `${group.total}`)),
    el("div", { class: "bars" }, ...group.concepts.map((concept) =>
      el("button", { type: "button", class: "bar-column", "data-concept": concept.concept,
        title: `${concept.concept}: ${concept.units} detector${concept.units === 1 ? "" : "s"} (show them)`,
        onclick: () => onPick(concept.concept) },
      el("span", { class: "column-top" }, el("span", { class: "count" }, `${concept.units}`),
        el("span", { class: "column-bar", style: `height: ${Math.max(2, Math.round((48 * concept.units) / most))}px` })),
      el("span", { class: "name" }, concept.concept))))));
}
