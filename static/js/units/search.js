// Feature search: drag a box on a dataset image and see the dataset's most similar regions at the layer, each with
// its box and the heatmap of window scores over it.
import { el } from "../common.js";
import { imageUrl } from "./cards.js";

const MIN_DRAG = 4;                       // display pixels: a shorter drag is a click, not a box

// Place `node` over a frame at an image-pixel box [x0, y0, x1, y1] of an image of `size` [ih, iw].
function place(node, box, size) {
  const [ih, iw] = size;
  Object.assign(node.style, { left: `${(100 * box[0]) / iw}%`, top: `${(100 * box[1]) / ih}%`,
    width: `${(100 * (box[2] - box[0])) / iw}%`, height: `${(100 * (box[3] - box[1])) / ih}%` });
  node.hidden = false;
}

// The window scores [h, w] (null where no window fits) as a translucent canvas over the image.
function heatmapCanvas(heatmap) {
  const values = heatmap.flat().filter((value) => value !== null);
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  const canvas = el("canvas", { class: "heatmap-overlay", width: heatmap[0].length, height: heatmap.length });
  const context = canvas.getContext("2d");
  heatmap.forEach((row, y) => row.forEach((value, x) => {
    if (value === null) return;
    const t = hi > lo ? (value - lo) / (hi - lo) : 1;
    context.fillStyle = `rgba(228, 87, 46, ${(0.45 * t).toFixed(3)})`;
    context.fillRect(x, y, 1, 1);
  }));
  return canvas;
}

// Wire the search panel. `onSearch(item, box, mask)` runs a search (a box, or a brushed mask as rows of 0/1 over
// the image; neither: only show the image); returns `show`, which draws the query image and box, and `draw`, which
// draws an answer.
export function searchPanel({ project, imageSize, onSearch }) {
  const frame = document.getElementById("query-frame");
  const image = document.getElementById("query-image");
  const boxNode = document.getElementById("query-box");
  const itemInput = document.getElementById("query-item");
  const brush = document.getElementById("query-brush");
  const [ih, iw] = imageSize;
  Object.assign(brush, { width: iw, height: ih });
  const paint = brush.getContext("2d");
  let item = null;
  let drag = null;
  const brushing = () => document.querySelector("input[name=mode]:checked").value === "brush";

  const stroke = (from, to) => {
    Object.assign(paint, { strokeStyle: "rgb(47, 111, 222)", lineCap: "round", lineJoin: "round",
      lineWidth: Math.max(2, Math.round(Math.max(ih, iw) / 10)) });
    paint.beginPath();
    paint.moveTo(from.ix, from.iy);
    paint.lineTo(to.ix + 0.01, to.iy);
    paint.stroke();
  };
  const brushedMask = () => {
    const alpha = paint.getImageData(0, 0, iw, ih).data;
    return Array.from({ length: ih }, (_, y) => Array.from({ length: iw }, (_, x) => (alpha[4 * (y * iw + x) + 3] > 127 ? 1 : 0)));
  };

  const pixel = (event) => {
    const rect = frame.getBoundingClientRect();
    const x = Math.min(Math.max(event.clientX - rect.left, 0), rect.width);
    const y = Math.min(Math.max(event.clientY - rect.top, 0), rect.height);
    return { x, y, ix: (x / rect.width) * imageSize[1], iy: (y / rect.height) * imageSize[0] };
  };
  const boxOf = (a, b) => [Math.min(a.ix, b.ix), Math.min(a.iy, b.iy), Math.max(a.ix, b.ix), Math.max(a.iy, b.iy)];

  frame.addEventListener("pointerdown", (event) => {
    if (item === null || event.button !== 0) return;
    event.preventDefault();
    frame.setPointerCapture(event.pointerId);
    drag = { start: pixel(event), brush: brushing() };
    drag.last = drag.start;
    if (drag.brush) {
      paint.clearRect(0, 0, iw, ih);
      boxNode.hidden = true;
      stroke(drag.start, drag.start);
    }
  });
  frame.addEventListener("pointermove", (event) => {
    if (!drag) return;
    const end = pixel(event);
    if (drag.brush) {
      stroke(drag.last, end);
      drag.last = end;
      return;
    }
    if (Math.hypot(end.x - drag.start.x, end.y - drag.start.y) >= MIN_DRAG) place(boxNode, boxOf(drag.start, end), imageSize);
  });
  frame.addEventListener("pointerup", (event) => {
    if (!drag) return;
    if (drag.brush) {
      drag = null;
      onSearch(item, null, brushedMask());
      return;
    }
    const end = pixel(event);
    const moved = Math.hypot(end.x - drag.start.x, end.y - drag.start.y) >= MIN_DRAG;
    const [x0, y0, x1, y1] = boxOf(drag.start, end);
    drag = null;
    if (!moved) return;
    paint.clearRect(0, 0, iw, ih);
    const box = [Math.floor(x0), Math.floor(y0), Math.max(Math.ceil(x1), Math.floor(x0) + 1),
      Math.max(Math.ceil(y1), Math.floor(y0) + 1)].map((v, i) => Math.min(v, imageSize[1 - (i % 2)]));
    onSearch(item, box);
  });
  document.getElementById("query-form").addEventListener("submit", (event) => {
    event.preventDefault();
    onSearch(Number(itemInput.value), null, null);
  });

  return {
    show(newItem, box, brushed) {
      if (!brushed) paint.clearRect(0, 0, iw, ih);
      item = newItem;
      itemInput.value = item;
      frame.classList.add("ready");
      image.src = imageUrl(project, item);
      if (box) place(boxNode, box, imageSize);
      else boxNode.hidden = true;
    },
    draw(answer, onPick) {
      return answer.results.map((result) => {
        const box = el("div", { class: "box" });
        place(box, result.box, answer.image_size);
        return el("figure", { class: "search-result", "data-item": result.item, title: `${result.image}: open as the query` },
          el("div", { class: "result-frame", onclick: () => onPick(result.item) },
            el("img", { src: imageUrl(project, result.item), alt: `image ${result.item}`, width: 96, height: 96 }),
            heatmapCanvas(result.heatmap), box),
          el("figcaption", {}, el("span", { class: "muted" }, `#${result.item}`), ` ${result.score.toFixed(3)}`));
      });
    },
  };
}
