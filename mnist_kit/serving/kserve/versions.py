"""The versions one kserve runtime serves, as TorchServe serves a model's versions side by side: archives of one model
name, the first listed the default (what `/predictions/NAME` answers), each version by its own path
(`/predictions/NAME/VERSION`, v2 `versions/VERSION/infer`); and which of them, if any, shadows the default.

Read outside the server too (`mnist-kit serve` checks the archives before it starts one): nothing here imports the
serving core.
"""

from dataclasses import dataclass

from mnist_kit.errors import KitError
from mnist_kit.packaging import mar


class VersionsError(KitError):
    """Archives that cannot be served together, or a shadow that is not one of them."""


def read(archives) -> list[mar.Mar]:
    """The archives, read; refused unless they are one model's distinct versions."""
    read_ = [mar.read(path) for path in archives]
    if not read_:
        raise VersionsError("no archive to serve: give --archive (repeatable)")
    names = sorted({a.model_name for a in read_})
    if len(names) > 1:
        listed = ", ".join(f"{a.path.name} ({a.model_name})" for a in read_)
        raise VersionsError(
            f"the archives serve different models ({listed}): the kserve runtime serves the versions of one model; "
            "start a server per model"
        )
    versions = [a.version for a in read_]
    repeated = sorted({v for v in versions if versions.count(v) > 1})
    if repeated:
        raise VersionsError(f"version {', '.join(repeated)} of {names[0]} is given twice: each archive a version")
    return read_


def check_shadow(archives: list[mar.Mar], shadow: str | None, share: float) -> None:
    """A shadow must be a served version other than the default, and its share of requests in (0, 1]."""
    if shadow is None:
        return
    versions = [a.version for a in archives]
    if shadow not in versions[1:]:
        which = "is the default version: it answers" if shadow == versions[0] else "is not among the archives"
        raise VersionsError(
            f"--shadow {shadow} {which}; the shadow is another version served beside the default "
            f"(served: {', '.join(versions)}, the default {versions[0]})"
        )
    if not 0 < share <= 1:
        raise VersionsError(f"--shadow-share must be in (0, 1], not {share:g}")


@dataclass
class Version:
    """One version as a worker serves it: its archive, its serving core and the micro-batcher over that core."""

    archive: mar.Mar
    core: object
    batcher: object

    @property
    def version(self) -> str:
        return self.archive.version
