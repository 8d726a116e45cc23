"""A small live plot of training curves, drawn with QPainter (no plotting library needed).

Top panel: losses on a log scale against training steps; bottom panel: validation Dice (0 to 1).
"""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QFont, QPainter, QPainterPath, QPaintEvent, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

# name → (colour, panel); panel 0 holds losses, panel 1 the validation metric.
SERIES = {
    "training loss": ("#4fc3f7", 0),
    "validation loss": ("#ffb74d", 0),
    "generator loss": ("#ba68c8", 0),
    "discriminator loss": ("#e57373", 0),
    "validation Dice": ("#81c784", 1),
}


class LossPlot(QWidget):
    """Curves that grow as training events arrive; ``series`` holds the points drawn."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.series: dict[str, list[tuple[float, float]]] = {}
        self.setMinimumHeight(190)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setToolTip("Training curves: losses (log scale) above, validation Dice below")

    def clear(self) -> None:
        self.series = {}
        self.update()

    def add_point(self, name: str, step: float, value: float | None) -> None:
        if value is None or not math.isfinite(value) or name not in SERIES:
            return
        self.series.setdefault(name, []).append((float(step), float(value)))
        self.update()

    # ------------------------------------------------------------------ drawing

    def paintEvent(self, event: QPaintEvent | None) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(self.rect(), QColor("#262930"))
        font = QFont(painter.font())
        font.setPointSizeF(max(7.0, font.pointSizeF() - 1))
        painter.setFont(font)
        height = self.height()
        losses = QRectF(44, 8, self.width() - 54, height * 0.58 - 8)
        metric = QRectF(44, height * 0.58 + 16, self.width() - 54, height * 0.42 - 36)
        x_max = max((p[0] for points in self.series.values() for p in points), default=1.0)
        if not self.series:
            painter.setPen(QColor("#9ea3ad"))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "Training curves appear here")
            painter.end()
            return
        self._panel(painter, losses, 0, x_max, log=True)
        self._panel(painter, metric, 1, x_max, log=False)
        self._legend(painter, QRectF(44, height - 18, self.width() - 54, 16))
        painter.end()

    def _panel(self, painter: QPainter, rect: QRectF, panel: int, x_max: float, log: bool) -> None:
        names = [n for n, (_, p) in SERIES.items() if p == panel and n in self.series]
        values = [v for n in names for _, v in self.series[n]]
        painter.setPen(QPen(QColor("#5a5f6a")))
        painter.drawRect(rect)
        if log:
            values = [v for v in values if v > 0]
            if not values:
                return
            low, high = math.log10(min(values)), math.log10(max(values))
            if high - low < 0.3:
                low, high = low - 0.15, high + 0.15
            transform = lambda v: math.log10(max(v, 1e-12))  # noqa: E731
            labels = (f"{10**high:.3g}", f"{10**low:.3g}")
        else:
            low, high, transform = 0.0, 1.0, float
            labels = ("1", "0")
        painter.setPen(QColor("#9ea3ad"))
        painter.drawText(QRectF(0, rect.top() - 2, 42, 14), Qt.AlignmentFlag.AlignRight, labels[0])
        painter.drawText(QRectF(0, rect.bottom() - 12, 42, 14), Qt.AlignmentFlag.AlignRight, labels[1])
        title = "loss" if log else "val. Dice"
        painter.drawText(rect.adjusted(4, 2, 0, 0), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop, title)
        for name in names:
            colour, _ = SERIES[name]
            path = QPainterPath()
            for i, (step, value) in enumerate(self.series[name]):
                if log and value <= 0:
                    continue
                x = rect.left() + rect.width() * step / max(x_max, 1.0)
                y = rect.bottom() - rect.height() * (transform(value) - low) / (high - low)
                point = QPointF(x, min(max(y, rect.top()), rect.bottom()))
                path.moveTo(point) if i == 0 else path.lineTo(point)
            painter.setPen(QPen(QColor(colour), 1.6))
            painter.drawPath(path)
            if len(self.series[name]) == 1:
                painter.drawEllipse(path.currentPosition(), 2.5, 2.5)

    def _legend(self, painter: QPainter, rect: QRectF) -> None:
        x = rect.left()
        for name in self.series:
            colour, _ = SERIES[name]
            painter.setPen(QPen(QColor(colour), 3))
            painter.drawLine(QPointF(x, rect.center().y()), QPointF(x + 12, rect.center().y()))
            painter.setPen(QColor("#d0d3d9"))
            width = painter.fontMetrics().horizontalAdvance(name)
            painter.drawText(QRectF(x + 15, rect.top(), width + 4, rect.height()), Qt.AlignmentFlag.AlignVCenter, name)
            x += width + 28
