// Small SVG plots of the unit inspector: the activation histogram (from a unit's quantile curve) and diverging bars.

const SVG = "http://www.w3.org/2000/svg";

export function svg(tag, attributes = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  node.append(...children);
  return node;
}

// Fraction of activations in each of `bins` equal-width bins over [lowest, highest], read off the quantile curve
// (quantiles at 0, 1/n, ..., 1) by linear interpolation of its inverse.
export function binned(quantiles, bins) {
  const n = quantiles.length - 1;
  const lo = quantiles[0];
  const hi = quantiles[n];
  const cdf = (x) => {
    if (x < lo) return 0;
    if (x >= hi) return 1;
    let i = 0;
    while (i < n && quantiles[i + 1] <= x) i += 1;
    const span = quantiles[i + 1] - quantiles[i];
    return (i + (span > 0 ? (x - quantiles[i]) / span : 0)) / n;
  };
  const width = (hi - lo) / bins;
  const edges = Array.from({ length: bins + 1 }, (_, b) => lo + b * width);
  return { lo, hi, fractions: edges.slice(1).map((edge, b) => cdf(edge) - (b === 0 ? 0 : cdf(edges[b]))) };
}

// The activation histogram of a unit (heights on a square-root scale so that the rare top activations show), with
// the part above the unit's threshold (below, for direction -1) in the "on" colour and the threshold marked.
export function histogram(quantiles, threshold, direction, { width = 280, height = 44, bins = 32 } = {}) {
  const { lo, hi, fractions } = binned(quantiles, bins);
  const top = Math.sqrt(Math.max(...fractions, 1e-12));
  const step = width / bins;
  const x = (value) => (hi > lo ? ((value - lo) / (hi - lo)) * width : 0);
  const marker = x(threshold);
  const bars = fractions.map((fraction, b) => {
    const h = fraction > 0 ? Math.max(1, (Math.sqrt(fraction) / top) * (height - 2)) : 0;
    const on = direction < 0 ? (b + 1) * step <= marker + 0.01 : b * step >= marker - 0.01;
    return svg("rect", { x: (b * step + 0.5).toFixed(1), y: (height - h).toFixed(1), width: Math.max(1, step - 1).toFixed(1),
      height: h.toFixed(1), class: on ? "on" : "" });
  });
  const title = svg("title");
  title.textContent = `activations from ${lo.toPrecision(3)} to ${hi.toPrecision(3)} (√ scale); threshold ` +
    `${threshold.toPrecision(3)}: the unit is on ${direction < 0 ? "below" : "above"} it`;
  return svg("svg", { class: "histogram-plot", viewBox: `0 0 ${width} ${height + 12}`, role: "img" }, title, ...bars,
    svg("line", { x1: marker, x2: marker, y1: 0, y2: height, class: "threshold" }),
    label(0, height + 10, lo.toPrecision(2), "start"), label(width, height + 10, hi.toPrecision(2), "end"));
}

function label(x, y, text, anchor) {
  const node = svg("text", { x, y, "text-anchor": anchor });
  node.textContent = text;
  return node;
}
