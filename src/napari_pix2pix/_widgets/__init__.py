"""The napari face of the engine: dock widgets that gather settings, start workers and draw results.

Nothing here computes: training and prediction are the core's generators (``training.train``,
``prediction.iter_predict``) run in ``napari.qt.threading`` workers.
"""

import sys

# torch imports Triton (via torch._dynamo) the first time an optimiser is built. Triton carries its
# own LLVM, and loading it into a process whose OpenGL runs on Mesa's LLVM-based drivers (llvmpipe
# under Xvfb, radeonsi) crashes napari with a segmentation fault. The plugin never compiles
# kernels, so inside napari Triton is made unimportable unless something has loaded it already.
sys.modules.setdefault("triton", None)  # type: ignore[arg-type]

from ._models import model_store  # noqa: E402  (the models both docks offer)
from .predict_widget import PredictWidget  # noqa: E402
from .train_widget import TrainWidget  # noqa: E402

__all__ = ["PredictWidget", "TrainWidget", "model_store"]
