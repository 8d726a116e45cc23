"""``Normalisation``: the intensity scaling a model was trained with, a small dataclass that
travels with the model and serialises to a plain dict."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Normalisation:
    """Per-channel percentile normalisation, ``(x - low) / (high - low)``.

    With ``per_image`` (the rule models are trained with) every image is scaled by its own
    ``lower`` and ``upper`` percentiles, at training and at prediction, so images of other
    brightness or contrast look alike to the network; ``low`` and ``high`` then record the
    training images' values, for information. Without it (models from before the rule, and
    models built in code), ``low`` and ``high`` are fixed numbers applied to every image.
    """

    low: tuple[float, ...]
    high: tuple[float, ...]
    per_image: bool = False
    lower: float = 1.0
    upper: float = 99.8

    @classmethod
    def fit(cls, image: np.ndarray, lower: float = 1.0, upper: float = 99.8, per_image: bool = False) -> Normalisation:
        """Learn the percentiles of a (…, C) image (subsampled: exact enough and fast)."""
        flat = image.reshape(-1, image.shape[-1])
        step = max(1, flat.shape[0] // 2_000_000)
        low, high = np.percentile(flat[::step].astype(np.float32), [lower, upper], axis=0)
        high = np.where(high > low, high, low + 1.0)
        return cls(tuple(float(v) for v in low), tuple(float(v) for v in high), per_image, lower, upper)

    def for_image(self, image: np.ndarray) -> Normalisation:
        """The fixed normalisation to apply to ``image`` (…, C): its own percentiles under the
        per-image rule, else this one."""
        return Normalisation.fit(image, self.lower, self.upper) if self.per_image else self

    def apply(self, image: np.ndarray) -> np.ndarray:
        """(…, C) image → float32 scaled so the range maps to about [0, 1] (fixed numbers: see ``for_image``)."""
        low = np.asarray(self.low, dtype=np.float32)
        scale = 1.0 / (np.asarray(self.high, dtype=np.float32) - low)
        scaled = np.array(image, dtype=np.float32)  # a copy, scaled in place: one float32 image at a time
        scaled -= low
        scaled *= scale
        return scaled

    def to_dict(self) -> dict:
        rule = {"per_image": True, "lower": self.lower, "upper": self.upper} if self.per_image else {}
        return {"low": list(self.low), "high": list(self.high), **rule}

    @classmethod
    def from_dict(cls, d: dict) -> Normalisation:
        low, high = tuple(float(v) for v in d["low"]), tuple(float(v) for v in d["high"])
        if not d.get("per_image", False):
            return cls(low, high)
        return cls(low, high, True, float(d["lower"]), float(d["upper"]))
