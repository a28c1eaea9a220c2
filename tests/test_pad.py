"""`mnist-kit pad`, the PyQt5 window, under Qt's offscreen platform: strokes drawn with mouse events."""

import os
import time

import numpy as np
import pytest
from click.testing import CliRunner
from handwriting import Written, collection, every_shape
from PIL import Image
from PyQt5.QtCore import QEvent, QPointF, Qt
from PyQt5.QtGui import QMouseEvent
from PyQt5.QtTest import QTest
from PyQt5.QtWidgets import QApplication

from mnist_kit import constants as C
from mnist_kit.cli import cli
from mnist_kit.feedback.store import Store
from mnist_kit.serving.processes import free_port
from mnist_kit.ui.desktop import PadWindow
from mnist_kit.ui.pad_client import Reader


@pytest.fixture(scope="module")
def app():
    """Qt's offscreen platform unless told otherwise: no display needed."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    return QApplication.instance() or QApplication([])


@pytest.fixture
def window(app):
    windows = []

    def open_(url, management_url=""):
        window = PadWindow(Reader(url, C.MODEL_NAME, management_url or url))
        window.show()
        QTest.qWaitForWindowExposed(window)
        window.activateWindow()
        QTest.qWaitForWindowActive(window)
        windows.append(window)
        return window

    yield open_
    for window in windows:
        window.close()


def mouse(canvas, kind, x: float, y: float, button=Qt.LeftButton) -> None:
    buttons = Qt.NoButton if kind == QEvent.MouseButtonRelease else Qt.LeftButton
    event = QMouseEvent(
        kind, QPointF(x, y), button if kind != QEvent.MouseMove else Qt.NoButton, buttons, Qt.NoModifier
    )
    QApplication.sendEvent(canvas, event)


def draw(window, written: Written) -> None:
    """Press, move along each stroke and release: the mouse events Qt sends the pad for a mouse, pen or finger."""
    window.brush.setValue(round(written.brush))
    for stroke in written.strokes:
        mouse(window.canvas, QEvent.MouseButtonPress, *stroke[0])
        for x, y in stroke[1:]:
            mouse(window.canvas, QEvent.MouseMove, x, y)
        mouse(window.canvas, QEvent.MouseButtonRelease, *stroke[-1])


def shown_digit(window, timeout: float = 30) -> str:
    """The digit the window shows once it has answered for the drawing as it is now (or said why not)."""
    deadline = time.monotonic() + timeout
    while window.answered_revision != window.canvas.revision:
        assert time.monotonic() < deadline, "no answer from the pad"
        QTest.qWait(20)
    return window.digit.text()


def test_esc_clears_and_ctrl_z_undoes(window):
    nowhere = f"http://{C.HOST}:{free_port()}"
    pad = window(nowhere)
    seven = next(w for w in every_shape() if w.label == 7 and len(w.strokes) == 2)
    draw(pad, seven)
    assert shown_digit(pad) == ""
    assert pad.message.text().startswith(f"No server is running at {nowhere}")
    QTest.keyClick(pad, Qt.Key_Z, Qt.ControlModifier)
    assert len(pad.canvas.drawing.strokes) == 1
    QTest.keyClick(pad, Qt.Key_Escape)
    assert pad.canvas.drawing.empty
    assert shown_digit(pad) == ""
    assert pad.message.text() == "Draw a digit on the pad."


def test_the_pad_reads_a_digit_of_each_kind_drawn_with_the_mouse(window, trained_server):
    pad = window(trained_server.inference_url, trained_server.management_url)
    firsts = {}
    for written in every_shape():
        firsts.setdefault(written.label, written)
    read = {}
    for digit, written in firsts.items():
        QTest.keyClick(pad, Qt.Key_Escape)
        draw(pad, written)
        read[digit] = shown_digit(pad)
    assert read == {d: str(d) for d in range(10)}
    assert pad.answered.text().startswith(f"Answered by the server at {trained_server.inference_url}")
    assert pad.seen.pixmap() is not None and not pad.seen.pixmap().isNull()


def test_the_readme_screenshot_is_a_digit_drawn_on_the_pad(window, trained_server, artifacts):
    pad = window(trained_server.inference_url, trained_server.management_url)
    five = next(w for w in collection() if w.label == 5 and w.writer.startswith("European"))
    draw(pad, five)
    assert shown_digit(pad) == "5"
    assert pad.grab().save(str(artifacts / "pad.png"))
    picture = Image.open(artifacts / "pad.png")
    assert picture.size == (pad.width(), pad.height()) and len(np.unique(np.asarray(picture.convert("L")))) > 2


def test_without_a_display_the_pad_says_so_in_one_line(monkeypatch):
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(cli, ["pad", "--url", f"http://{C.HOST}:{free_port()}"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: no display to open the pad on (DISPLAY is not set)")


def test_a_wrong_answer_is_corrected_with_a_key_and_stored_with_the_png_sent(app, server, tmp_path):
    store = Store(tmp_path / C.FEEDBACK_DB)
    pad = PadWindow(Reader(server.inference_url, C.MODEL_NAME, server.management_url), feedback=store)
    pad.show()
    QTest.qWaitForWindowExposed(pad)
    try:
        assert not pad.labels[0].isEnabled()  # nothing answered yet: nothing to correct
        seven = next(w for w in every_shape() if w.label == 7)
        draw(pad, seven)
        shown = shown_digit(pad)
        QTest.keyClick(pad, Qt.Key_2)
        assert pad.corrected.text().startswith("Stored as a 2")
    finally:
        pad.close()
    [correction] = store.corrections()
    assert correction.label == 2 and str(correction.answered) == shown
    assert correction.image == pad.canvas.drawing.png() and correction.model_version == C.MODEL_VERSION
