"""Spectra of every analysed matrix, computed layer by layer (factored, batched, float64)."""

from specbound.spectra.core import (
    LayerSpectra,
    MatrixSpectrum,
    factored_product_spectra,
    ff_singular_values,
    layer_spectra,
    product_column_norms_21,
)
from specbound.spectra.model import KINDS, ModelSpectra, compute_spectra, resolve_device, resolve_dtype

__all__ = [
    "KINDS",
    "LayerSpectra",
    "MatrixSpectrum",
    "ModelSpectra",
    "compute_spectra",
    "factored_product_spectra",
    "ff_singular_values",
    "layer_spectra",
    "product_column_norms_21",
    "resolve_device",
    "resolve_dtype",
]
