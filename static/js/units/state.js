// The unit inspector's view state and its round trip through the page address, so a view can be shared and reloaded.

export const SORTS = ["iou", "label", "unit"];

// Read the view from a query string; throws an Error naming the first bad parameter.
export function parseView(search) {
  const params = new URLSearchParams(search);
  const project = params.get("project");
  if (!project) throw new Error("project: the address needs ?project=NAME (open a project from the index page)");
  const sort = params.get("sort") ?? "iou";
  if (!SORTS.includes(sort)) throw new Error(`sort: must be one of ${SORTS.join(", ")}, got '${sort}'`);
  let unit = null;
  if (params.get("unit") !== null) {
    const text = params.get("unit");
    if (!/^\d+$/.test(text)) throw new Error(`unit: must be a unit id (a whole number), got '${text}'`);
    unit = Number(text);
  }
  return {
    project, sort, unit, layer: params.get("layer"), filter: params.get("q") ?? "",
    detectorsOnly: params.get("det") === "1", query: parseQuery(params),
  };
}

// The feature search's query image `si` and box `box` (x0,y0,x1,y1 in image pixels); a brushed mask stays out of
// the address (too long), so a reload shows its image without it.
function parseQuery(params) {
  const item = params.get("si");
  const box = params.get("box");
  if (item === null) {
    if (box !== null) throw new Error("box: give the query image si with it");
    return null;
  }
  if (!/^\d+$/.test(item)) throw new Error(`si: must be an image number, got '${item}'`);
  if (box !== null && !/^\d+,\d+,\d+,\d+$/.test(box)) throw new Error(`box: must be x0,y0,x1,y1 in pixels, got '${box}'`);
  return { item: Number(item), box: box === null ? null : box.split(",").map(Number), mask: null };
}

// The query string of a view (defaults left out).
export function viewQuery(view) {
  const params = new URLSearchParams({ project: view.project });
  if (view.layer) params.set("layer", view.layer);
  if (view.sort !== "iou") params.set("sort", view.sort);
  if (view.detectorsOnly) params.set("det", "1");
  if (view.filter) params.set("q", view.filter);
  if (view.unit !== null) params.set("unit", String(view.unit));
  if (view.query) params.set("si", String(view.query.item));
  if (view.query?.box) params.set("box", view.query.box.join(","));
  return `?${params}`;
}
