"""One reading of a picture by the served model, as the drawing pads show it: the answer, the 28×28 the model
saw, who answered and how long it took. Shared by `mnist-kit ui` (its server) and `mnist-kit pad`.

The 28×28 is made here, in this process, by the kit's own preprocessing (mnist_kit.worker.preprocess, the code
the archive's handler runs) on the very bytes sent to TorchServe; the handler's answer does not carry it.
"""

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from mnist_kit import constants as C
from mnist_kit.serving import client
from mnist_kit.worker import preprocess
from mnist_kit.worker.request_errors import InputError


@dataclass
class Reading:
    digit: int
    confidence: float
    probabilities: list[float]
    pixels: list[list[int]] | None  # what the model saw; None where this process's preprocessing refused the image
    server: str
    model: str
    version: str | None  # as the management API reports the default version; None when it cannot be asked
    ms: float  # round trip to TorchServe, from this process
    low_confidence: bool
    flags: list[str]  # as the handler answered them (mnist_kit.worker.answers)
    digits: list[int] | None  # several digits, each read confidently, left to right

    def to_dict(self) -> dict:
        return asdict(self)


class Reader:
    """Asks one TorchServe. Tokens come from callables, read at each request: TorchServe writes new keys
    whenever it restarts, and they stay in this process (the web page never sees one)."""

    def __init__(
        self,
        url: str = C.INFERENCE_URL,
        model: str = C.MODEL_NAME,
        management_url: str = C.MANAGEMENT_URL,
        *,
        token: Callable[[], str | None] = lambda: None,
        management_token: Callable[[], str | None] = lambda: None,
    ):
        self.url, self.model, self.management_url = url.rstrip("/"), model, management_url.rstrip("/")
        self.token, self.management_token = token, management_token

    def read(self, data: bytes) -> Reading:
        """Predict `data` (any image the handler takes); ClientError says why not, with TorchServe's own message."""
        start = time.perf_counter()
        # Two quick retries: a replica going away or a worker restarting is a blink, not an error to show.
        answer = client.predict(data, url=self.url, model=self.model, token=self.token(), retries=2)
        ms = (time.perf_counter() - start) * 1000
        return Reading(
            digit=answer["digit"],
            confidence=answer["confidence"],
            probabilities=answer["probabilities"],
            pixels=seen(data),
            server=self.url,
            model=self.model.split("/")[0],
            version=self.version(),
            ms=round(ms, 1),
            low_confidence=answer["confidence"] < C.LOW_CONFIDENCE,
            flags=answer.get("flags", []),
            digits=answer.get("digits"),
        )

    def explain(self, data: bytes) -> dict:
        """Integrated Gradients from /explanations: {"digit", "pixels", "attributions"} (28×28 each)."""
        return client.explain(data, url=self.url, model=self.model, token=self.token())

    def version(self) -> str | None:
        """The version that answers /predictions/MODEL: the one named in MODEL (NAME/VERSION), else the default as
        the management API says."""
        name, _, version = self.model.partition("/")
        if version:
            return version

        def default(base: str) -> str:
            described = json.loads(client.request(f"{base}/models/{name}", token=self.management_token(), timeout=2))
            return described[0]["modelVersion"]

        return self._ask(default)

    def serving_form(self) -> str | None:
        """The serving form the default version's workers chose, as its handler describes it (for a correction's
        record); None when it cannot be asked."""
        name = self.model.partition("/")[0]
        return self._ask(
            lambda base: client.described(base, name, self.management_token(), timeout=2)[1]["serving_form"]
        )

    def _ask(self, question):
        """`question(base_url)` of TorchServe's management API, else of the inference port's read-only copy of it
        (the kserve runtime's); None when neither can answer."""
        for base in (self.management_url, self.url):
            try:
                return question(base)
            except (client.ClientError, ValueError, LookupError, TypeError):
                continue
        return None

    def failure(self, error: client.ClientError) -> tuple[int, str]:
        """The HTTP status and the plain message a pad shows for a request TorchServe did not answer."""
        if error.status is None and not str(error).startswith("cannot reach"):
            return 500, str(error)  # ours, not the connection's: an unreadable key file
        if error.status is None:
            return 502, (
                f"No server is running at {self.url} (cannot connect). Start it with `mnist-kit serve`, "
                "or point the pad at another server with --url."
            )
        if error.status == 404:
            return 404, (
                f"The server at {self.url} has no model {self.model!r} loaded ({error.detail}). Archive it and "
                "serve it (`mnist-kit archive`, then `mnist-kit serve`), or pass --model."
            )
        if error.status in (401, 403):
            return error.status, str(error)
        if 400 <= error.status < 500:
            return error.status, error.detail  # the handler's own words: "blank image: no digit found", ...
        return error.status, f"The server answered {error.status}: {error.detail}"

    def status(self) -> dict:
        """Whether TorchServe answers, and which model and version the page will be talking to."""
        try:
            health = client.ping(self.url, token=self.token()).get("status", "?")
        except client.ClientError as e:
            return {"server": self.url, "model": self.model, "version": None, "running": False, "message": str(e)}
        return {"server": self.url, "model": self.model, "version": self.version(), "running": True, "health": health}


def seen(data: bytes) -> list[list[int]] | None:
    """The 28×28 the handler makes of `data`, made here by the same code; None where it refuses the image."""
    try:
        return preprocess.read_image(data).pixels.tolist()
    except InputError:
        return None


# The flags of an answer (mnist_kit.worker.answers) as `mnist-kit predict` and the pads say them.
FLAG_WORDS = {"several_digits": "several digits", "not_a_digit": "not a digit", "low_confidence": "low confidence"}


def flag_words(flags: list[str], digits: list[int] | None = None) -> str:
    """ "several digits (3 8), low confidence": an answer's flags in words, the digits read where there are several."""
    words = []
    for flag in flags:
        word = FLAG_WORDS.get(flag, flag)
        if flag == "several_digits" and digits:
            word += f" ({' '.join(map(str, digits))})"
        words.append(word)
    return ", ".join(words)


def shown(reading: Reading) -> str:
    """The big character a pad shows: the digit, or "?" for a picture that is not a digit."""
    return "?" if "not_a_digit" in reading.flags else str(reading.digit)


def verdict(reading: Reading, name: str | None = None) -> str:
    """The line under the digit: what was read, and what the answer's flags say about it, in words."""
    percent = f"{100 * reading.confidence:.1f} %"
    if "not_a_digit" in reading.flags:
        return (
            f"This does not look like a digit: the model spreads its answer over all ten (at most {percent}, for "
            f"{reading.digit}). Draw or drop one digit, 0 to 9."
        )
    if "several_digits" in reading.flags:
        read = f"read as {' '.join(map(str, reading.digits))}; " if reading.digits else ""
        return (
            f"Several digits side by side: {read}the answer names the one with the most ink, {reading.digit}. "
            "The model reads one digit at a time."
        )
    if reading.low_confidence:
        return (
            f"Not sure: only {percent} for {reading.digit}, below the {100 * C.LOW_CONFIDENCE:.0f} % the kit counts "
            "as confident. Try drawing it larger, or more like a printed digit."
        )
    return f"Read {name} as {reading.digit}." if name else f"Read as {reading.digit}."
