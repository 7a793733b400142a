// The neighbourhood view: where a state sits among the training states on the index's fixed 2-D map (a sample of
// all states grey, the nearest ones blue, the sentence's trajectory through its states in orange), and the training
// pairs those nearest states come from, their token marked.
import { el, formatCount } from "../common.js";
import { svg, tip } from "./svg.js";

const SIZE = 340;
const PAD = 14;

// A square map of the points (equal scales on both axes, as the map is a rotation of the state space).
function scale(points) {
  const xs = points.map((p) => p[0]);
  const ys = points.map((p) => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const span = Math.max(x1 - x0, y1 - y0) || 1;
  const unit = (SIZE - 2 * PAD) / span;
  const cx = (x0 + x1) / 2;
  const cy = (y0 + y1) / 2;
  return ([x, y]) => [SIZE / 2 + (x - cx) * unit, SIZE / 2 - (y - cy) * unit];
}

function sentence(words, mark, label) {
  return el("div", { class: "pair-line" }, el("span", { class: "pair-side" }, label),
    el("span", { class: "snippet" }, ...words.flatMap((word, i) => [
      i ? " " : null, el("span", { class: i === mark ? "hit" : null }, word)])));
}

export function renderNeighbours(container, answer) {
  const side = answer.side === "encoder" ? "enc" : "dec";
  const points = answer.map.points;
  const at = scale([...points, ...answer.trajectory, ...answer.neighbours.map((n) => n.xy)]);
  const background = points.map((p) => {
    const [x, y] = at(p);
    return svg("circle", { class: "state", cx: x.toFixed(1), cy: y.toFixed(1), r: 1.3 });
  });
  const near = answer.neighbours.map((n, j) => {
    const [x, y] = at(n.xy);
    const words = answer.side === "encoder" ? n.source : n.target;
    return svg("circle", { class: "near", cx: x, cy: y, r: 4, "data-link": `nb:${j}` },
      tip(`${(n.similarity ?? 0).toFixed(3)}: '${words[n.position]}' in pair ${n.pair}`));
  });
  const path = answer.trajectory.map(at);
  const trajectory = [
    svg("polyline", { class: "trajectory", points: path.map(([x, y]) => `${x},${y}`).join(" ") }),
    ...path.map(([x, y], i) => svg("g", {
      class: i === answer.position ? "step query" : "step", transform: `translate(${x},${y})`,
      "data-link": `${side}:${i}`,
    }, tip(`${answer.side} state ${i}: '${answer.tokens[i]}'`), svg("circle", { r: i === answer.position ? 6 : 3.5 }),
    svg("text", x > SIZE - 60 ? { x: -7, y: -6, "text-anchor": "end" } : { x: 7, y: -6 }, answer.tokens[i]))),
  ];
  const what = answer.side === "encoder" ? "source word" : "output word";
  const list = answer.neighbours.map((n, j) => el("li", { "data-link": `nb:${j}` },
    el("div", { class: "result-head" }, el("strong", {}, (n.similarity ?? 0).toFixed(3)),
      el("span", {}, `pair ${formatCount(n.pair)}, ${what} ${n.position}`)),
    sentence(n.source, answer.side === "encoder" ? n.position : -1, "src"),
    sentence(n.target, answer.side === "decoder" ? n.position : -1, "out")));
  container.replaceChildren(
    el("p", { class: "note muted neighbours-title" },
      `Nearest of ${formatCount(answer.map.states)} training ${answer.side} states to ${what} ${answer.position} `,
      el("strong", { class: "query-word" }, `'${answer.tokens[answer.position]}'`), " (cosine)."),
    el("div", { class: "neighbours-body" },
      el("figure", { class: "map" },
        svg("svg", { class: "scatter", width: SIZE, height: SIZE, viewBox: `0 0 ${SIZE} ${SIZE}` },
          ...background, ...near, ...trajectory),
        el("figcaption", {}, "2-D map (PCA of the training states, fitted once): grey, a sample of them; blue, the " +
          "nearest; orange, this sentence's states in order.")),
      el("ol", { id: "neighbour-list", class: "results neighbour-list" }, ...list)));
}
