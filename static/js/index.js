// The projects index: every project with its view, demo builds with progress, folders that failed to open.
import { api, el, formatCount, showError } from "./common.js";

const VIEWS = { tokens: "explorer.html", seq2seq: "translate.html", units: "units.html" };

function sizes(project) {
  const parts = [];
  if (project.tokens) parts.push(`${formatCount(project.tokens)} tokens`);
  if (project.layers) parts.push(`${project.layers.length} layer${project.layers.length === 1 ? "" : "s"}`);
  if (project.meta?.length) parts.push(`${project.meta.length} meta tracks`);
  return parts.join(" · ");
}

function projectCard(project) {
  const view = VIEWS[project.kind];
  return el("article", { class: "card", "data-project": project.name },
    el("span", { class: "kind" }, project.kind),
    el("h3", {}, project.name),
    project.description ? el("p", { class: "muted" }, project.description) : null,
    el("span", { class: "sizes" }, sizes(project)),
    view ? el("a", { class: "open", href: `${view}?project=${encodeURIComponent(project.name)}` }, "Open") : null);
}

function buildItem(build) {
  const { stage, fraction } = build.progress;
  const status = build.status === "failed" ? `failed: ${build.error}` : `${build.status}${stage ? ` — ${stage}` : ""}`;
  return el("li", { "data-build": build.name },
    el("strong", {}, build.name), " ", el("span", { class: "muted" }, status),
    el("div", { class: "meter" }, el("div", { style: `width: ${Math.round(100 * (fraction ?? 0))}%` })));
}

async function refresh() {
  let data;
  try {
    data = await api("api/projects");
    showError(null);
  } catch (error) {
    showError(error);
    setTimeout(refresh, 5000);
    return;
  }
  document.getElementById("projects").replaceChildren(...data.projects.map(projectCard));
  document.getElementById("empty").hidden = data.projects.length > 0;
  const active = data.building.filter((build) => build.status !== "done");
  document.getElementById("building").hidden = active.length === 0;
  document.getElementById("builds").replaceChildren(...active.map(buildItem));
  document.getElementById("broken-section").hidden = data.broken.length === 0;
  document.getElementById("broken").replaceChildren(...data.broken.map((item) =>
    el("li", {}, el("strong", {}, item.folder), ": ", el("code", {}, item.error))));
  if (active.some((build) => build.status !== "failed")) setTimeout(refresh, 2000);
}

refresh();
