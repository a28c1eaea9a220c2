"""Several versions on the kserve runtime, and a shadow in process (serving/kserve/versions.py, shadow.py): each
version answers by its own path and the default by the bare one; a shadow version reads the default's decoded
pictures in the same batch, its answer never the reply, its disagreements kept with the bytes as sent; the figures
per version and role on /metrics, added up over workers. In process on real cores (random weights) where it can be,
and once through the real runtime."""

import asyncio
import base64
import json
import time
import urllib.request
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import DIGITS
from fastapi import FastAPI
from prometheus_client import REGISTRY, CollectorRegistry
from test_kserve_hot_path import asgi

from mnist_kit import constants as C
from mnist_kit.cli import cli
from mnist_kit.packaging import archive
from mnist_kit.serving import client
from mnist_kit.serving.kserve import metrics, server, versions
from mnist_kit.serving.kserve.batcher import MicroBatcher
from mnist_kit.serving.kserve.disagreements import DisagreementStore, DisagreementWriter
from mnist_kit.serving.kserve.hot_path import HotPath
from mnist_kit.serving.kserve.launcher import PrivateKServe, Shadowing
from mnist_kit.serving.kserve.routes import add_management_routes, add_routes
from mnist_kit.serving.kserve.routing import Routed, Routing
from mnist_kit.serving.kserve.shadow import Shadow
from mnist_kit.worker.core import Batch, Core

PNG = ("content-type", "image/png")
PICTURES = [path.read_bytes() for path in DIGITS]


def random_core(folder: Path, version: str, seed: int) -> Core:
    """An eager core on random weights (no training), answering as `version`."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    from mnist_model import MnistClassificationNet

    torch.save(MnistClassificationNet().state_dict(), folder / "mnist_sd.pt")
    threads = torch.get_num_threads()  # the eager form sets one, as a worker runs: pytest's process keeps its own
    core = Core(str(folder), {"serializedFile": "mnist_sd.pt", "modelVersion": version}, serving_form="eager-fp32")
    torch.set_num_threads(threads)
    return core


@pytest.fixture(scope="module")
def cores(tmp_path_factory) -> dict[str, Core]:
    """1.0 and 2.0 on different random weights, and 1.1 on 1.0's own."""
    folder = tmp_path_factory.mktemp("versions")
    return {
        "1.0": random_core(folder / "1.0", "1.0", seed=0),
        "2.0": random_core(folder / "2.0", "2.0", seed=1),
        "1.1": random_core(folder / "1.1", "1.1", seed=0),
    }


class Served(Routed):
    """What the routes and the hot path read of MnistModel, wired as its `load` wires it: each version's core and
    batcher (counted), the first the default, and the routing (`routing`: a state to start from); `shadow`, a Shadow
    of the test's own on the default's batcher, where the routing would make one writing to `writer`."""

    name = "mnist"

    def __init__(self, cores: list[Core], *, shadow: Shadow | None = None, routing=None, writer=None, path=None):
        self.versions = {}
        for core in cores:
            v = core.model_version
            mar = SimpleNamespace(path=Path(f"mnist-{v}.mar"), version=v)
            self.versions[v] = versions.Version(mar, core, MicroBatcher(core, counted=metrics.Counted(v)))
        self.writer = writer or Recorder()
        self.start_routing(routing or Routing(cores[0].model_version), path=path, seed=0)
        if shadow is not None:
            self.versions[self.version].batcher.shadow = shadow

    def shadow_writer(self):
        return self.writer


def app_of(model) -> HotPath:
    """The runtime's REST app in process: the hot path in front of the kit's FastAPI routes."""
    app = FastAPI()
    add_routes(app, model)
    add_management_routes(app, model, workers=1)
    return HotPath(app, model)


def ask(app, requests: list[tuple[str, list, bytes]], *, method="POST") -> list[tuple[int, dict, bytes]]:
    """Each (path, headers, body) sent at once, as concurrent clients send them: they share batches."""

    async def all_of_them():
        return await asyncio.gather(*(asgi(app, path, method=method, headers=h, body=b) for path, h, b in requests))

    return asyncio.run(all_of_them())


def figure(name: str, **labels) -> float:
    """A sample's value as the runtime's /metrics shows it (metrics.exposition_of_all_workers: batch histograms as
    histograms), from this process's figures."""
    shown = CollectorRegistry()
    shown.register(metrics.AsHistograms(REGISTRY))
    return shown.get_sample_value(name, labels) or 0.0


def shadowing(cores, shadow_version: str, writer, *, share: float = 1.0, seed: int = 0) -> Shadow:
    return Shadow(
        cores[shadow_version], default_version="1.0", version=shadow_version, writer=writer, share=share, seed=seed
    )


class Recorder:
    """A DisagreementWriter's `submit`, recorded."""

    def __init__(self):
        self.records = []

    def submit(self, image, **fields) -> bool:
        self.records.append({"image": image, **fields})
        return True


def v2_body(pictures: list[bytes]) -> bytes:
    data = [base64.b64encode(p).decode() for p in pictures]
    return json.dumps(
        {"inputs": [{"name": "images", "shape": [len(data)], "datatype": "BYTES", "data": data}]}
    ).encode()


@pytest.mark.unit
def test_each_version_answers_by_its_path_and_the_default_by_the_bare_one(cores):
    app = app_of(Served([cores["1.0"], cores["2.0"]]))
    paths = ["/predictions/mnist", "/predictions/mnist/1.0", "/predictions/mnist/2.0"]
    plain = ask(app, [(path, [PNG], PICTURES[3]) for path in paths])
    alone = {
        v: cores[v].encode(cores[v].infer(cores[v].decode([{"body": PICTURES[3]}], [dict([PNG])])))[0] for v in cores
    }
    assert [(status, answer.decode()) for status, _, answer in plain] == [
        (200, alone["1.0"].body),
        (200, alone["1.0"].body),
        (200, alone["2.0"].body),
    ]
    v2 = ask(
        app,
        [
            (p, [("content-type", "application/json")], v2_body(PICTURES[:1]))
            for p in (
                "/v2/models/mnist/infer",
                "/v2/models/mnist/versions/2.0/infer",
            )
        ],
    )
    assert [json.loads(answer)["model_version"] for _, _, answer in v2] == ["1.0", "2.0"]


@pytest.mark.unit
def test_an_unknown_version_is_the_kits_404(cores):
    ((status, _, answer),) = ask(
        app_of(Served([cores["1.0"], cores["2.0"]])), [("/predictions/mnist/3.0", [PNG], PICTURES[3])]
    )
    assert status == 404 and json.loads(answer)["message"] == "model mnist/3.0 not found: this server serves mnist"


@pytest.mark.unit
def test_the_management_reads_list_every_version_and_which_is_the_default(cores):
    app = app_of(Served([cores["1.0"], cores["2.0"]]))
    every, default, second, listing = [
        json.loads(answer)
        for _, _, answer in ask(
            app,
            [(p, [], b"") for p in ("/models/mnist/all", "/models/mnist", "/models/mnist/2.0", "/models")],
            method="GET",
        )
    ]
    assert [(v["modelVersion"], v["modelUrl"], v["isDefault"]) for v in every] == [
        ("1.0", "mnist-1.0.mar", True),
        ("2.0", "mnist-2.0.mar", False),
    ]
    assert [v["modelVersion"] for v in default] == ["1.0"] and [v["modelVersion"] for v in second] == ["2.0"]
    assert listing == {"models": [{"modelName": "mnist", "modelUrl": "mnist-1.0.mar"}]}


@pytest.mark.unit
def test_a_shadow_that_agrees_everywhere_reads_every_picture_and_stores_nothing(cores):
    recorder = Recorder()
    app = app_of(Served([cores["1.0"]], shadow=shadowing(cores, "1.1", recorder)))
    before = figure("mnist_kit_shadow_comparisons_total", default_version="1.0", shadow_version="1.1")
    replies = ask(app, [("/predictions/mnist", [PNG], picture) for picture in PICTURES])
    assert {status for status, _, _ in replies} == {200}
    assert figure("mnist_kit_shadow_comparisons_total", default_version="1.0", shadow_version="1.1") - before == 10
    assert recorder.records == []


@pytest.mark.unit
def test_requests_naming_a_version_are_answered_and_never_read_by_the_shadow(cores):
    recorder = Recorder()
    app = app_of(Served([cores["1.0"], cores["2.0"]], shadow=shadowing(cores, "2.0", recorder)))
    before = figure("mnist_kit_shadow_comparisons_total", default_version="1.0", shadow_version="2.0")
    named = [("/predictions/mnist/1.0", [PNG], picture) for picture in PICTURES]
    named.append(("/v2/models/mnist/versions/1.0/infer", [("content-type", "application/json")], v2_body(PICTURES)))
    replies = ask(app, named + [("/predictions/mnist", [PNG], PICTURES[7])])  # one naming none, in the same batch
    assert {status for status, _, _ in replies} == {200}
    assert figure("mnist_kit_shadow_comparisons_total", default_version="1.0", shadow_version="2.0") - before == 1


@pytest.mark.unit
def test_at_share_one_every_disagreement_is_stored_with_both_answers_and_the_bytes_as_sent(cores, tmp_path):
    writer = DisagreementWriter(tmp_path / C.SHADOW_DB)
    app = app_of(Served([cores["1.0"]], shadow=shadowing(cores, "2.0", writer)))
    ask(app, [("/predictions/mnist", [PNG], picture) for picture in PICTURES])
    assert writer.flush(10)
    writer.close()
    expected = []
    for picture in PICTURES:
        batch = cores["1.0"].infer(cores["1.0"].decode([{"body": picture}], [dict([PNG])]))
        (mine,), (theirs,) = batch.answers, cores["2.0"].infer(Batch(batch.requests)).answers
        if mine.digit != theirs.digit or ("not_a_digit" in mine.flags) != ("not_a_digit" in theirs.flags):
            expected.append((picture, mine.digit, theirs.digit))
    kept = DisagreementStore(tmp_path / C.SHADOW_DB).list()
    stored = [(d.image, d.default_answer["digit"], d.shadow_answer["digit"]) for d in reversed(kept)]
    assert expected and sorted(stored) == sorted(expected)
    assert {(d.content_type, d.default_version, d.shadow_version) for d in kept} == {("image/png", "1.0", "2.0")}
    assert all(set(d.default_answer) == set(d.shadow_answer) == {"digit", "confidence", "flags"} for d in kept)


@pytest.mark.unit
def test_a_body_of_several_pictures_is_kept_whole_with_each_pictures_index(cores):
    recorder = Recorder()
    app = app_of(Served([cores["1.0"]], shadow=shadowing(cores, "2.0", recorder)))
    body = v2_body(PICTURES[:4])
    ask(app, [("/v2/models/mnist/infer", [("content-type", "application/json")], body)])
    assert recorder.records and {(r["image"], r["content_type"]) for r in recorder.records} == {
        (body, "application/json")
    }
    assert [r["default_answer"]["picture"] for r in recorder.records] == sorted(
        r["shadow_answer"]["picture"] for r in recorder.records
    )


@pytest.mark.unit
def test_at_share_a_tenth_about_a_tenth_of_the_requests_are_compared():
    shadow = Shadow(None, default_version="1.0", version="2.0", writer=Recorder(), share=0.1, seed=7)
    batch = Batch([SimpleNamespace(images=[object()]) for _ in range(5000)])
    assert 400 <= len(shadow.chosen(batch)) <= 600


@pytest.mark.unit
def test_requests_without_pictures_are_never_compared():
    shadow = Shadow(None, default_version="1.0", version="2.0", writer=Recorder())
    batch = Batch([SimpleNamespace(images=[]), SimpleNamespace(images=[1, 2]), SimpleNamespace(images=[3])])
    assert shadow.chosen(batch) == [(1, 0, 2), (2, 2, 1)]


REQUESTS = [
    *[("/predictions/mnist", [PNG], picture) for picture in PICTURES],
    ("/v2/models/mnist/infer", [("content-type", "application/json")], v2_body(PICTURES[2:5])),
    ("/predictions/mnist", [PNG], b"not an image"),
    ("/predictions/mnist", [PNG, ("x-strict", "true")], PICTURES[1]),
]


@pytest.mark.unit
def test_the_reply_is_byte_for_byte_what_the_default_alone_answers(cores):
    alone = ask(app_of(Served([cores["1.0"]])), REQUESTS)
    shadowed = ask(app_of(Served([cores["1.0"]], shadow=shadowing(cores, "2.0", Recorder()))), REQUESTS)
    assert shadowed == alone


@pytest.mark.unit
def test_a_failing_shadow_never_fails_the_defaults_answer_and_is_counted(cores):
    alone = ask(app_of(Served([cores["1.0"]])), REQUESTS)
    failing = SimpleNamespace(infer=lambda batch: 1 / 0)
    shadow = Shadow(failing, default_version="1.0", version="9.0", writer=Recorder())
    before = figure("mnist_kit_requests_total", version="9.0", role="shadow", status_class="5xx")
    assert ask(app_of(Served([cores["1.0"]], shadow=shadow)), REQUESTS) == alone
    assert figure("mnist_kit_requests_total", version="9.0", role="shadow", status_class="5xx") > before


@pytest.mark.unit
def test_each_version_counts_its_requests_by_status_class_its_pictures_and_its_latency(cores):
    app = app_of(Served([cores["1.0"], cores["2.0"]]))
    labels = {"version": "2.0", "role": "default"}
    names = [
        ("mnist_kit_requests_total", {**labels, "status_class": "2xx"}),
        ("mnist_kit_requests_total", {**labels, "status_class": "4xx"}),
        ("mnist_kit_pictures_total", labels),
        ("mnist_kit_request_seconds_count", {"version": "2.0"}),
    ]
    before = [figure(name, **l) for name, l in names]
    ask(app, [("/predictions/mnist/2.0", [PNG], body) for body in [*PICTURES, b"not an image"]])
    after = [figure(name, **l) for name, l in names]
    assert [a - b for a, b in zip(after, before)] == [10, 1, 10, 11]


def tiny_zip(path: Path, name: str, version: str) -> Path:
    """An archive's manifest and nothing else: what versions.read reads."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("MAR-INF/MANIFEST.json", json.dumps({"model": {"modelName": name, "modelVersion": version}}))
    return path


@pytest.mark.unit
def test_archives_of_different_models_are_refused_naming_them(tmp_path):
    archives = [tiny_zip(tmp_path / "mnist.mar", "mnist", "1.0"), tiny_zip(tmp_path / "other.mar", "digits", "1.0")]
    with pytest.raises(versions.VersionsError, match=r"different models \(mnist.mar \(mnist\), other.mar \(digits\)\)"):
        versions.read(archives)


@pytest.mark.unit
@pytest.mark.parametrize(
    "shadow, share, message",
    [
        ("1.0", 1.0, "--shadow 1.0 is the default version: it answers"),
        ("3.0", 1.0, "--shadow 3.0 is not among the archives"),
        ("2.0", 1.5, r"--shadow-share must be in \(0, 1\], not 1.5"),
    ],
)
def test_a_shadow_must_be_another_served_version(tmp_path, shadow, share, message):
    archives = versions.read(
        [tiny_zip(tmp_path / "a.mar", "mnist", "1.0"), tiny_zip(tmp_path / "b.mar", "mnist", "2.0")]
    )
    with pytest.raises(versions.VersionsError, match=message):
        versions.check_shadow(archives, shadow, share)


@pytest.mark.unit
def test_the_server_refuses_archives_it_cannot_serve_together_before_it_starts(tmp_path, capsys):
    a, b = tiny_zip(tmp_path / "a.mar", "mnist", "1.0"), tiny_zip(tmp_path / "b.mar", "digits", "2.0")
    with pytest.raises(SystemExit):
        server.parse(["--archive", str(a), "--archive", str(b)])
    assert "the archives serve different models" in capsys.readouterr().err


@pytest.mark.unit
def test_serve_on_torchserve_refuses_a_shadow_saying_where_it_works(tmp_path):
    result = CliRunner().invoke(cli, ["serve", "--shadow", "2.0"], env={C.HOME_ENV: str(tmp_path)})
    assert result.exit_code == 2
    assert "--shadow works on the kserve runtime only (mnist-kit serve --runtime kserve" in result.output
    assert "TorchServe's handler sees one version per worker" in result.output


@pytest.mark.unit
def test_serve_on_kserve_takes_archive_or_models_not_both(tmp_path):
    argv = ["serve", "--runtime", "kserve", "--archive", "a.mar", "--models", "a.mar,b.mar"]
    result = CliRunner().invoke(cli, argv, env={C.HOME_ENV: str(tmp_path)})
    assert result.exit_code == 2 and "give --archive or --models, not both" in result.output


@pytest.mark.unit
def test_serve_on_kserve_reads_models_from_the_model_store_and_checks_the_shadow_first(tmp_path):
    store = tmp_path / C.MODEL_STORE
    store.mkdir()
    tiny_zip(store / "mnist.mar", "mnist", "1.0")
    tiny_zip(store / "mnist-2.0.mar", "mnist", "2.0")
    argv = ["serve", "--runtime", "kserve", "--models", "mnist.mar,mnist-2.0.mar", "--shadow", "3.0"]
    result = CliRunner().invoke(cli, argv, env={C.HOME_ENV: str(tmp_path), "TMPDIR": str(tmp_path)})
    assert (
        result.exit_code == 1
        and "--shadow 3.0 is not among the archives" in result.output
        and "(served: 1.0, 2.0" in result.output
    )


# Through the real runtime: two workers, two versions, 2.0 (random weights) shadowing 1.0 (the tiny model).


@pytest.fixture(scope="module")
def shadowed(model_store, untrained_checkpoint, tmp_path_factory):
    store = tmp_path_factory.mktemp("two_versions")
    second = archive.build(untrained_checkpoint, store, version="2.0", mode="eager")
    with PrivateKServe([model_store / "mnist.mar", second], workers=2, shadow=Shadowing("2.0")) as ks:
        yield ks


def scrape(url: str) -> dict[str, float]:
    text = urllib.request.urlopen(f"{url}/metrics", timeout=30).read().decode()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("mnist_kit_")
    }


def test_the_runtime_serves_two_versions_shadows_one_and_adds_its_figures_up_over_workers(shadowed):
    url, n = shadowed.inference_url, 60
    for i in range(n):  # a connection each: the kernel spreads them over both workers
        assert client.predict(PICTURES[i % 10], url=url)["digit"] == i % 10
    default = 'mnist_kit_requests_total{role="default",status_class="2xx",version="1.0"}'
    compared = 'mnist_kit_shadow_comparisons_total{default_version="1.0",shadow_version="2.0"}'
    disagreed = 'mnist_kit_shadow_disagreements_total{default_version="1.0",shadow_version="2.0"}'
    first, second = scrape(url), scrape(url)
    assert first[default] == second[default] == n and first[compared] == second[compared] == n
    deadline = time.monotonic() + 30  # each worker's writer thread stores its disagreements in the background
    while DisagreementStore(shadowed.shadow_store).stats()["stored"] < first[disagreed] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert DisagreementStore(shadowed.shadow_store).stats()["stored"] == first[disagreed] > 0


def test_the_runtime_answers_each_version_by_its_path_and_lists_both(shadowed):
    url = shadowed.inference_url
    request = urllib.request.Request(
        f"{url}/v2/models/mnist/versions/2.0/infer",
        data=v2_body(PICTURES[:1]),
        headers={"Content-Type": "application/json"},
    )
    assert json.loads(urllib.request.urlopen(request, timeout=30).read())["model_version"] == "2.0"
    described = json.loads(urllib.request.urlopen(f"{url}/models/mnist/all", timeout=30).read())
    assert [(v["modelVersion"], v["isDefault"]) for v in described] == [("1.0", True), ("2.0", False)]


def test_grpc_answers_with_the_version_the_request_names(shadowed):
    import tritonclient.grpc as triton_grpc

    grpc_client = triton_grpc.InferenceServerClient(shadowed.grpc_address)
    images = triton_grpc.InferInput("images", [1], "BYTES")
    images.set_data_from_numpy(np.array([PICTURES[4]], dtype=object))
    assert grpc_client.infer("mnist", [images]).get_response().model_version == "1.0"
    assert grpc_client.infer("mnist", [images], model_version="2.0").get_response().model_version == "2.0"
    with pytest.raises(triton_grpc.InferenceServerException) as error:
        grpc_client.infer("mnist", [images], model_version="3.0")
    assert error.value.status() == "StatusCode.NOT_FOUND"


def test_two_replicas_on_one_folder_feed_one_store_and_their_counters_add_up(
    model_store, untrained_checkpoint, tmp_path
):
    """Two runtimes, as two replicas on one machine mounting one folder: each counts on its own /metrics (Prometheus
    adds the targets up), and every disagreement either counted reaches the one shadow.db."""
    second = archive.build(untrained_checkpoint, tmp_path, version="2.0", mode="eager")
    shared = Shadowing("2.0", store=tmp_path / C.SHADOW_DB)
    disagreed = 'mnist_kit_shadow_disagreements_total{default_version="1.0",shadow_version="2.0"}'
    with (
        PrivateKServe([model_store / "mnist.mar", second], shadow=shared) as first,
        PrivateKServe([model_store / "mnist.mar", second], shadow=shared) as other,
    ):
        for i in range(40):
            client.predict(PICTURES[i % 10], url=(first, other)[i % 2].inference_url)
        counted = [scrape(replica.inference_url)[disagreed] for replica in (first, other)]
        deadline = time.monotonic() + 30
        while DisagreementStore(shared.store).stats()["stored"] < sum(counted) and time.monotonic() < deadline:
            time.sleep(0.2)
    assert all(n > 0 for n in counted) and DisagreementStore(shared.store).stats()["stored"] == sum(counted)
