"""Train the classifier: `python train.py` is `mnist-kit train`, with the same options (see --help).

A script of the repo, not part of the installed package; the training itself is mnist_kit.training.fit.
"""

from mnist_kit.cli.training import train

if __name__ == "__main__":
    train(prog_name="python train.py")
