"""Spectra of every analysed matrix: blocks → one loop with one policy → :class:`ModelSpectra`."""

from specbound.spectra.blocks import Dense, FactoredProduct, blocks_of, difference_blocks
from specbound.spectra.compute import SpectraPolicy, compute_spectra, layer_spectra, resolve_device, resolve_dtype
from specbound.spectra.kernels import factored_product, ff_singular_values
from specbound.spectra.spectrum import KINDS, LayerSpectra, MatrixSpectrum, ModelSpectra, WeightNorms

__all__ = [
    "KINDS",
    "Dense",
    "FactoredProduct",
    "LayerSpectra",
    "MatrixSpectrum",
    "ModelSpectra",
    "SpectraPolicy",
    "WeightNorms",
    "blocks_of",
    "compute_spectra",
    "difference_blocks",
    "factored_product",
    "ff_singular_values",
    "layer_spectra",
    "resolve_device",
    "resolve_dtype",
]
