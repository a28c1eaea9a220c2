"""`python -m mnist_kit` is `mnist-kit`."""

from mnist_kit.cli import cli

cli(prog_name="mnist-kit")
