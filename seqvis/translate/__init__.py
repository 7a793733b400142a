"""The translation debugger: the adapter protocol any encoder-decoder is wrapped in, decoding that keeps the
whole search (greedy, beam, forced prefix, attention edits, word swaps), and the service over a project."""
from seqvis.translate.adapter import Encoding, Seq2SeqAdapter
from seqvis.translate.decode import (AdapterError, AttentionUnavailable, Hypothesis, Node, Translation, beam_search,
                                     embedding_neighbours, greedy, search, source_ids, target_ids,
                                     what_if)

__all__ = ["AdapterError", "AttentionUnavailable", "Encoding", "Hypothesis", "Node", "Seq2SeqAdapter", "Translation",
           "beam_search", "embedding_neighbours", "greedy", "search", "source_ids", "target_ids", "what_if"]
