"""Sample data: the shipped real nuclei, the synthetic EM-like membrane stack and 3D nuclei."""

from .confocal import nuclei_volume
from .loaders import NUCLEI_3D_VOXEL_SIZE, membrane_sample, nuclei_3d_sample, nuclei_stack, sample_data_dir
from .synthetic import membrane_volume

__all__ = [
    "NUCLEI_3D_VOXEL_SIZE",
    "membrane_sample",
    "membrane_volume",
    "nuclei_3d_sample",
    "nuclei_stack",
    "nuclei_volume",
    "sample_data_dir",
]
