"""Sample data: the shipped real nuclei and the synthetic EM-like membrane stack."""

from .loaders import membrane_sample, nuclei_stack, sample_data_dir
from .synthetic import membrane_volume

__all__ = ["membrane_sample", "membrane_volume", "nuclei_stack", "sample_data_dir"]
