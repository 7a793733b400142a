// The beam-search tree: every prefix the search kept, left to right by step, children best first; the hypothesis
// shown in the accent colour, the other returned ones dark, pruned branches grey. Click a node to force the output
// to begin with its words.
import { el } from "../common.js";
import { svg, tip } from "./svg.js";
import { formatScore, percent, probability } from "./sequence.js";

const DY = 20;
const LABEL = 12;      // characters of a word shown on a node

const ENDS = {
  eos: "finished", pruned: "pruned: no continuation stayed in the beam", length: "cut at the length limit",
  stopped: "stopped: could no longer beat the finished hypotheses",
};

// Leaves top to bottom in depth-first order (children best first); a parent midway between its first and last child.
function layout(nodes) {
  const children = new Map(nodes.map((node) => [node.id, []]));
  for (const node of nodes) if (node.parent !== null) children.get(node.parent).push(node);
  for (const list of children.values()) list.sort((a, b) => (b.score ?? -Infinity) - (a.score ?? -Infinity));
  const y = new Map();
  let leaves = 0;
  const place = (node) => {
    const kids = children.get(node.id);
    if (!kids.length) { y.set(node.id, leaves++); return; }
    kids.forEach(place);
    y.set(node.id, (y.get(kids[0].id) + y.get(kids[kids.length - 1].id)) / 2);
  };
  place(nodes[0]);
  return { y, leaves };
}

function pathTo(byId, id) {
  const path = [];
  for (let node = byId.get(id); node && node.parent !== null; node = byId.get(node.parent)) path.unshift(node);
  return path;
}

export function renderTree(container, { tree, hypotheses, shown, onForce }) {
  const byId = new Map(tree.map((node) => [node.id, node]));
  const { y, leaves } = layout(tree);
  const shownPath = new Set(pathTo(byId, hypotheses[shown].node).map((node) => node.id));
  const returned = new Set(hypotheses.flatMap((h) => pathTo(byId, h.node).map((node) => node.id)));
  const depth = Math.max(...tree.map((node) => node.depth));
  const DX = Math.max(64, Math.min(100, (container.clientWidth - 110) / Math.max(1, depth)));   // fit when it can
  const width = depth * DX + 110;
  const height = leaves * DY + 16;
  const at = (node) => [12 + node.depth * DX, 10 + y.get(node.id) * DY];
  const kind = (node) => (shownPath.has(node.id) ? "shown" : returned.has(node.id) ? "returned"
    : node.end === "pruned" ? "pruned" : "kept");

  const edges = tree.filter((node) => node.parent !== null).map((node) => {
    const [x0, y0] = at(byId.get(node.parent));
    const [x1, y1] = at(node);
    const d = `M${x0},${y0} C${x0 + DX / 2},${y0} ${x1 - DX / 2},${y1} ${x1},${y1}`;
    return svg("path", { class: `branch ${kind(node)}`, d });
  });
  const nodes = tree.map((node) => {
    const [x, yy] = at(node);
    const words = pathTo(byId, node.id).map((step) => step.token);
    const root = node.parent === null;
    const label = node.token.length > LABEL ? `${node.token.slice(0, LABEL - 1)}…` : node.token;
    const about = root ? "the start of every hypothesis"
      : `'${words.join(" ")}': step ${node.depth - 1} '${node.token}' ${percent(probability(node.log_prob))}, ` +
        `score ${formatScore(node.score)}` +
        (node.rank !== null ? `; hypothesis ${node.rank + 1}` : "") + (node.end ? `; ${ENDS[node.end]}` : "") +
        "; click to force these words";
    return svg("g", {
      class: `node ${kind(node)}${node.end === "eos" ? " eos" : ""}${root ? " root" : ""}`,
      transform: `translate(${x},${yy})`, "data-node": node.id,
      "data-link": shownPath.has(node.id) ? `dec:${node.depth - 1}` : null,
      onclick: root ? undefined : () => onForce(words),
    }, tip(about), svg("circle", { r: node.rank !== null ? 5 : 3.5 }),
    svg("text", { x: 8, y: 4 }, label));
  });
  const scroller = el("div", { class: "tree-scroll" },
    svg("svg", { class: "tree", width, height, viewBox: `0 0 ${width} ${height}` }, ...edges, ...nodes));
  container.replaceChildren(
    el("div", { class: "legend tree-legend" },
      el("span", { class: "shown" }, "hypothesis shown"), el("span", { class: "returned" }, "other returned"),
      el("span", { class: "kept" }, "dropped later"), el("span", { class: "pruned" }, "pruned")),
    scroller);
  scroller.scrollTop = at(tree[0])[1] - scroller.clientHeight / 2;      // a tall tree opens at its root
}
