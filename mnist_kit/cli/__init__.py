"""The `mnist-kit` command line, by phase: each module registers its commands on the group of cli.main, the only
code that knows Click. Every command is a thin call into the library (mnist_kit.training, evaluation, packaging,
serving, bench, deploy, feedback, ui)."""

from mnist_kit.cli import archiving, bench, canary, deploy, feedback, pads, querying, serving, shadow, training  # noqa: F401  (they register)
from mnist_kit.cli.main import cli

__all__ = ["cli"]
