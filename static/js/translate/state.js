// The translate page's state and its round trip through the address: the source, the decoding settings and the
// what-if edits (forced prefix, attention edits, word swap), so a debugging session can be shared and reloaded.

export const DEFAULTS = Object.freeze({ source: "", beam: 5, topK: 5, prefix: "", attention: [], swap: null });
export const MAX_BEAM = 20;
export const MAX_TOP_K = 50;

const wholeNumber = (name, text, lo, hi) => {
  const value = Number(text);
  if (!/^\d+$/.test(text.trim()) || value < lo || value > hi) {
    throw new Error(`${name}: must be a whole number from ${lo} to ${hi}, got '${text}'`);
  }
  return value;
};

// Attention edits as text: "step:w,w,w;step:w,w,w" (weights over the source tokens).
function parseAttention(text) {
  return text.split(";").filter((part) => part.trim()).map((part) => {
    const match = /^(\d+):([^:]+)$/.exec(part.trim());
    const weights = match ? match[2].split(",").map(Number) : [];
    if (!match || !weights.length || weights.some((w) => !Number.isFinite(w) || w < 0)) {
      throw new Error(`att: expected 'step:weight,weight,…' separated by ';', got '${part}'`);
    }
    return { step: Number(match[1]), weights };
  });
}

// Read the state from a query string; throws an Error naming the first bad parameter.
export function parseState(search) {
  const params = new URLSearchParams(search);
  const project = params.get("project");
  if (!project) throw new Error("project: the address needs ?project=NAME (open a project from the index page)");
  const state = { ...DEFAULTS, project, attention: [] };
  if (params.has("source")) state.source = params.get("source");
  if (params.has("beam")) state.beam = wholeNumber("beam", params.get("beam"), 1, MAX_BEAM);
  if (params.has("k")) state.topK = wholeNumber("k", params.get("k"), 1, MAX_TOP_K);
  if (params.has("prefix")) state.prefix = params.get("prefix");
  if (params.has("att")) state.attention = parseAttention(params.get("att"));
  if (params.has("swap")) {
    const match = /^(\d+):(.+)$/.exec(params.get("swap"));
    if (!match) throw new Error(`swap: expected 'position:word', got '${params.get("swap")}'`);
    state.swap = { position: Number(match[1]), word: match[2] };
  }
  return state;
}

// The query string of a state, leaving out what equals the defaults.
export function formatState(state) {
  const params = new URLSearchParams({ project: state.project });
  if (state.source) params.set("source", state.source);
  if (state.beam !== DEFAULTS.beam) params.set("beam", state.beam);
  if (state.topK !== DEFAULTS.topK) params.set("k", state.topK);
  if (state.prefix) params.set("prefix", state.prefix);
  if (state.attention.length) {
    params.set("att", state.attention.map(({ step, weights }) =>
      `${step}:${weights.map((w) => Number(w.toFixed(4))).join(",")}`).join(";"));
  }
  if (state.swap) params.set("swap", `${state.swap.position}:${state.swap.word}`);
  return `?${params.toString().replaceAll("%2C", ",").replaceAll("%3A", ":").replaceAll("%3B", ";")}`;
}

// Whether the state asks for a what-if (any edit of the plain translation).
export const hasEdits = (state) => Boolean(state.prefix || state.attention.length || state.swap);
