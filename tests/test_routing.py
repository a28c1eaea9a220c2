"""The kserve runtime's routing changed live (serving/kserve/routing.py), the switch a canary needs: which version
answers a request naming none (set-default), and a candidate that shadows the default or answers a share of those
requests as a canary; through the management API, on every worker, losing no request. In process on real cores
(random weights), then through the real runtime with two workers."""

import asyncio
import json
import time
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from test_kserve_hot_path import asgi
from test_shadow import PICTURES, PNG, Served, app_of, ask, figure, random_core

from mnist_kit.deploy.rollout import Load
from mnist_kit.packaging import archive
from mnist_kit.serving.kserve.batcher import MicroBatcher
from mnist_kit.serving.kserve.launcher import PrivateKServe
from mnist_kit.serving.kserve.routes import add_management_routes, add_routes
from mnist_kit.serving.kserve.routing import Routes, Routing
from mnist_kit.worker.core import Reply


@pytest.fixture(scope="module")
def cores(tmp_path_factory):
    folder = tmp_path_factory.mktemp("routed")
    return {"1.0": random_core(folder / "1.0", "1.0", seed=0), "2.0": random_core(folder / "2.0", "2.0", seed=1)}


def manage(app, path: str, method="PUT", *, client: str | None = None) -> tuple[int, dict]:
    """(status, JSON) of one management request, its query string as uvicorn hands it over, from `client`."""
    path, _, query = path.partition("?")

    async def as_served(scope, receive, send):
        scope = {**scope, "query_string": query.encode(), **({"client": (client, 40000)} if client else {})}
        return await app(scope, receive, send)

    ((status, _, answer),) = ask(as_served, [(path, [], b"")], method=method)
    return status, json.loads(answer)


def answered_by(replies) -> list[str]:
    return [headers[b"x-model-version"].decode() for _, headers, _ in replies]


@pytest.mark.unit
def test_set_default_moves_the_bare_paths_answers_and_the_old_default_answers_by_its_version(cores):
    app = app_of(Served([cores["1.0"], cores["2.0"]]))
    paths = ["/predictions/mnist", "/predictions/mnist/1.0", "/v2/models/mnist/infer"]
    assert answered_by(ask(app, [(p, [PNG], PICTURES[3]) for p in paths])) == ["1.0", "1.0", "1.0"]
    status, said = manage(app, "/models/mnist/2.0/set-default")
    assert status == 200 and said["status"] == 'Default version successfully updated for model "mnist" to "2.0"'
    assert answered_by(ask(app, [(p, [PNG], PICTURES[3]) for p in paths])) == ["2.0", "1.0", "2.0"]
    every = json.loads(ask(app, [("/models/mnist/all", [], b"")], method="GET")[0][2])
    assert [(v["modelVersion"], v["isDefault"]) for v in every] == [("1.0", False), ("2.0", True)]


@pytest.mark.unit
def test_a_canary_at_half_answers_about_half_the_bare_requests_and_the_reply_says_which(cores):
    app = app_of(Served([cores["1.0"], cores["2.0"]]))
    status, said = manage(app, "/models/mnist/2.0/candidate?mode=canary&share=0.5")
    assert status == 200 and (said["candidate"], said["mode"], said["share"]) == ("2.0", "canary", 0.5)
    before = figure("mnist_kit_requests_total", version="2.0", role="canary", status_class="2xx")
    replies = ask(app, [("/predictions/mnist", [PNG], PICTURES[i % 10]) for i in range(200)])
    versions = answered_by(replies)
    assert 70 <= versions.count("2.0") <= 130 and {status for status, _, _ in replies} == {200}
    after = figure("mnist_kit_requests_total", version="2.0", role="canary", status_class="2xx")
    assert after - before == versions.count("2.0")  # counted as the canary's
    named = answered_by(ask(app, [("/predictions/mnist/1.0", [PNG], PICTURES[1]) for _ in range(20)]))
    assert set(named) == {"1.0"}  # a request naming a version always gets it
    every = json.loads(ask(app, [("/models/mnist/all", [], b"")], method="GET")[0][2])
    assert [v.get("candidate") for v in every] == [None, {"mode": "canary", "share": 0.5}]


@pytest.mark.unit
def test_the_canarys_answer_is_the_candidates_own(cores):
    app = app_of(Served([cores["1.0"], cores["2.0"]]))
    manage(app, "/models/mnist/2.0/candidate?mode=canary&share=1")
    canary = ask(app, [("/predictions/mnist", [PNG], PICTURES[5])])
    by_version = ask(app, [("/predictions/mnist/2.0", [PNG], PICTURES[5])])
    assert canary == by_version


@pytest.mark.unit
@pytest.mark.parametrize(
    "path, status, message",
    [
        ("/models/mnist/2.0/candidate?mode=canary&share=1.5", 400, "share must be a number in (0, 1], not 1.5"),
        ("/models/mnist/2.0/candidate?mode=canary&share=0", 400, "share must be a number in (0, 1], not 0.0"),
        ("/models/mnist/2.0/candidate?mode=canary&share=half", 400, "share must be a number in (0, 1], not 'half'"),
        ("/models/mnist/2.0/candidate?mode=canary", 400, "a canary needs its share: give share=F, in (0, 1]"),
        ("/models/mnist/2.0/candidate?mode=mirror&share=1", 400, "mode must be shadow or canary, not 'mirror'"),
        ("/models/mnist/2.0/candidate?shares=1", 400, "unknown parameter shares: give mode (shadow or canary)"),
        ("/models/mnist/1.0/candidate?mode=shadow", 400, "version 1.0 is the default: it answers already"),
        ("/models/mnist/3.0/candidate?mode=shadow", 404, "version 3.0 is not served here (served: 1.0, 2.0)"),
        ("/models/mnist/3.0/set-default", 404, "version 3.0 is not served here (served: 1.0, 2.0)"),
        ("/models/digits/2.0/set-default", 404, "model digits not found: this server serves mnist"),
    ],
)
def test_a_change_that_cannot_be_made_is_a_clear_4xx_and_changes_nothing(cores, path, status, message):
    model = Served([cores["1.0"], cores["2.0"]])
    got, said = manage(app_of(model), path)
    assert got == status and said["message"].startswith(message)
    assert model.routes.state == Routing("1.0")


@pytest.mark.unit
def test_removing_an_unknown_versions_candidate_is_a_404(cores):
    status, said = manage(app_of(Served([cores["1.0"], cores["2.0"]])), "/models/mnist/3.0/candidate", "DELETE")
    assert status == 404 and said["message"].startswith("version 3.0 is not served here")


@pytest.mark.unit
def test_a_candidate_switches_between_shadow_and_canary_and_is_removed(cores):
    model = Served([cores["1.0"], cores["2.0"]])
    app = app_of(model)
    compared = {"default_version": "1.0", "shadow_version": "2.0"}
    bare = [("/predictions/mnist", [PNG], picture) for picture in PICTURES]

    manage(app, "/models/mnist/2.0/candidate?mode=shadow")
    before = figure("mnist_kit_shadow_comparisons_total", **compared)
    assert set(answered_by(ask(app, bare))) == {"1.0"}
    assert figure("mnist_kit_shadow_comparisons_total", **compared) - before == 10

    manage(app, "/models/mnist/2.0/candidate?mode=canary&share=1")
    before = figure("mnist_kit_shadow_comparisons_total", **compared)
    assert set(answered_by(ask(app, bare))) == {"2.0"}
    assert figure("mnist_kit_shadow_comparisons_total", **compared) == before  # a canary is no shadow

    manage(app, "/models/mnist/2.0/candidate?mode=shadow&share=1")
    assert set(answered_by(ask(app, bare))) == {"1.0"}
    status, said = manage(app, "/models/mnist/2.0/candidate", "DELETE")
    assert status == 200 and said == {"status": "version 2.0 is no candidate", **Routing("1.0").as_dict()}
    assert model.versions["1.0"].batcher.shadow is None and model.canary is None


@pytest.mark.unit
def test_promoting_the_candidate_makes_it_the_default_and_no_candidate(cores):
    model = Served([cores["1.0"], cores["2.0"]], routing=Routing("1.0", "2.0", "canary", 0.5))
    manage(app_of(model), "/models/mnist/2.0/set-default")
    assert model.routes.state == Routing("2.0") and model.bare().version == "2.0"


@pytest.mark.unit
def test_the_version_header_is_the_same_on_the_hot_path_and_the_fastapi_route(cores):
    model = Served([cores["1.0"], cores["2.0"]])
    app = FastAPI()
    add_routes(app, model)

    async def both(path):
        request = {"method": "POST", "headers": [PNG], "body": PICTURES[2]}
        return await asgi(app, path, **request), await asgi(app_of(model), path, **request)

    for path, version in (("/predictions/mnist", "1.0"), ("/predictions/mnist/2.0", "2.0")):
        (_, slow, _), (_, fast, _) = asyncio.run(both(path))
        assert slow[b"x-model-version"] == fast[b"x-model-version"] == version.encode()


@pytest.mark.unit
def test_the_routing_is_changed_from_this_machine_only_unless_the_token_is_checked(cores):
    model = Served([cores["1.0"], cores["2.0"]])
    app = FastAPI()
    add_management_routes(app, model, workers=1)
    status, said = manage(app, "/models/mnist/2.0/set-default", client="10.0.0.7")
    assert status == 403 and said["message"].startswith("the routing is changed from this machine only")
    assert manage(app, "/models/mnist/2.0/set-default", client="127.0.0.1")[0] == 200
    guarded = FastAPI()
    add_management_routes(guarded, model, workers=1, token_checked=True)  # RequireToken let the request in
    assert manage(guarded, "/models/mnist/1.0/set-default", client="10.0.0.7")[0] == 200


@pytest.mark.unit
def test_a_change_one_worker_writes_is_applied_by_another_at_its_next_look(tmp_path):
    path, applied = tmp_path / "routing.json", []
    path.write_text(json.dumps(Routing("1.0").as_dict()))
    first = Routes(Routing("1.0"), ["1.0", "2.0"], apply=lambda state: None, path=path)
    other = Routes(Routing("1.0"), ["1.0", "2.0"], apply=applied.append, path=path)
    first.change(lambda state: Routing(state.default, "2.0", "canary", 0.1))
    assert json.loads(path.read_text()) == {"default": "1.0", "candidate": "2.0", "mode": "canary", "share": 0.1}
    other.refresh()
    assert applied == [Routing("1.0"), Routing("1.0", "2.0", "canary", 0.1)]
    second = other.change(lambda state: state.promoted("2.0"))  # from the file's latest: the canary, then promoted
    first.refresh()
    assert first.state == second == Routing("2.0")


@pytest.mark.unit
def test_a_routing_change_during_a_batch_applies_from_the_next_one():
    """The batch that runs while the shadow changes is compared by the shadow it began with."""
    seen = []
    old, new = (
        SimpleNamespace(compare=lambda batch, sent, shadowed, name=name: seen.append(name)) for name in ("old", "new")
    )

    class Core:
        def decode(self, rows, headers):
            batcher.shadow = new  # the routing changes while this batch runs
            return SimpleNamespace(requests=[SimpleNamespace(images=[]) for _ in rows], answers=[])

        def infer(self, batch):
            return batch

        def encode(self, batch):
            return [Reply("{}") for _ in batch.requests]

    batcher = MicroBatcher(Core(), shadow=old)

    async def two_batches():
        await batcher.submit({"body": b"1"}, {})
        await batcher.submit({"body": b"2"}, {})
        await asyncio.sleep(0.01)

    asyncio.run(two_batches())
    assert seen == ["old", "new"]


# Through the real runtime: two workers (each its own process), 1.0 (the tiny model) and 2.0 (random weights).


@pytest.fixture(scope="module")
def two_workers(model_store, untrained_checkpoint, tmp_path_factory):
    second = archive.build(untrained_checkpoint, tmp_path_factory.mktemp("routed_store"), version="2.0", mode="eager")
    with PrivateKServe([model_store / "mnist.mar", second], workers=2) as ks:
        yield ks


def put(url: str, method="PUT") -> dict:
    request = urllib.request.Request(url, method=method)
    return json.loads(urllib.request.urlopen(request, timeout=30).read())


def answers(url: str, n: int) -> list[tuple[str, int]]:
    """(the version that answered, the worker's pid) of n fresh connections' predictions and descriptions: the
    kernel spreads connections over the workers."""
    seen = []
    for i in range(n):
        request = urllib.request.Request(
            f"{url}/predictions/mnist", data=PICTURES[i % 10], headers={"Content-Type": "image/png"}, method="POST"
        )
        version = urllib.request.urlopen(request, timeout=30).headers["X-Model-Version"]
        (described,) = json.loads(urllib.request.urlopen(f"{url}/models/mnist", timeout=30).read())
        seen.append((version, described["modelVersion"], described["workers"][0]["pid"]))
    return seen


def test_a_set_default_reaches_both_workers_within_a_second(two_workers):
    url = two_workers.inference_url
    put(f"{url}/models/mnist/1.0/set-default")
    time.sleep(0.5)
    put(f"{url}/models/mnist/2.0/set-default")
    time.sleep(1)
    seen = answers(url, 40)
    assert {(answered, default) for answered, default, _ in seen} == {("2.0", "2.0")}
    assert len({pid for _, _, pid in seen}) == 2  # both workers answered


def test_no_request_fails_while_a_candidate_goes_from_shadow_to_canary_to_default(two_workers):
    url = two_workers.inference_url
    put(f"{url}/models/mnist/1.0/set-default")
    load = Load(url, PICTURES[7], concurrency=8, retries=0).start()
    try:
        for change in ("2.0/candidate?mode=shadow", "2.0/candidate?mode=canary&share=0.5", "2.0/set-default"):
            time.sleep(1.5)
            put(f"{url}/models/mnist/{change}")
        time.sleep(1.5)
    finally:
        results = load.stop()
    assert len(results) > 50 and [r.error for r in results if not r.ok] == []
    state = json.loads(urllib.request.urlopen(f"{url}/models/mnist/all", timeout=30).read())
    assert [(v["modelVersion"], v["isDefault"], v.get("candidate")) for v in state] == [
        ("1.0", False, None),
        ("2.0", True, None),
    ]


def test_a_bad_change_through_the_runtime_says_why(two_workers):
    with pytest.raises(urllib.error.HTTPError) as refused:
        put(f"{two_workers.inference_url}/models/mnist/2.0/candidate?mode=canary&share=2")
    assert refused.value.code == 400
