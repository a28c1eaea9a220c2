"""A handler that does nothing: answers 0 to every request, no decoding, no model.

`mnist-kit bench` serves it with the same settings as the real model to measure the ceiling of the
serving stack itself (HTTP, queueing, batching, worker IPC), the most any handler could reach.
"""


def handle(data, context):
    return [0] * len(data) if data else None
