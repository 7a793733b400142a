// SVG elements, made like common.js's el(): svg("circle", {cx: 1, r: 2, class: "x"}, child, ...).

const NS = "http://www.w3.org/2000/svg";

export function svg(tag, attributes = {}, ...children) {
  const node = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

// A <title> child: the tooltip of an SVG element.
export const tip = (text) => svg("title", {}, text);
