"""The data side (bounds.md §8): a model's own forward pass on token sequences, the attention
matrices and logit fields it computes, and their measures per head, aggregated over sequences.

>>> import specbound
>>> att = specbound.attention(texts=["A sentence.", "Another one."])   # doctest: +SKIP
>>> att.heads, att.layers, att.sequences, att.attention_effective_rank  # doctest: +SKIP
"""

from specbound.data.api import attention, default_text
from specbound.data.result import CAPACITY, AttentionResult

__all__ = ["CAPACITY", "AttentionResult", "attention", "default_text"]
