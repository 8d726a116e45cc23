"""The device choices the widgets show: the names ``devices.resolve_device`` accepts, labelled."""

from __future__ import annotations

from ..devices import DEVICES

_LABELS = {"auto": "Automatic (GPU if present)", "cpu": "CPU", "cuda": "CUDA GPU", "mps": "Apple MPS"}

#: (label, device name) for each of ``devices.DEVICES``, in its order.
DEVICE_CHOICES = [(_LABELS.get(name, name), name) for name in DEVICES]
