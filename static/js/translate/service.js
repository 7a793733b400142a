// The translate API as the page uses it: one decode call for plain and what-if translations, substitutes,
// neighbours.
import { api } from "../common.js";
import { hasEdits } from "./state.js";

const query = (params) => new URLSearchParams(params).toString();

export class TranslateService {
  constructor(project) {
    this.base = `api/translate/${encodeURIComponent(project)}`;
  }

  info() {
    return api(`${this.base}/info`);
  }

  // Each encoder or decoder unit's best concepts: {status: "ready", concepts: [{label, unit, direction, iou, ap,
  // best_baseline_iou, ...}], tokens, ...}, or {status: "building", progress} while the server computes them.
  labels(side) {
    return api(`${this.base}/labels?${query({ side })}`);
  }

  // The translation the state asks for: {shown, original, edits}. Without edits `shown` is the plain translation
  // and `original` null; with edits `shown` is the edited one and `original` the plain one beside it.
  async decode(state) {
    const options = { source: state.source, beam: state.beam, n_best: state.beam, top_k: state.topK };
    if (!hasEdits(state)) {
      return { shown: await api(`${this.base}/translate?${query(options)}`), original: null, edits: null };
    }
    const answer = await api(`${this.base}/whatif`, {
      ...options,
      prefix: state.prefix || undefined,
      attention: state.attention.length ? state.attention : undefined,
      swap: state.swap ?? undefined,
    });
    return { shown: answer.edited, original: answer.original, edits: answer.edits };
  }

  // Source words to swap in at `position` of `source`: {word, neighbours: [{word, similarity}]}.
  substitutes(source, position, k = 12) {
    return api(`${this.base}/substitutes?${query({ source, position, k })}`);
  }

  // The training states nearest to one encoder state (side "encoder", a source position) or decoder state (side
  // "decoder", a position among the output words `target`, decoded with the attention edits).
  neighbours({ source, side, position, target, attention, k = 20 }) {
    return api(`${this.base}/neighbours`, {
      source, side, position, k,
      target: side === "decoder" ? target : undefined,
      attention: side === "decoder" && attention.length ? attention : undefined,
    });
  }
}
