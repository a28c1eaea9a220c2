"""TorchServe's adapter over the kit's serving core (mnist_kit/worker/core.py, packed beside this file).

BaseHandler.handle runs the stages (and times them as HandlerTime): preprocess decodes each request, inference
runs one batched forward pass, postprocess encodes an answer per request; describe and explain through
BaseHandler's own switches. What is TorchServe's alone lives here: its context in, statuses and metrics out, and
its request envelopes made a pass-through, since the core reads KServe v1 and v2 bodies itself.
"""

import json

import torch
from ts.metrics.dimension import Dimension
from ts.metrics.metric_type_enum import MetricTypes
from ts.torch_handler.base_handler import BaseHandler
from ts.torch_handler.request_envelope.base import BaseEnvelope

from mnist_kit.worker.core import Core


class MnistHandler(BaseHandler):
    def initialize(self, context):
        self.context, self.manifest = context, context.manifest
        gpu = context.system_properties.get("gpu_id")
        device = f"cuda:{gpu}" if torch.cuda.is_available() and gpu is not None else "cpu"
        self.core = Core(
            context.system_properties["model_dir"],
            self.manifest["model"],
            serving_form=(context.model_yaml_config.get("handler") or {}).get("serving_form"),
            device=device,
            publish=lambda totals: publish(context.metrics, totals),
        )
        self.initialized = True

    def preprocess(self, data):
        return self.core.decode(data, [self.context.get_all_request_header(i) for i in range(len(data))])

    def inference(self, batch):
        return self.core.infer(batch)

    def postprocess(self, batch):
        return self._write(self.core.encode(batch))

    def explain_handle(self, batch, raw_data):
        return self._write(self.core.explain(batch))

    def describe_handle(self):
        return json.dumps(self.core.describe())

    def _write(self, replies) -> list:
        """Each Reply's status (when not 200) and content type into TorchServe's context, and its body out."""
        for i, reply in enumerate(replies):
            if reply.status != 200:
                self.context.set_response_status(reply.status, reply.error_type, i)
            self.context.set_response_content_type(i, "application/json")
        return [reply.body for reply in replies]


def publish(metrics, totals) -> None:
    """The core's metric totals (metrics.Metric) into TorchServe's metrics cache."""
    for m in totals:
        dimensions = [Dimension(name, value) for name, value in m.dimensions.items()]
        if m.kind == "counter":
            metrics.add_counter(m.name, m.value, dimensions=dimensions)
        elif m.kind == "time":
            metrics.add_time(m.name, m.value)
        else:
            metrics.add_metric(m.name, m.value, "count", dimensions=dimensions, metric_type=MetricTypes.GAUGE)


def _pass_through(self, data, context):
    self.context = context
    return self._handle_fn(data, context)


# Whatever envelope TorchServe wraps this handler in (service_envelope, or $TS_SERVICE_ENVELOPE with
# enable_envvars_config, as KServe's sample configs set) hands the requests through unchanged: the kserve and
# kservev2 envelopes keep only the first request of a batch, and the core reads both protocols itself.
BaseEnvelope.handle = _pass_through
