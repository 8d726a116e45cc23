"""The widgets' layout: their contents in a scroll area, so stacked docks fit the screen."""

from __future__ import annotations

from qtpy.QtCore import QSize, Qt
from qtpy.QtWidgets import QFrame, QScrollArea, QVBoxLayout, QWidget


class _ScrollArea(QScrollArea):
    """Asks for its contents' width and for at most ``HEIGHT`` pixels of their height (at least
    ``MINIMUM``), so two docks stacked in napari share its height."""

    HEIGHT, MINIMUM = 600, 280

    def _bar(self) -> int:
        bar = self.verticalScrollBar()
        return bar.sizeHint().width() if bar is not None else 0

    def sizeHint(self) -> QSize:
        contents = self.widget()
        hint = contents.sizeHint() if contents is not None else QSize(0, 0)
        return QSize(hint.width() + self._bar(), min(hint.height(), self.HEIGHT))

    def minimumSizeHint(self) -> QSize:
        contents = self.widget()
        width = contents.minimumSizeHint().width() if contents is not None else 0
        return QSize(width + self._bar(), self.MINIMUM)


def scrolling_layout(widget: QWidget) -> QVBoxLayout:
    """A vertical layout for ``widget``'s contents, inside a scroll area that fills it.

    napari stacks dock widgets without scrolling them, so a dock's minimum height is its contents';
    two tall docks would make napari's window taller than a laptop's screen, and any change in their
    contents (an option shown, a longer message) would resize the window and redraw the canvas. In
    a scroll area the contents scroll instead."""
    contents = QWidget()
    scroll = _ScrollArea()
    scroll.setWidget(contents)
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(scroll)
    return QVBoxLayout(contents)
