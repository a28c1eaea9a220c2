"""What runs inside a TorchServe worker, packed into the .mar beside mnist_handler.py.

Its modules import only the standard library, torch (for the eager forms and explanations only), onnxruntime, PIL,
numpy, ts and mnist_kit.constants, so the archive works in a worker whose Python has no mnist-kit installed. Imports
nothing itself.
"""
