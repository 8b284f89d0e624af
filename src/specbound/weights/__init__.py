"""Reading checkpoints into the canonical :class:`TransformerWeights`."""
