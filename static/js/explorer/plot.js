// The line plot of unit states over the tokens of the view, drawn on a canvas (hundreds of units stay fluid):
// faint lines for all units, coloured lines for the selected ones, the threshold, the brush and its padding.

const PALETTE = ["#2f6fde", "#e4572e", "#2a9d58", "#9b59b6", "#e0a100", "#17a2b8", "#c0392b", "#8c564b",
  "#d63384", "#4b5563"];
const HANDLE_REACH = 6;     // px either side of a padding handle that grab it
const TOP = 10;
const BOTTOM = 14;

// The colour of the i-th selected unit (the side panel shows the same swatch).
export const unitColour = (index) => PALETTE[index % PALETTE.length];

const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

export class LinePlot {
  constructor(canvas) {
    this.canvas = canvas;
    this.context = canvas.getContext("2d");
    this.scene = null;
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
    const { canvas, context: g } = this;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.fillStyle = css("--paper");
    g.fillRect(0, 0, width, height);
    if (!scene.chunk) return;
    const from = scene.position - scene.chunk.start;
    const to = Math.min(from + scene.size, scene.chunk.stop - scene.chunk.start);
    this.range = scene.fixedRange ?? valueRange(scene.chunk.states, from, to, scene.threshold);
    this.height = height;
    const { x0, cell } = this.columns(scene.size);
    const xOf = (column) => x0 + (column - from + 0.5) * cell;

    this.drawRanges(scene, x0, cell, height);
    this.drawAxis(x0, width);
    const selected = new Map(scene.selected.map((unit, index) => [unit, index]));
    const faint = Math.min(0.35, Math.max(0.04, 6 / scene.chunk.units.length));
    g.lineWidth = 1;
    g.strokeStyle = css("--muted");
    g.globalAlpha = faint;
    scene.chunk.units.forEach((unit, index) => {
      if (!selected.has(unit)) this.line(scene.chunk.states[index], from, to, xOf);
    });
    g.globalAlpha = 1;
    for (const [unit, order] of selected) {
      const index = scene.chunk.units.indexOf(unit);
      if (index < 0) continue;
      g.lineWidth = unit === scene.hover ? 3 : 1.6;
      g.strokeStyle = unitColour(order);
      this.line(scene.chunk.states[index], from, to, xOf);
    }
    if (scene.hover !== null && !selected.has(scene.hover)) {
      const index = scene.chunk.units.indexOf(scene.hover);
      g.lineWidth = 2;
      g.strokeStyle = css("--ink");
      if (index >= 0) this.line(scene.chunk.states[index], from, to, xOf);
    }
    this.drawThreshold(scene.threshold, x0, width);
    this.drawMilliseconds = performance.now() - started;
  }

  line(values, from, to, xOf) {
    const g = this.context;
    g.beginPath();
    g.moveTo(xOf(from), this.yOf(values[from]));
    for (let column = from + 1; column < to; column++) g.lineTo(xOf(column), this.yOf(values[column]));
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

// The y range for states with no fixed range: the extent of the visible values and the threshold.
function valueRange(states, from, to, threshold) {
  let lo = Math.min(threshold, 0);
  let hi = Math.max(threshold, 0);
  for (const row of states) {
    for (let column = from; column < to; column++) {
      if (row[column] < lo) lo = row[column];
      if (row[column] > hi) hi = row[column];
    }
  }
  return hi > lo ? [lo, hi] : [lo - 1, hi + 1];
}
