// The line plot of unit states over the tokens of the view, drawn on a canvas (hundreds of units stay fluid):
// faint lines for all units, coloured lines for the selected ones, the threshold, the brush and its padding.
import { fitCanvas } from "../common.js";

const PALETTE = ["#2f6fde", "#e4572e", "#2a9d58", "#9b59b6", "#e0a100", "#17a2b8", "#c0392b", "#8c564b",
  "#d63384", "#4b5563"];
const HANDLE_REACH = 6;     // px either side of a padding handle that grab it
const TOP = 10;
const BOTTOM = 14;

const CROWD = "#2f6fde";     // every selected unit's colour when there are more of them than palette colours

// The colour of the i-th of `count` selected units (the side panel shows the same swatch).
export const unitColour = (index, count) => (count > PALETTE.length ? CROWD : PALETTE[index % PALETTE.length]);

const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

export class LinePlot {
  constructor(canvas) {
    this.canvas = canvas;
    this.context = canvas.getContext("2d");
    this.scene = null;
    this.bands = {};          // name -> an off-screen layer of lines (see band)
    this.drawMilliseconds = 0;
  }

  get gutter() {
    return parseFloat(getComputedStyle(this.canvas).getPropertyValue("--gutter")) || 0;
  }

  // Token columns of the view: x of the first column's left edge and the width of one column, in css px.
  columns(size) {
    const width = this.canvas.clientWidth;
    return { x0: this.gutter, cell: (width - this.gutter) / size };
  }

  // The absolute token under a client x coordinate, clamped to the view.
  tokenAt(clientX, { position, size }) {
    const { x0, cell } = this.columns(size);
    const x = clientX - this.canvas.getBoundingClientRect().left - x0;
    return position + Math.min(size - 1, Math.max(0, Math.floor(x / cell)));
  }

  // The token boundary (between two columns) nearest a client x, clamped to the view.
  edgeAt(clientX, { position, size }) {
    const { x0, cell } = this.columns(size);
    const x = clientX - this.canvas.getBoundingClientRect().left - x0;
    return position + Math.min(size, Math.max(0, Math.round(x / cell)));
  }

  // "left" or "right" when a client x is on that padding handle of the current brush, else null.
  handleAt(clientX) {
    const scene = this.scene;
    if (!scene?.brush) return null;
    const { x0, cell } = this.columns(scene.size);
    const x = clientX - this.canvas.getBoundingClientRect().left;
    const edge = (token) => x0 + (token - scene.position) * cell;
    if (Math.abs(x - edge(scene.brush[0] - scene.padding[0])) <= HANDLE_REACH) return "left";
    if (Math.abs(x - edge(scene.brush[1] + scene.padding[1])) <= HANDLE_REACH) return "right";
    return null;
  }

  // The unit whose line passes closest to a client point (within a few px), or null.
  unitNear(clientX, clientY) {
    const scene = this.scene;
    if (!scene?.chunk) return null;
    const box = this.canvas.getBoundingClientRect();
    const column = this.tokenAt(clientX, scene) - scene.chunk.start;
    const y = clientY - box.top;
    let best = null;
    let bestDistance = 5;
    scene.chunk.states.forEach((row, index) => {
      const distance = Math.abs(this.yOf(row[column]) - y);
      if (distance < bestDistance) { bestDistance = distance; best = scene.chunk.units[index]; }
    });
    return best === null ? null : { unit: best, value: scene.chunk.states[scene.chunk.units.indexOf(best)][column] };
  }

  // The y of a state value in the last drawn scene (range and height are set by draw).
  yOf(value) {
    const [lo, hi] = this.range;
    return TOP + (1 - (value - lo) / (hi - lo)) * (this.height - TOP - BOTTOM);
  }

  // Draw a scene: {chunk, position, size, selected, hover, threshold, brush, padding, preview, fixedRange}.
  draw(scene) {
    const started = performance.now();
    this.scene = scene;
    const { g, width, height, ratio } = fitCanvas(this.canvas, this.context);
    g.fillStyle = css("--paper");
    g.fillRect(0, 0, width, height);
    if (!scene.chunk) return;
    const from = scene.position - scene.chunk.start;
    const to = Math.min(from + scene.size, scene.chunk.stop - scene.chunk.start);
    this.range = scene.fixedRange ?? this.chunkRange(scene.chunk, scene.threshold);
    this.height = height;
    const { x0, cell } = this.columns(scene.size);
    this.drawRanges(scene, x0, cell, height);
    this.drawAxis(x0, width);
    const selected = new Map(scene.selected.map((unit, index) => [unit, index]));
    g.imageSmoothingEnabled = false;      // copy bands pixel for pixel, never blurred by a fractional offset
    const copy = (band) => g.drawImage(band.canvas, (from - band.from) * cell * ratio, 0, (to - from) * cell * ratio,
      band.canvas.height, x0, 0, (to - from) * cell, height);
    copy(this.band("all", "", scene.chunk, from, to, cell, ratio, (layer, columns) => {
      layer.lineWidth = 1;
      layer.strokeStyle = css("--muted");
      layer.globalAlpha = Math.min(0.35, Math.max(0.04, 6 / scene.chunk.units.length));
      for (const row of scene.chunk.states) this.line(row, columns, layer);
    }));
    const paintSelected = (layer, columns) => {
      const crowd = selected.size > PALETTE.length;
      layer.globalAlpha = crowd ? Math.max(0.1, Math.min(0.6, 12 / selected.size)) : 1;
      layer.lineWidth = crowd ? 1 : 1.6;
      for (const [unit, order] of selected) {
        const index = scene.chunk.units.indexOf(unit);
        if (index < 0) continue;
        layer.strokeStyle = unitColour(order, selected.size);
        this.line(scene.chunk.states[index], columns, layer);
      }
    };
    if (selected.size) {
      copy(this.band("selected", scene.selected.join(), scene.chunk, from, to, cell, ratio, paintSelected));
    }
    const hovered = scene.hover === null ? -1 : scene.chunk.units.indexOf(scene.hover);
    if (hovered >= 0) {
      g.lineWidth = selected.has(scene.hover) ? 3 : 2;
      g.strokeStyle = selected.has(scene.hover) && selected.size <= PALETTE.length
        ? unitColour(selected.get(scene.hover), selected.size) : css("--ink");
      this.line(scene.chunk.states[hovered], { from, to, x: (column) => x0 + (column - from + 0.5) * cell });
    }
    this.drawThreshold(scene.threshold, x0, width);
    this.drawMilliseconds = performance.now() - started;
  }

  // A layer of lines over a band of the chunk two views wide, painted off screen by `paint(context, columns)` and
  // kept while the view stays inside the band at the same scale and `key` is unchanged: hovering, brushing and
  // short scrolls only copy it, which keeps hundreds of units fluid where browsers rasterise canvases in software.
  band(name, key, chunk, from, to, cell, ratio, paint) {
    const [lo, hi] = this.range;
    const kept = this.bands[name];
    if (kept && kept.key === key && kept.chunk === chunk && kept.cell === cell && kept.ratio === ratio
        && kept.lo === lo && kept.hi === hi && kept.height === this.height && kept.from <= from && to <= kept.to) {
      return kept;
    }
    const half = Math.ceil((to - from) / 2);
    const band = {
      key, chunk, cell, ratio, lo, hi, height: this.height, from: Math.max(0, from - half),
      to: Math.min(chunk.stop - chunk.start, to + half), canvas: kept?.canvas ?? document.createElement("canvas"),
    };
    band.canvas.width = Math.max(1, Math.ceil((band.to - band.from) * cell * ratio));
    band.canvas.height = Math.round(this.height * ratio);
    const layer = band.canvas.getContext("2d");
    layer.setTransform(ratio, 0, 0, ratio, 0, 0);
    paint(layer, { from: band.from, to: band.to, x: (column) => (column - band.from + 0.5) * cell });
    this.bands[name] = band;
    return band;
  }

  // The y range of states with no fixed range: the extent of the chunk's values (steady while scrolling through
  // it), widened to show zero and the threshold.
  chunkRange(chunk, threshold) {
    if (this.extent?.chunk !== chunk) this.extent = { chunk, range: valueRange(chunk.states) };
    const [lo, hi] = this.extent.range;
    const range = [Math.min(lo, threshold, 0), Math.max(hi, threshold, 0)];
    return range[1] > range[0] ? range : [range[0] - 1, range[1] + 1];
  }

  // One unit's line over the columns [from, to) of `columns`, whose x(column) places them.
  line(values, { from, to, x }, g = this.context) {
    g.beginPath();
    g.moveTo(x(from), this.yOf(values[from]));
    for (let column = from + 1; column < to; column++) g.lineTo(x(column), this.yOf(values[column]));
    g.stroke();
  }

  // The brush (tinted), its padding (grey, with grab handles at the outer edges) and a brush being dragged.
  drawRanges(scene, x0, cell, height) {
    const g = this.context;
    const span = (a, b, style) => {
      const left = x0 + (Math.max(a, scene.position) - scene.position) * cell;
      const right = x0 + (Math.min(b, scene.position + scene.size) - scene.position) * cell;
      if (right <= left) return;
      g.fillStyle = style;
      g.fillRect(left, 0, right - left, height);
    };
    const wash = css("--line");
    if (scene.brush) {
      const [b0, b1] = scene.brush;
      const [left, right] = scene.padding;
      span(b0 - left, b0, wash);
      span(b1, b1 + right, wash);
      g.globalAlpha = 0.14;
      span(b0, b1, css("--accent"));
      g.globalAlpha = 1;
      g.fillStyle = css("--muted");
      for (const token of [b0 - left, b1 + right]) {
        const x = x0 + (token - scene.position) * cell;
        if (x >= x0 - 1 && x <= x0 + scene.size * cell + 1) g.fillRect(x - 1.5, height / 2 - 14, 3, 28);
      }
    }
    if (scene.preview) {
      g.globalAlpha = 0.25;
      span(scene.preview[0], scene.preview[1], css("--accent"));
      g.globalAlpha = 1;
    }
  }

  drawAxis(x0, width) {
    const g = this.context;
    const [lo, hi] = this.range;
    g.font = "11px system-ui, sans-serif";
    g.textAlign = "right";
    g.textBaseline = "middle";
    g.fillStyle = css("--muted");
    g.strokeStyle = css("--line");
    g.lineWidth = 1;
    for (const value of [hi, 0, lo]) {
      if (value < lo || value > hi) continue;
      const y = Math.round(this.yOf(value)) + 0.5;
      g.beginPath();
      g.moveTo(x0, y);
      g.lineTo(width, y);
      g.stroke();
      g.fillText(formatValue(value), x0 - 6, y);
    }
  }

  drawThreshold(threshold, x0, width) {
    const g = this.context;
    const y = Math.round(this.yOf(threshold)) + 0.5;
    g.save();
    g.strokeStyle = css("--on");
    g.lineWidth = 1.5;
    g.setLineDash([6, 4]);
    g.beginPath();
    g.moveTo(x0, y);
    g.lineTo(width, y);
    g.stroke();
    g.restore();
    g.fillStyle = css("--on");
    g.textAlign = "right";
    g.textBaseline = "bottom";
    g.fillText(`threshold ${formatValue(threshold)}`, width - 4, y - 3);
  }
}

const formatValue = (value) => (Number.isInteger(value) ? String(value) : value.toFixed(2));

// The extent of a chunk's state values.
function valueRange(states) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const row of states) {
    for (const value of row) {
      if (value < lo) lo = value;
      if (value > hi) hi = value;
    }
  }
  return [lo, hi];
}
