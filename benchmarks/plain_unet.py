"""The baseline a competent user would write without this plugin: a plain PyTorch U-Net script.

About 60 lines: a padded U-Net (two 3×3 conv + batch norm + ReLU per level, width 16, depth 4),
Adam at 1e-3, cross-entropy, random 256² crops with flips and 90° turns, per-image percentile
normalisation, trained until the time is up; prediction is one pass over each padded slice and an
argmax. Nothing here is shared with the plugin, so the comparison is honest.
"""

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def block(cin, cout):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class PlainUNet(nn.Module):
    def __init__(self, classes=2, width=16, depth=4):
        super().__init__()
        widths = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([block(1, widths[0])] + [block(a, b) for a, b in zip(widths, widths[1:])])
        self.up = nn.ModuleList([nn.ConvTranspose2d(b, a, 2, stride=2) for a, b in zip(widths, widths[1:])])
        self.merge = nn.ModuleList([block(2 * a, a) for a in widths[:-1]])
        self.head = nn.Conv2d(widths[0], classes, 1)

    def forward(self, x):
        skips = []
        for i, down in enumerate(self.down):
            x = down(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for up, merge in zip(reversed(self.up), reversed(self.merge)):
            x = merge(torch.cat([up(x), skips.pop()], 1))
        return self.head(x)


def normalise(image):
    low, high = np.percentile(image, [1, 99.8])
    return ((image - low) / max(high - low, 1e-6)).astype(np.float32)


def train(images, targets, seconds, seed=0, crop=256, batch=4, checkpoint=None):
    """``images`` (N, H, W), ``targets`` (N, H, W) class indices. ``checkpoint(model, seconds)`` is
    called at the times in ``checkpoint.at`` with the clock paused."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    images = normalise(images)
    model = PlainUNet(int(targets.max()) + 1)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    clock, pending = 0.0, sorted(getattr(checkpoint, "at", []))
    while clock < seconds:
        start = time.perf_counter()
        n, h, w = images.shape
        size = min(crop, h, w) // 16 * 16
        idx, ys, xs = (
            rng.integers(0, n, batch),
            rng.integers(0, h - size + 1, batch),
            rng.integers(0, w - size + 1, batch),
        )
        x = np.stack([images[i, y : y + size, x0 : x0 + size] for i, y, x0 in zip(idx, ys, xs)])
        t = np.stack([targets[i, y : y + size, x0 : x0 + size] for i, y, x0 in zip(idx, ys, xs)])
        k, flip = rng.integers(0, 4), rng.random() < 0.5
        x, t = np.rot90(x, k, (1, 2)), np.rot90(t, k, (1, 2))
        if flip:
            x, t = x[:, :, ::-1], t[:, :, ::-1]
        model.train()
        loss = F.cross_entropy(model(torch.from_numpy(x.copy())[:, None]), torch.from_numpy(t.copy()).long())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        clock += time.perf_counter() - start
        while pending and clock >= pending[0]:
            checkpoint(model, pending.pop(0))
    return model


@torch.no_grad()
def predict(model, images):
    """Class probabilities (N, K, H, W) of each slice, one padded pass per slice."""
    model.eval()
    out = []
    for image in normalise(images):
        h, w = image.shape
        ph, pw = -h % 16, -w % 16
        x = torch.from_numpy(np.pad(image, ((0, ph), (0, pw)), mode="reflect"))[None, None]
        out.append(torch.softmax(model(x), 1)[0, :, :h, :w].numpy())
    return np.stack(out)
