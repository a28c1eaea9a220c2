"""The `kserve` runtime's process: `python -m mnist_kit.serving.kserve.server --archive model_store/mnist.mar`.

KServe's ModelServer (REST on uvicorn, gRPC v2, /metrics, health) with the kit's model (model.py), put
together here rather than by ModelServer.start for three reasons: its addresses are the kit's (loopback unless told
otherwise, where 0.21 binds every interface), each worker loads the archive itself (ModelServer's own workers pickle
the model, and an ONNX Runtime session does not pickle), and a stop loses nothing:

- SIGTERM (the kubelet's, `mnist-kit stop`'s): first --drain-seconds of drain, everything still answered but the
  readiness checks (/ping, /v2/health/ready) 503, so that a proxy or an endpoint controller stops sending here;
  then the REST server stops accepting and answers what it has received (uvicorn's graceful shutdown, up to
  --grace-period seconds), then gRPC stops with the same grace. A second signal skips what is left of the drain.
- SIGUSR1 (as HAProxy's soft stop): readiness 503 from now on, nothing else; `mnist-kit stop --drain` sends it,
  waits, then SIGTERM.

With --workers N the process starts N workers, each a whole server on the same ports (SO_REUSEPORT: the kernel
spreads connections over them), and a spare, loaded and waiting to take the place of one that dies (--no-spare: a
worker's memory saved, a new worker started instead, seconds later); it hands a stop signal on to them
(supervision.py), and it
gives them a folder for their Prometheus figures ($PROMETHEUS_MULTIPROC_DIR), so that /metrics adds up all of them,
and removes it at the end.

Several --archive (one model's versions, the first the default) are served side by side, each version by its own
path; --shadow VERSION has that version read the default's pictures in process (shadow.py). Which version is the
default, and the candidate's role (shadow or canary), change live through the management API (routing.py): with
several workers, each follows the routing file in the runtime's folder.
"""

import argparse
import asyncio
import gc
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from pathlib import Path

import uvicorn  # the kserve extra's, as everything this module runs
import uvloop

from mnist_kit import constants as C
from mnist_kit import files
from mnist_kit.errors import KitError
from mnist_kit.serving.kserve import auth as kserve_auth
from mnist_kit.serving.kserve import routing, supervision, versions


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mnist_kit.serving.kserve.server", description=__doc__)
    parser.add_argument(
        "--archive",
        required=True,
        action="append",
        help="A .mar to serve (the one TorchServe serves); repeated, one model's versions, the first the default.",
    )
    parser.add_argument("--host", default=C.HOST, help="Address of both servers (default: loopback).")
    parser.add_argument("--http-port", type=int, default=C.INFERENCE_PORT)
    parser.add_argument("--grpc-port", type=int, default=C.KSERVE_GRPC_PORT)
    parser.add_argument("--workers", type=int, default=1, help="Worker processes, each one intra-op thread.")
    parser.add_argument("--serving-form", default=None, help="Serve this form whatever the timings.")
    parser.add_argument(
        "--grace-period", type=int, default=C.KSERVE_GRACE_S, help="Seconds a stop waits for requests received."
    )
    parser.add_argument(
        "--drain-seconds",
        type=float,
        default=float(os.environ.get(C.DRAIN_ENV) or 0),
        help=f"Seconds of readiness 503 and service as usual after SIGTERM (default: ${C.DRAIN_ENV}, else 0).",
    )
    parser.add_argument(
        "--token-auth",
        action="store_true",
        help=f"Every request but health checks needs 'Authorization: Bearer KEY': ${C.TOKEN_ENV}, else a new key "
        "written to --key-file.",
    )
    parser.add_argument("--key-file", default=C.KEY_FILE, help="Where a new key is written (TorchServe's layout).")
    parser.add_argument(
        "--shadow", default=None, metavar="VERSION", help="A version that reads the default's pictures."
    )
    parser.add_argument(
        "--shadow-share", type=float, default=1.0, metavar="F", help="The share of requests it reads, in (0, 1]."
    )
    parser.add_argument(
        "--shadow-store", default=None, metavar="PATH", help="Its disagreements' file (default: the kit's shadow.db)."
    )
    parser.add_argument(
        "--no-spare",
        dest="spare",
        action="store_false",
        help="With --workers N, no spare worker waiting to replace one that dies (one worker's memory saved).",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--as-spare", action="store_true", help=argparse.SUPPRESS)  # the supervisor's, to its spare
    parser.add_argument("--routing-file", default=None, help=argparse.SUPPRESS)  # the supervisor's, to its workers
    args = parser.parse_args(argv)
    if args.shadow is None and args.shadow_share != 1.0:
        parser.error("--shadow-share is the share a --shadow version reads: give --shadow too")
    try:
        versions.check_shadow(versions.read(args.archive), args.shadow, args.shadow_share)
    except KitError as e:  # not an archive, or archives that cannot be served together
        parser.error(str(e))
    return args


def main(argv=None) -> int:
    args = parse(argv)
    early = threading.Event()  # SIGUSR1 while still loading: drain from the start (its default would kill us)
    signal.signal(signal.SIGUSR1, lambda signum, frame: early.set())
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stopped_while_starting)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, supervision.STOPS)  # a worker starts with them blocked: handled now
    if args.token_auth:  # one key for every worker: they inherit it
        os.environ[C.TOKEN_ENV] = kserve_auth.key(args.key_file)
    if args.workers > 1 and not args.worker:
        return supervise(args, sys.argv[1:] if argv is None else list(argv))
    serve(args, drain_requested=early)
    return 0


def stopped_while_starting(signum, frame):
    """A stop before this worker serves: it has nothing to answer, so it ends at once, and cleanly (a worker still
    loading when the first one made the server ready is stopped like the others)."""
    raise SystemExit(0)


def supervise(args: argparse.Namespace, argv: list[str]) -> int:
    """N workers and the runtime's folder, theirs: their Prometheus figures and the routing they all follow, seeded
    from --shadow (routing.py); the supervisor (supervision.py) restarts a worker that dies and hands a stop signal on
    to each of them, and this ends when they have."""
    folder = Path(tempfile.mkdtemp(prefix="mnist-kit-runtime-"))
    try:
        figures, routing_file = folder / "metrics", folder / C.ROUTING_FILE
        figures.mkdir()
        default = versions.read(args.archive)[0].version
        files.write_json(routing.seed_routing(default, args.shadow, args.shadow_share).as_dict(), routing_file)
        command = [sys.executable, "-m", "mnist_kit.serving.kserve.server", *argv]
        command += ["--routing-file", str(routing_file), "--worker"]
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(figures)}
        spare = [*command, "--as-spare"] if args.spare else None
        return supervision.Supervisor(command, args.workers, env=env, spare=spare).run()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def listening_socket(host: str, port: int) -> socket.socket:
    """A listening socket that other workers of this server may bind too (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    # Inherited by every accepted connection: an answer goes out at once, not after the client's delayed ACK
    # (40 ms a request on Linux: uvicorn writes headers and body apart).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(args: argparse.Namespace, *, drain_requested: threading.Event) -> None:
    """One worker: load the archive, then bind (a worker takes connections only once it can answer them)."""
    sys.argv = sys.argv[:1]  # kserve.model_server parses the command line when imported: give it none of ours
    from kserve import ModelServer
    from kserve.protocol.rest.server import RESTServer

    from mnist_kit.serving.kserve.hot_path import HotPath
    from mnist_kit.serving.kserve.model import MnistModel
    from mnist_kit.serving.kserve.routes import add_management_routes, add_routes

    model = MnistModel(
        args.archive,
        serving_form=args.serving_form,
        shadow=args.shadow,
        shadow_share=args.shadow_share,
        shadow_store=args.shadow_store,
        routing_file=args.routing_file,
    )
    model.load()
    server = ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, workers=1, grace_period=args.grace_period)
    server.register_model(model)
    from kserve.model_server import app

    add_routes(app, model)  # before RESTServer adds ModelServer's own routes: the kit's answer first
    token = os.environ[C.TOKEN_ENV] if args.token_auth else None
    add_management_routes(app, model, workers=args.workers, token_checked=bool(token))
    if token:
        app.add_middleware(kserve_auth.RequireToken, token=token)
    rest = RESTServer(
        "kserve.model_server:app",
        server.dataplane,
        server.model_repository_extension,
        args.http_port,
        grace_period=args.grace_period,
    )
    rest.create_application()
    rest.config.app = HotPath(app, model, token=token)  # the hot routes first, past FastAPI's stack
    rest.config.host = args.host
    # A log line per request costs more than a 28×28 PNG's preprocessing: errors are still logged.
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    grpc = AddressedGRPCServer(args.host, args.grpc_port, server, grace_period=args.grace_period, token=token)
    if args.as_spare:  # loaded: bound and serving once the supervisor says so, ended if it is gone first
        if sys.stdin.readline().encode() != supervision.SERVE:
            model.close()
            return
        model.routes.refresh()  # what changed while it waited
    sock = listening_socket(args.host, args.http_port)

    rest_server = DrainingServer(rest.config, drain_seconds=args.drain_seconds, on_drain=model.drain)
    signal.signal(signal.SIGUSR1, lambda signum, frame: model.drain())
    if drain_requested.is_set():
        model.drain()
    # Everything loaded so far (torch, KServe, pandas, the model: millions of objects) lives as long as the process:
    # out of the collector's sight, a full collection no longer stalls every request in flight for ~100 ms.
    gc.freeze()

    async def both():
        grpc_task = asyncio.create_task(grpc.start(max_workers=4))
        routing_task = asyncio.create_task(model.routes.follow())  # the other workers' routing changes
        await rest_server.serve(sockets=[sock])  # returns once a stop signal has drained REST
        routing_task.cancel()
        await grpc.stop()
        await grpc_task

    def after_drain(signum, frame):
        """uvicorn catches the stop signal while it serves and raises it again once it has drained: here, so that
        gRPC drains too and the process ends normally. Before uvicorn took it (still starting), it ends at once."""
        if not rest_server.should_exit:
            stopped_while_starting(signum, frame)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, after_drain)

    uvloop.run(both())  # libuv's event loop, as uvicorn takes where it can
    model.close()


class DrainingServer(uvicorn.Server):
    """uvicorn's server, whose first stop signal drains first (see the module's docstring)."""

    def __init__(self, config, *, drain_seconds: float, on_drain):
        super().__init__(config)
        self.drain_seconds, self.on_drain, self.timer = drain_seconds, on_drain, None

    def handle_exit(self, sig, frame) -> None:
        if self.timer or not self.drain_seconds:  # no drain, or a second signal: the graceful stop now
            if self.timer:
                self.timer.cancel()
            return super().handle_exit(sig, frame)
        self.on_drain()
        self.timer = threading.Timer(self.drain_seconds, super().handle_exit, (sig, None))
        self.timer.daemon = True
        self.timer.start()


class AddressedGRPCServer:
    """KServe's gRPC v2 service (its servicer and interceptors) on the kit's address, where 0.21's GRPCServer binds
    every interface ([::]); with a token, a call without it is refused first."""

    def __init__(self, host: str, port: int, server, *, grace_period: int, token: str | None = None):
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.server, self.grace_period, self.token, self.grpc = server, grace_period, token, None

    async def start(self, max_workers: int) -> None:
        from concurrent import futures

        from grpc import aio
        from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
        from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor, LoggingInterceptor
        from kserve.protocol.grpc.servicer import InferenceServicer

        interceptors = (LoggingInterceptor(), ExceptionToStatusInterceptor())
        if self.token:
            interceptors = (kserve_auth.grpc_interceptor(self.token), *interceptors)
        self.grpc = aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=interceptors,
            options=[("grpc.max_receive_message_length", C.MAX_REQUEST_BYTES)],
        )
        servicer = InferenceServicer(self.server.dataplane, self.server.model_repository_extension)
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, self.grpc)
        self.grpc.add_insecure_port(self.address)  # SO_REUSEPORT is gRPC's default on Linux
        await self.grpc.start()
        await self.grpc.wait_for_termination()

    async def stop(self) -> None:
        if self.grpc:
            await self.grpc.stop(grace=self.grace_period)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
