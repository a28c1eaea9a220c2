"""mnist-kit: train an MNIST digit classifier and serve it with TorchServe.

Imports nothing: this file travels in the .mar, where a TorchServe worker imports it before mnist_kit.worker.
"""
