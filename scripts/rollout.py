#!/usr/bin/env python
"""Replicas of the kit behind HAProxy on one machine, rolled to a new archive without losing a request; and the
failure scenarios under load, at full size, whose figures docs/DEPLOYING.md quotes.

    python scripts/rollout.py up --archive model_store/mnist.mar --replicas 3 --port 8088
        replicas (each as the serving image runs one: drain on stop, readiness on a port of its own) behind HAProxy
        on 127.0.0.1:8088; they keep running. Prints the admin socket the other commands take.
    python scripts/rollout.py replace --admin-socket SOCKET --archive model_store/mnist-2.0.mar
        Kubernetes' rolling update (maxSurge 1, maxUnavailable 0) through HAProxy's runtime API: for each replica a
        new one serving ARCHIVE, in rotation first; then the old one drained in the proxy, removed when nothing is
        in flight, and stopped. The same steps work with your own HAProxy (`stats socket ... level admin`): replicas
        it names that this machine did not start are left for you to stop.
    python scripts/rollout.py down --admin-socket SOCKET
    python scripts/rollout.py scenarios --archive model_store/mnist.mar --new-archive model_store/mnist-2.0.mar
        each scenario (rollout, kill-server, kill-worker, sigterm) under load; a JSON report (--out) and a table.
"""

import argparse
import json
import os
import signal
import sys
import tempfile
from pathlib import Path

from mnist_kit import constants as C
from mnist_kit.bench.report import machine
from mnist_kit.deploy import rollout
from mnist_kit.deploy.proxy import BACKEND, Proxy
from mnist_kit.deploy.replicas import LocalReplica


def up(args) -> None:
    replicas = rollout.start_all([lambda: LocalReplica(args.archive) for _ in range(args.replicas)])
    backends = {rollout.name_of(r, i): (r.inference_port, r.health_port) for i, r in enumerate(replicas)}
    proxy = Proxy(tempfile.mkdtemp(prefix="mnist-kit-proxy-"), args.port, backends).start()
    for name, replica in zip(backends, replicas):
        print(f"{name}: {replica.inference_url} (readiness {replica.health_url})")
    print(f"HAProxy: {proxy.url}/predictions/mnist; admin socket: {proxy.admin_socket}")


def replace(args) -> None:
    proxy = Proxy.attach(args.admin_socket, args.backend)
    servers = {name: row for name, row in proxy.servers().items() if row["status"] != "MAINT"}
    current = {name: Attached(int(row["addr"].rsplit(":", 1)[1])) for name, row in servers.items() if row["addr"]}
    rollout.replace(proxy, current, lambda: LocalReplica(args.archive).start(), log=print)
    print("done:", ", ".join(f"{n} {r['status']}" for n, r in proxy.servers().items()))


class Attached:
    """A replica the proxy names, known by its port: stopped if this machine's replica launcher started it."""

    def __init__(self, port: int):
        self.port = port

    def stop(self) -> None:
        if LocalReplica.stop_listening_on(self.port) is None:
            print(f"the replica on port {self.port} was not started here: stop it yourself")


def down(args) -> None:
    proxy = Proxy.attach(args.admin_socket, args.backend)
    for name, row in proxy.servers().items():
        proxy.drain(name)
        proxy.wait_idle(name)
        Attached(int(row["addr"].rsplit(":", 1)[1])).stop()
        print(f"{name} stopped")
    os.kill(proxy.pid(), signal.SIGTERM)
    print("HAProxy stopped")


def scenarios(args) -> None:
    body = Path(args.image).read_bytes()
    reports = []
    for kind in args.only or list(rollout.SCENARIOS):
        print(f"{kind}: {rollout.SCENARIOS[kind]}", flush=True)
        reports.append(
            rollout.scenario(
                kind,
                args.archive,
                body,
                new_archive=args.new_archive,
                replicas=args.replicas,
                concurrency=args.concurrency,
                steady_s=args.steady,
                after_s=args.steady,
                log=lambda line: print("  ", line, flush=True),
            )
        )
        print(table_row(reports[-1]), flush=True)
    document = {
        "machine": machine(),
        "command": " ".join(["python", *sys.argv]),
        "scenarios": reports,
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(document, indent=1) + "\n")
        print(f"wrote {args.out}")
    print(rollout.markdown(document))


def table_row(report: dict) -> str:
    t, s, d, a = (report[k] for k in ("total", "steady", "during", "after"))
    return (
        f"  sent {t['sent']}, answered {t['answered']}, failed {t['failed']}, retried by the client {t['retried']}; "
        f"p99 steady {s['p99_ms']} ms, during {d['p99_ms']} ms; versions before {report['before']['versions']}, "
        f"after {a['versions']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("up")
    p.add_argument("--archive", default=f"{C.MODEL_STORE}/{C.MODEL_NAME}.mar")
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--port", type=int, default=8088)
    p = commands.add_parser("replace")
    p.add_argument("--admin-socket", required=True)
    p.add_argument("--backend", default=BACKEND, help="The HAProxy backend whose servers are the replicas.")
    p.add_argument("--archive", required=True)
    p = commands.add_parser("down")
    p.add_argument("--admin-socket", required=True)
    p.add_argument("--backend", default=BACKEND)
    p = commands.add_parser("scenarios")
    p.add_argument("--archive", default=f"{C.MODEL_STORE}/{C.MODEL_NAME}.mar")
    p.add_argument("--new-archive", default=f"{C.MODEL_STORE}/{C.MODEL_NAME}-2.0.mar")
    p.add_argument("--image", default="examples/digits/7.png")
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--steady", type=float, default=20, help="Seconds of load before and after each change.")
    p.add_argument("--only", nargs="*", choices=list(rollout.SCENARIOS))
    p.add_argument("--out", default=None, help="Where the JSON report goes, e.g. docs/rollout/amd-epyc-avx512.json")
    args = parser.parse_args()
    {"up": up, "replace": replace, "down": down, "scenarios": scenarios}[args.command](args)


if __name__ == "__main__":
    main()
