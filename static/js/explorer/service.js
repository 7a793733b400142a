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
  // chunk reaching half a window beyond both sides, so scrolling draws without waiting.
  async context(layer, start, stop, tokens) {
    const cached = this.chunk;
    if (cached && cached.layer === layer && cached.start <= start && stop <= cached.stop) return cached;
    const size = stop - start;
    const margin = Math.max(0, Math.floor((Math.min(MAX_CONTEXT, 2 * size) - size) / 2));
    const from = Math.max(0, start - margin);
    const to = Math.min(tokens, stop + margin);
    const answer = await api(`${this.base}/context?${query({ layer, start: from, stop: to })}`);
    answer.states = answer.states.map((row) => Float32Array.from(row));
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
      lengths: [lengthBins("all selected units on", strict), lengthBins("most selected units on", fuzzy)],
      meta: answer.meta,
      total: answer.total,
      strictTotal: answer.strict_total,
      index: answer.index,
    };
  }

  // Phrase or regular-expression hits: {hits: [{start, stop}], complete}.
  search(text, regex) {
    return api(`${this.base}/search?${query({ q: text, regex: regex ? 1 : 0, limit: 1000 })}`);
  }

  // Each unit's best concept label as a Map unit -> {label, iou, direction}; empty where the project has no
  // labels for the layer (the server answers 404), since labels are an optional extra of a project.
  async labels(layer) {
    let answer;
    try {
      answer = await api(`${this.base}/labels?${query({ layer })}`);
    } catch (error) {
      if (error.status === 404) return new Map();
      throw error;
    }
    return new Map((answer.units ?? answer.labels ?? []).map((entry) => [entry.unit, entry]));
  }
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
