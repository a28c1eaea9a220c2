"""`python -m mnist_kit.bench`: the preprocessing cost per image type alone, in a second rather than a whole bench."""

from mnist_kit.bench.report import print_preprocess_costs

print_preprocess_costs()
