// Shared helpers for the pages: JSON requests whose errors reach the user, and small DOM utilities.

export class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

// GET (or POST when body is given) a JSON endpoint; rejects with ApiError carrying the server's message.
export async function api(path, body) {
  const init = body === undefined ? {} :
    { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new ApiError(0, "network", `the server did not answer (${error.message})`);
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const error = data?.error ?? { code: "http", message: `${response.status} ${response.statusText}` };
    throw new ApiError(response.status, error.code, error.message);
  }
  return data;
}

// Show an error in the page's #error box (or clear it with null).
export function showError(error) {
  const box = document.getElementById("error");
  if (!box) return;
  box.hidden = !error;
  box.textContent = error ? `${error.message}` : "";
}

// Run one user action: clear the previous error, show this one's failure in #error.
export async function act(task) {
  showError(null);
  try {
    await task();
  } catch (error) {
    showError(error);
  }
}

// Size a canvas's backing store to its CSS box at the screen's pixel ratio; returns its 2-D context, drawing in CSS
// pixels, that box's width and height, and the ratio.
export function fitCanvas(canvas, g = canvas.getContext("2d")) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  return { g, width, height, ratio };
}

// Create an element: el("a", {href: "x", class: "y"}, "text", child, ...).
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

export const formatCount = (n) => Intl.NumberFormat("en", { notation: n >= 1e5 ? "compact" : "standard" }).format(n);
