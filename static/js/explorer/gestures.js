// Pointer gestures over the view (plot, words and meta rows share the token columns): drag to brush a range,
// drag a padding handle to widen or narrow the padding, turn the wheel to scroll (Ctrl: zoom), hover the plot.

const WHEEL_NOTCH = 40;     // wheel delta (px) per scroll step
const ZOOM_STEP = 1.25;     // window size factor per zoom notch

const clamp = (value, lo, hi) => Math.min(hi, Math.max(lo, value));

// `on` holds the page's side: view() -> {position, size, brush, padding}, tokens (corpus length), ready(),
// preview(range | null), brush(range), padding([left, right]), paddingDone(), scroll(steps), zoom(factor),
// hover(event).
export function wireGestures(area, plot, on) {
  let drag = null;
  const inColumns = (event) => event.clientX - plot.canvas.getBoundingClientRect().left >= plot.gutter;

  area.addEventListener("pointerdown", (event) => {
    if (event.button !== 0 || !on.ready() || !inColumns(event)) return;
    const handle = plot.handleAt(event.clientX);
    drag = handle ? { handle } : { anchor: plot.tokenAt(event.clientX, on.view()) };
    if (!handle) on.preview([drag.anchor, drag.anchor + 1]);
    area.setPointerCapture(event.pointerId);
    event.preventDefault();
  });

  area.addEventListener("pointermove", (event) => {
    const view = on.view();
    if (drag?.handle) {
      const edge = plot.edgeAt(event.clientX, view);
      const [left, right] = view.padding;
      on.padding(drag.handle === "left"
        ? [clamp(view.brush[0] - edge, 0, Math.min(1000, view.brush[0])), right]
        : [left, clamp(edge - view.brush[1], 0, Math.min(1000, on.tokens - view.brush[1]))]);
    } else if (drag) {
      const token = plot.tokenAt(event.clientX, view);
      on.preview([Math.min(drag.anchor, token), Math.max(drag.anchor, token) + 1]);
    } else if (event.target === plot.canvas) {
      plot.canvas.style.cursor = plot.handleAt(event.clientX) ? "ew-resize" : "crosshair";
      on.hover(event);
    }
  });

  area.addEventListener("pointerup", (event) => {
    if (!drag) return;
    const finished = drag;
    drag = null;
    if (finished.handle) {
      on.paddingDone();
    } else {
      const view = on.view();
      const token = plot.tokenAt(event.clientX, view);
      on.preview(null);
      on.brush([Math.min(finished.anchor, token), Math.max(finished.anchor, token) + 1]);
    }
  });

  plot.canvas.addEventListener("pointerleave", () => on.hover(null));

  // The wheel scrolls; with Ctrl (or a pinch, which browsers report as Ctrl+wheel) it zooms.
  let wheel = 0;
  let zoom = 0;
  area.addEventListener("wheel", (event) => {
    event.preventDefault();
    if (event.ctrlKey) {
      zoom += event.deltaY;
      if (Math.abs(zoom) < WHEEL_NOTCH) return;
      on.zoom(zoom > 0 ? ZOOM_STEP : 1 / ZOOM_STEP);
      zoom = 0;
      return;
    }
    wheel += Math.abs(event.deltaX) > Math.abs(event.deltaY) ? event.deltaX : event.deltaY;
    const steps = Math.trunc(wheel / WHEEL_NOTCH);
    if (!steps) return;
    wheel -= steps * WHEEL_NOTCH;
    on.scroll(steps);
  }, { passive: false });
}
