// Hover linking: every element that shows a token carries data-link="enc:3" (source token 3) or "dec:1" (output
// token 1), or several keys ("dec:1 enc:3" for an attention cell); the pointer on one lights up every element
// sharing a key, in every view.

let lit = [];

function clear() {
  for (const node of lit) node.classList.remove("linked");
  lit = [];
}

// Light up the elements sharing a key with `keys` (a space-separated list); null clears.
export function highlight(keys) {
  clear();
  for (const key of (keys ?? "").split(" ").filter(Boolean)) {
    for (const node of document.querySelectorAll(`[data-link~="${CSS.escape(key)}"]`)) {
      node.classList.add("linked");
      lit.push(node);
    }
  }
}

// Follow the pointer over `root` (the page); views re-rendered under the pointer keep their links.
export function linkHover(root) {
  let current = null;
  root.addEventListener("pointerover", (event) => {
    const keys = event.target.closest?.("[data-link]")?.dataset.link ?? null;
    if (keys === current) return;
    current = keys;
    highlight(keys);
  });
  root.addEventListener("pointerleave", () => { current = null; highlight(null); });
}
