"""`mnist-kit pad`: the drawing pad as a PyQt5 window, the one the tutorial this kit grew from promised.

Thin over the library: strokes, undo and the PNG sent are mnist_kit.ui.drawing's; the request, the 28×28 the model
saw and the messages are mnist_kit.ui.pad_client's, as in `mnist-kit ui`. Requests run on a worker thread, so drawing
never waits for TorchServe; an answer for a drawing that has changed since is dropped.
"""

import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from mnist_kit import constants as C
from mnist_kit.errors import KitError
from mnist_kit.feedback.store import Store
from mnist_kit.serving import client
from mnist_kit.ui.drawing import Drawing
from mnist_kit.ui.pad_client import Reader, Reading, shown, verdict

try:
    from PyQt5.QtCore import QObject, Qt, QTimer, pyqtSignal
    from PyQt5.QtGui import QFont, QImage, QKeySequence, QPainter, QPixmap
    from PyQt5.QtWidgets import (
        QApplication,
        QGridLayout,
        QHBoxLayout,
        QLabel,
        QProgressBar,
        QPushButton,
        QShortcut,
        QSlider,
        QVBoxLayout,
        QWidget,
    )
except ImportError:
    raise KitError('mnist-kit pad needs PyQt5: pip install -e ".[desktop]" (scripts/setup.sh installs it)') from None

SEEN_SCALE = 5  # the 28×28 shown 140 pixels a side


def gray_image(pixels: np.ndarray) -> QImage:
    """uint8 H×W → a QImage that owns a copy of the pixels."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    height, width = pixels.shape
    return QImage(pixels.data, width, height, width, QImage.Format_Grayscale8).copy()


class Canvas(QWidget):
    """The square pad: mouse, pen or touch strokes (Qt turns both into mouse events) into a Drawing."""

    changed = pyqtSignal(bool)  # True while the pen moves, False when a stroke ends or the drawing is undone

    def __init__(self, drawing: Drawing):
        super().__init__()
        self.drawing = drawing
        self.brush = C.BRUSH_WIDTH
        self.revision = 0
        self.setFixedSize(drawing.size, drawing.size)
        self.setCursor(Qt.CrossCursor)

    def mousePressEvent(self, event):
        if event.button() == Qt.LeftButton:
            self.drawing.begin(event.localPos().x(), event.localPos().y(), self.brush)
            self._changed(True)

    def mouseMoveEvent(self, event):
        if event.buttons() & Qt.LeftButton and not self.drawing.empty:
            self.drawing.extend(event.localPos().x(), event.localPos().y())
            self._changed(True)

    def mouseReleaseEvent(self, event):
        if event.button() == Qt.LeftButton:
            self._changed(False)

    def undo(self):
        self.drawing.undo()
        self._changed(False)

    def clear(self):
        self.drawing.clear()
        self._changed(False)

    def _changed(self, moving: bool):
        self.revision += 1
        self.update()
        self.changed.emit(moving)

    def paintEvent(self, event):
        painter = QPainter(self)
        painter.drawImage(0, 0, gray_image(np.asarray(self.drawing.image())))
        painter.setPen(Qt.darkGray)
        painter.drawRect(0, 0, self.width() - 1, self.height() - 1)


class Answers(QObject):
    """Carries answers from the request thread to the window's thread (a queued signal)."""

    arrived = pyqtSignal(int, object)


class PadWindow(QWidget):
    def __init__(self, reader: Reader, *, feedback: Store | None = None):
        super().__init__()
        self.reader = reader
        self.feedback = feedback or Store()
        self.sent: dict[int, bytes] = {}  # revision → the PNG sent for it
        self.last = None  # (PNG, Reading) of the answer shown: what a correction refers to
        self.setWindowTitle("mnist-kit pad: draw a digit")
        self.canvas = Canvas(Drawing())
        self.answered_revision = 0
        self.requests = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mnist-pad")
        self.answers = Answers()
        self.answers.arrived.connect(self.show_answer)
        self.timer = QTimer(self, singleShot=True, interval=C.PREDICT_DEBOUNCE_MS, timeout=self.predict)
        self.canvas.changed.connect(self.on_change)
        left, right = self._drawing_side(), self._answer_side()
        layout = QHBoxLayout(self)
        layout.addLayout(left)
        layout.addLayout(right)

    def _drawing_side(self) -> QVBoxLayout:
        """The pad, and under it the brush, undo and clear."""
        self.brush = brush = QSlider(
            Qt.Horizontal, minimum=C.BRUSH_WIDTHS[0], maximum=C.BRUSH_WIDTHS[1], value=C.BRUSH_WIDTH
        )
        brush.setMinimumWidth(90)
        brush.valueChanged.connect(lambda value: setattr(self.canvas, "brush", value))
        undo, clear = QPushButton("Undo (Ctrl+Z)"), QPushButton("Clear (Esc)")
        undo.clicked.connect(self.canvas.undo)
        clear.clicked.connect(self.canvas.clear)
        QShortcut(QKeySequence.Undo, self, self.canvas.undo)
        QShortcut(QKeySequence(Qt.Key_Escape), self, self.canvas.clear)
        tools = QHBoxLayout()
        tools.addWidget(QLabel("Brush"))
        tools.addWidget(brush)
        tools.addWidget(undo)
        tools.addWidget(clear)
        left = QVBoxLayout()
        left.addWidget(self.canvas)
        left.addLayout(tools)
        left.addStretch()
        return left

    def _answer_side(self) -> QVBoxLayout:
        """The answer: the digit, its confidence, the bars, what the model saw, and the buttons to correct it."""
        self.digit = QLabel("", font=QFont("Sans", 48, QFont.Bold), minimumWidth=60)
        self.confidence = QLabel("")
        self.message = QLabel("Draw a digit on the pad.", wordWrap=True, minimumWidth=280)
        self.bars = []
        grid = QGridLayout()
        for d in range(C.NUM_CLASSES):
            bar = QProgressBar(maximum=1000, textVisible=True, format="", maximumHeight=16)
            grid.addWidget(QLabel(str(d)), d, 0)
            grid.addWidget(bar, d, 1)
            self.bars.append(bar)
        grid.setColumnStretch(1, 1)
        self.seen = QLabel()
        self.seen.setFixedSize(C.IMAGE_SIZE * SEEN_SCALE, C.IMAGE_SIZE * SEEN_SCALE)
        self.seen.setStyleSheet("background: black")
        self.answered = QLabel("", wordWrap=True, minimumWidth=280)
        correct = self._correction_buttons()
        self.corrected = QLabel("", wordWrap=True, minimumWidth=280)
        reading = QHBoxLayout()
        reading.addWidget(self.digit)
        reading.addWidget(self.confidence)
        reading.addStretch()
        right = QVBoxLayout()
        right.addLayout(reading)
        right.addWidget(self.message)
        right.addLayout(grid)
        right.addWidget(QLabel("What the model saw (28×28, the kit's preprocessing):"))
        right.addWidget(self.seen)
        right.addWidget(self.answered)
        right.addLayout(correct)
        right.addWidget(self.corrected)
        right.addStretch()
        return right

    def _correction_buttons(self) -> QHBoxLayout:
        """A button per digit (and its key) that stores the drawing as that digit: disabled until an answer."""
        correct = QHBoxLayout()
        correct.addWidget(QLabel("Wrong? It is a"))
        self.labels = []
        for d in range(C.NUM_CLASSES):
            button = QPushButton(str(d), maximumWidth=32, enabled=False)
            button.setToolTip(f"Store this drawing as a {d}, for retraining (key {d})")
            button.clicked.connect(lambda checked, d=d: self.correct(d))
            QShortcut(QKeySequence(str(d)), self, lambda d=d: self.correct(d))
            correct.addWidget(button)
            self.labels.append(button)
        return correct

    def on_change(self, moving: bool):
        """Ask while the pen rests, and at once when a stroke ends; an empty pad asks nothing."""
        self.timer.stop()
        if self.canvas.drawing.empty:
            self.show_nothing()
        elif moving:
            self.timer.start()
        else:
            self.predict()

    def predict(self):
        revision, data = self.canvas.revision, self.canvas.drawing.png()
        self.sent = {revision: data}
        self.requests.submit(self._ask, revision, data)

    def _ask(self, revision: int, data: bytes):
        if revision != self.canvas.revision:
            return  # drawn on since: a newer request is queued
        try:
            answer = self.reader.read(data)
        except client.ClientError as e:
            answer = self.reader.failure(e)[1]
        except Exception as e:  # the window must say so, not hang
            answer = f"{type(e).__name__}: {e}"
        self.answers.arrived.emit(revision, answer)

    def show_answer(self, revision: int, answer):
        if revision != self.canvas.revision:
            return
        if isinstance(answer, Reading):
            self.digit.setText(shown(answer))
            self.confidence.setText(f"{100 * answer.confidence:.1f} % sure")
            self.message.setText(verdict(answer))
            self.message.setStyleSheet("color: #a35200" if answer.flags else "")
            self.set_bars(answer.probabilities)
            self.set_seen(answer.pixels)
            version = f"version {answer.version}" if answer.version else "version unknown"
            self.answered.setText(
                f"Answered by the server at {answer.server}, model {answer.model} {version}, in {answer.ms:.0f} ms."
            )
            self.set_correctable((self.sent[revision], answer))
        else:
            self.show_nothing(answer, error=True)
        self.answered_revision = revision

    def set_correctable(self, last) -> None:
        self.last = last
        self.corrected.setText("")
        for button in self.labels:
            button.setEnabled(last is not None)

    def correct(self, label: int) -> None:
        """Store the PNG that was sent, its label and the answer it got, in the kit's feedback database."""
        if self.last is None:
            return
        data, answer = self.last
        record = {"digit": answer.digit, "confidence": answer.confidence, "version": answer.version}
        try:
            self.feedback.add(data, label, {**record, "serving_form": self.reader.serving_form()})
            self.corrected.setText(f"Stored as a {label}, thank you: mnist-kit train --feedback learns from it.")
        except KitError as e:
            self.corrected.setText(f"Not stored: {e}")

    def show_nothing(self, message: str = "Draw a digit on the pad.", error: bool = False):
        self.set_correctable(None)
        self.digit.setText("")
        self.confidence.setText("")
        self.answered.setText("")
        self.message.setText(message)
        self.message.setStyleSheet("color: #b3261e; font-weight: bold" if error else "")
        self.set_bars(None)
        self.set_seen(None)
        self.answered_revision = self.canvas.revision

    def set_bars(self, probabilities):
        for d, bar in enumerate(self.bars):
            p = probabilities[d] if probabilities else 0.0
            bar.setValue(round(1000 * p))
            bar.setFormat(f"{100 * p:.1f} %" if probabilities else "")

    def set_seen(self, pixels):
        if pixels is None:
            self.seen.clear()
            return
        image = gray_image(np.array(pixels, dtype=np.uint8))
        self.seen.setPixmap(QPixmap.fromImage(image).scaled(self.seen.width(), self.seen.height()))

    def closeEvent(self, event):
        self.requests.shutdown(wait=False, cancel_futures=True)
        super().closeEvent(event)


def run(reader: Reader) -> None:
    """Open the window and run until it is closed."""
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.environ.get("QT_QPA_PLATFORM")
    ):
        raise KitError(
            "no display to open the pad on (DISPLAY is not set): run it in a desktop session, "
            "or use `mnist-kit ui` and a browser"
        )
    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = PadWindow(reader)
    window.show()
    app.exec_()
