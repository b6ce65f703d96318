"""Serving: the SavedModel export for TF Serving and the in-process serving functions `tfseg.predict` uses."""
from tfseg.serving.export_module import (  # noqa: F401
    INPUT_BYTES, INPUT_TENSOR, OUTPUTS, SIGNATURE_BYTES, SIGNATURE_TENSOR, ServingFunctions, export, export_run,
    next_version, read_metadata)
