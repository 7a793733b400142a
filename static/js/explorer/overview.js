// The corpus bar: where the view, the brush, the match results and the search hits lie in the whole corpus.
// Press on it to see where the view would go, release to go there.
import { fitCanvas } from "../common.js";

const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

export class CorpusBar {
  // `go(token)` is called with the token the user released the pointer on.
  constructor(canvas, go) {
    this.canvas = canvas;
    this.scene = null;
    this.pressed = null;     // the token under the pointer while it is pressed
    canvas.addEventListener("pointerdown", (event) => {
      if (event.button !== 0 || !this.scene) return;
      event.stopPropagation();      // the view around the bar brushes on a press; this press moves it instead
      canvas.setPointerCapture(event.pointerId);
      this.pressed = this.tokenAt(event.clientX);
      this.draw(this.scene);
    });
    canvas.addEventListener("pointermove", (event) => {
      if (!this.scene) return;
      const token = this.tokenAt(event.clientX);
      const count = (n) => n.toLocaleString("en");
      canvas.title = `token ${count(token)} of ${count(this.scene.tokens)}: click to go there`;
      if (this.pressed !== null) { this.pressed = token; this.draw(this.scene); }
    });
    canvas.addEventListener("pointerup", () => {
      if (this.pressed === null) return;
      const token = this.pressed;
      this.pressed = null;
      go(token);
    });
  }

  tokenAt(clientX) {
    const box = this.canvas.getBoundingClientRect();
    const share = Math.min(1, Math.max(0, (clientX - box.left) / Math.max(1, box.width)));
    return Math.min(this.scene.tokens - 1, Math.floor(share * this.scene.tokens));
  }

  // Draw {tokens, position, size, brush, results: [{start, stop}], hits: [{start, stop}]}.
  draw(scene) {
    this.scene = scene;
    const { g, width, height } = fitCanvas(this.canvas);
    g.fillStyle = css("--wash");
    g.fillRect(0, 0, width, height);
    const xOf = (token) => (token / scene.tokens) * width;
    const marks = (ranges, colour, top, bottom) => {
      g.fillStyle = colour;
      for (const { start, stop } of ranges) {
        g.fillRect(Math.floor(xOf(start)), top, Math.max(1, xOf(stop) - xOf(start)), height - top - bottom);
      }
    };
    marks(scene.hits, css("--ok"), height / 2, 1);
    marks(scene.results, css("--accent"), 1, height / 2);
    if (scene.brush) marks([{ start: scene.brush[0], stop: scene.brush[1] }], css("--on"), 1, 1);
    const frame = (start, colour) => {
      const x = xOf(start);
      const w = Math.max(3, xOf(start + scene.size) - x);
      g.strokeStyle = colour;
      g.lineWidth = 1.5;
      g.strokeRect(Math.max(0.75, Math.min(width - w - 0.75, x)), 0.75, w, height - 1.5);
    };
    frame(scene.position, css("--ink"));
    if (this.pressed !== null) frame(this.pressed - scene.size / 2, css("--muted"));
  }
}
