// The explorer's view state and its round trip through the page address, so a view can be shared and reloaded.

export const DEFAULTS = Object.freeze({
  layer: null, position: 0, size: 80, threshold: 0.3, brush: null, padding: [1, 0], units: null,
  match: false, matchOptions: { length: 0, left: false, right: false }, query: "", regex: false,
});
export const MIN_SIZE = 5;
export const MAX_SIZE = 2000;

const wholeNumber = (name, text, lo, hi) => {
  const value = Number(text);
  if (!/^-?\d+$/.test(text.trim()) || value < lo || value > hi) {
    throw new Error(`${name}: must be a whole number from ${lo} to ${hi}, got '${text}'`);
  }
  return value;
};

// Read the view from a query string; throws an Error naming the first bad parameter.
export function parseView(search) {
  const params = new URLSearchParams(search);
  const project = params.get("project");
  if (!project) throw new Error("project: the address needs ?project=NAME (open a project from the index page)");
  const view = { ...DEFAULTS, project, padding: [...DEFAULTS.padding], matchOptions: { ...DEFAULTS.matchOptions } };
  const get = (name) => params.get(name);
  if (get("layer")) view.layer = get("layer");
  if (get("pos") !== null) view.position = wholeNumber("pos", get("pos"), 0, Number.MAX_SAFE_INTEGER);
  if (get("size") !== null) view.size = wholeNumber("size", get("size"), MIN_SIZE, MAX_SIZE);
  if (get("th") !== null) {
    const threshold = Number(get("th"));
    if (get("th").trim() === "" || !(threshold >= -1 && threshold <= 1)) {
      throw new Error(`th: the threshold must be a number from -1 to 1, got '${get("th")}'`);
    }
    view.threshold = threshold;
  }
  if ((get("b0") === null) !== (get("b1") === null)) throw new Error("b0, b1: give both ends of the brush or neither");
  if (get("b0") !== null) {
    const b0 = wholeNumber("b0", get("b0"), 0, Number.MAX_SAFE_INTEGER);
    const b1 = wholeNumber("b1", get("b1"), 0, Number.MAX_SAFE_INTEGER);
    if (b1 <= b0) throw new Error(`b1: the brush [b0, b1) must not be empty, got [${b0}, ${b1})`);
    view.brush = [b0, b1];
  }
  if (get("left") !== null) view.padding[0] = wholeNumber("left", get("left"), 0, 1000);
  if (get("right") !== null) view.padding[1] = wholeNumber("right", get("right"), 0, 1000);
  if (get("units") !== null) {
    const items = get("units").split(",").filter((item) => item.trim() !== "");
    view.units = [...new Set(items.map((item) => wholeNumber("units", item, 0, Number.MAX_SAFE_INTEGER)))];
  }
  view.match = get("match") === "1";
  if (get("mlen") !== null) view.matchOptions.length = wholeNumber("mlen", get("mlen"), 0, 1000);
  view.matchOptions.left = get("mleft") === "1";
  view.matchOptions.right = get("mright") === "1";
  view.query = get("q") ?? "";
  view.regex = get("regex") === "1";
  return view;
}

// Check the parts of a view that need the project's description; throws an Error naming the parameter.
export function checkView(view, project) {
  const layer = project.layers.find((candidate) => candidate.name === view.layer);
  if (!layer) {
    const known = project.layers.map((candidate) => candidate.name).join(", ");
    throw new Error(`layer: project '${project.name}' has no layer '${view.layer}'; known: ${known}`);
  }
  if (view.position >= project.tokens) {
    throw new Error(`pos: the project has ${project.tokens} tokens, got position ${view.position}`);
  }
  if (view.brush && view.brush[1] > project.tokens) {
    throw new Error(`b1: the brush [${view.brush}) ends after the last token (${project.tokens})`);
  }
  const bad = (view.units ?? []).find((unit) => unit >= layer.units);
  if (bad !== undefined) throw new Error(`units: layer '${layer.name}' has units 0..${layer.units - 1}, got ${bad}`);
}

// The query string for a view, leaving out what equals the defaults.
export function formatView(view) {
  const params = new URLSearchParams({ project: view.project });
  if (view.layer) params.set("layer", view.layer);
  if (view.position !== DEFAULTS.position) params.set("pos", view.position);
  if (view.size !== DEFAULTS.size) params.set("size", view.size);
  if (view.threshold !== DEFAULTS.threshold) params.set("th", view.threshold);
  if (view.brush) { params.set("b0", view.brush[0]); params.set("b1", view.brush[1]); }
  if (view.padding[0] !== DEFAULTS.padding[0]) params.set("left", view.padding[0]);
  if (view.padding[1] !== DEFAULTS.padding[1]) params.set("right", view.padding[1]);
  if (view.units) params.set("units", view.units.join(","));
  if (view.match) params.set("match", "1");
  if (view.matchOptions.length) params.set("mlen", view.matchOptions.length);
  if (view.matchOptions.left) params.set("mleft", "1");
  if (view.matchOptions.right) params.set("mright", "1");
  if (view.query) params.set("q", view.query);
  if (view.regex) params.set("regex", "1");
  return `?${params.toString().replaceAll("%2C", ",")}`;
}
