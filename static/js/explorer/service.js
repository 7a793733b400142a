// The explorer API as the page uses it: a cached context window around the view, and answers reshaped once here.
import { api } from "../common.js";

export const MAX_CONTEXT = 2000;   // tokens the server returns in one context call

const query = (params) => new URLSearchParams(
  Object.entries(params).filter(([, value]) => value !== undefined && value !== null)).toString();

export class ExplorerService {
  constructor(project) {
    this.project = project;
    this.base = `api/explorer/${encodeURIComponent(project)}`;
    this.chunk = null;      // the last context answer: {layer, start, stop, units, words, states, meta}
  }

  describe() {
    return api(`api/projects/${encodeURIComponent(this.project)}`);
  }

  // The context covering tokens [start, stop) of `layer`, from the cached chunk when it holds them; otherwise a
  // chunk twice as long around them (up to MAX_CONTEXT, within the corpus), so scrolling draws without waiting.
  async context(layer, start, stop, tokens) {
    const cached = this.chunk;
    if (cached && cached.layer === layer && cached.start <= start && stop <= cached.stop) return cached;
    const length = Math.min(tokens, Math.max(stop - start, Math.min(MAX_CONTEXT, 2 * (stop - start))));
    const from = Math.max(0, Math.min(tokens - length, start - Math.floor((length - (stop - start)) / 2)));
    const to = from + length;
    const answer = await api(`${this.base}/context?${query({ layer, start: from, stop: to, encoding: "float32" })}`);
    answer.states = unitRows(answer.states, answer.units.length, to - from);
    this.chunk = answer;
    return answer;
  }

  // Units on over the brush and off over the padding: a list of unit ids.
  async select(layer, [b0, b1], [left, right], threshold) {
    const answer = await api(`${this.base}/select?${query({ layer, b0, b1, left, right, threshold })}`);
    return answer.units;
  }

  // Match the selected units over the corpus. Answers {results, lengths, meta, total, strictTotal, index}:
  // results ranked, each with its context; lengths the run-length histograms [{title, labels, counts}]; meta
  // {track: {labels, counts}}; totals of candidate runs; index the match index status ({status, progress?}).
  async match(layer, units, threshold, { length, left, right }) {
    const answer = await api(`${this.base}/match?${query({
      layer, units: units.join(","), threshold, phrase_length: length, left: left ? 1 : 0, right: right ? 1 : 0,
    })}`);
    const { strict, fuzzy } = answer.histograms;
    return {
      results: answer.results,
      lengths: [lengthBins("run lengths, all selected units on", strict),
        lengthBins("run lengths, most selected units on", fuzzy)],
      meta: answer.meta,
      total: answer.total,
      strictTotal: answer.strict_total,
      index: answer.index,
    };
  }

  // One unit: {labels: its best concepts, top and bottom: [{position, value, start, words}]}, the contexts
  // where it is highest and lowest over the whole corpus.
  unit(layer, unit) {
    return api(`${this.base}/unit?${query({ layer, unit })}`);
  }

  // Phrase or regular-expression hits: {hits: [{start, stop}], complete}.
  search(text, regex) {
    return api(`${this.base}/search?${query({ q: text, regex: regex ? 1 : 0, limit: 1000 })}`);
  }

  // Each unit's best concept label: {labels: Map unit -> {label, category, iou, ap, direction, baseline_iou},
  // missing, building}. While the server computes them, `building` holds its progress ({fraction, ...}); where
  // it cannot label the layer (a 404 or a 400, or a failed computation) the map is empty and `missing` says why.
  async labels(layer) {
    let answer;
    try {
      answer = await api(`${this.base}/labels?${query({ layer })}`);
    } catch (error) {
      if (error.status === 404 || error.status === 400) return { labels: new Map(), missing: error.message };
      throw error;
    }
    if (answer.status === "building") return { labels: new Map(), missing: null, building: answer.progress ?? {} };
    if (answer.status === "failed") return { labels: new Map(), missing: answer.error };
    const units = (answer.units ?? []).filter((entry) => entry?.label);
    return { labels: new Map(units.map((entry) => [entry.unit, entry])), missing: null };
  }
}

// base64 of a little-endian float32 [units, tokens] matrix as one Float32Array view per unit.
function unitRows(base64, units, tokens) {
  const bytes = Uint8Array.from(atob(base64), (char) => char.charCodeAt(0));
  const values = new Float32Array(bytes.buffer);
  return Array.from({ length: units }, (_, unit) => values.subarray(unit * tokens, (unit + 1) * tokens));
}

const MAX_BARS = 16;

// A histogram indexed by run length (runs are >= 2 long) as bars from 2 on, the longest ones pooled in one bar.
export function lengthBins(title, byLength) {
  const last = byLength.length - 1;
  const top = Math.min(last, 2 + MAX_BARS - 1);
  const labels = [];
  const counts = [];
  for (let length = 2; length <= top; length++) {
    const pooled = length === top && top < last;
    labels.push(pooled ? `${length}+` : String(length));
    counts.push(pooled ? byLength.slice(length).reduce((sum, count) => sum + count, 0) : byLength[length]);
  }
  return { title, labels, counts };
}
