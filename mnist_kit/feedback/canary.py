"""`mnist-kit canary status`: how a candidate version does beside the default on live traffic, read from a running
kserve runtime (its /metrics and its management reads) and from the shadow's labelled disagreements (shadow.db).

The runtime's counters give each version's requests, errors, latency and flags, and how often the shadow agreed; the
labelled disagreements are the only pictures that say which version reads better, so McNemar's exact test (ab.py's)
is run on them, at the level of the look it would be. Status is a view, not a decision: it records no verdict, so
looking at it costs nothing and proves nothing more than `ab` would at that point (see docs/FEEDBACK.md).
"""

import json
import math
import re
from contextlib import closing
from pathlib import Path

from mnist_kit import constants as C
from mnist_kit.errors import KitError
from mnist_kit.feedback import ab
from mnist_kit.serving import client
from mnist_kit.serving.kserve.disagreements import NOT_A_DIGIT, DisagreementStore

SAMPLE = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[^"}]|"(?:[^"\\]|\\.)*")*)\})?\s+(\S+)')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"')
STATUS_CLASSES = ("2xx", "4xx", "5xx")
ROLES = ("default", "shadow", "canary")  # answers; reads beside the default; answers a share of its requests


class CanaryError(KitError):
    """A status that cannot be read: no runtime, a version it does not serve, no store; the message says which."""


def parse(text: str) -> list[tuple[str, dict, float]]:
    """Prometheus's text format → (name, labels, value) for each sample; comments and blank lines skipped."""
    samples = []
    for line in text.splitlines():
        found = SAMPLE.match(line.strip())
        if found and not line.lstrip().startswith("#"):
            labels = {k: re.sub(r"\\(.)", unescape, v) for k, v in LABEL.findall(found[2] or "")}
            samples.append((found[1], labels, float(found[3])))
    return samples


def unescape(match) -> str:
    return "\n" if match[1] == "n" else match[1]


def total(samples, name: str, **labels) -> float:
    """The sum of the samples of `name` whose labels include `labels` (over the others: roles, workers' series)."""
    return sum(v for n, ls, v in samples if n == name and all(ls.get(k) == w for k, w in labels.items()))


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The q-quantile of a histogram's cumulative buckets [(upper bound, count), ... (inf, count)], interpolated
    linearly inside the bucket that holds it, as Prometheus's histogram_quantile does; None without observations."""
    buckets = sorted(buckets)
    if len(buckets) < 2 or not math.isinf(buckets[-1][0]) or buckets[-1][1] == 0:
        return None
    rank = q * buckets[-1][1]
    b = next(i for i, (_, count) in enumerate(buckets) if count >= rank)
    if b == len(buckets) - 1:  # in the +Inf bucket: the highest finite bound is all that is known
        return buckets[-2][0]
    if b == 0 and buckets[0][0] <= 0:
        return buckets[0][0]
    start, below = (0.0, 0.0) if b == 0 else buckets[b - 1]
    end, count = buckets[b]
    return start + (end - start) * (rank - below) / (count - below)


def version_figures(samples, version: str) -> dict:
    """One version's requests by status class (in each role and in all), its error rate (5xx: a 4xx is the
    request's own fault, refused by any version), p50 and p99 of its answers' latency, and each flag's share of the
    pictures it read."""
    by_role = {
        role: {
            c: total(samples, "mnist_kit_requests_total", version=version, role=role, status_class=c)
            for c in STATUS_CLASSES
        }
        for role in ROLES
    }
    requests = {c: sum(by_role[role][c] for role in ROLES) for c in STATUS_CLASSES}
    handled = sum(requests.values())
    pictures = total(samples, "mnist_kit_pictures_total", version=version)
    buckets = [
        (float(labels["le"]), value)
        for name, labels, value in samples
        if name == "mnist_kit_request_seconds_bucket" and labels.get("version") == version
    ]
    latency = {"observations": total(samples, "mnist_kit_request_seconds_count", version=version)}
    for q in (0.5, 0.99):
        seconds = quantile(q, buckets)
        latency[f"p{round(100 * q)}_ms"] = None if seconds is None else round(1000 * seconds, 4)
    flags = {
        flag: round(total(samples, "mnist_kit_flags_total", version=version, flag=flag) / pictures, 4)
        if pictures
        else None
        for flag in C.FLAGS
    }
    return {
        "version": version,
        "roles": [role for role in ROLES if sum(by_role[role].values())],
        "requests": requests,
        "by_role": by_role,
        "error_rate": round(requests["5xx"] / handled, 6) if handled else None,
        "pictures": pictures,
        "latency": latency,
        "flag_shares": flags,
    }


def agreement(samples, default: str, candidate: str) -> dict:
    """What the shadow counted: pictures compared, disagreements, those not stored, and the share agreed on."""
    pair = {"default_version": default, "shadow_version": candidate}
    compared = total(samples, "mnist_kit_shadow_comparisons_total", **pair)
    disagreed = total(samples, "mnist_kit_shadow_disagreements_total", **pair)
    return {
        "comparisons": compared,
        "disagreements": disagreed,
        "dropped": total(samples, "mnist_kit_shadow_dropped_total", **pair),
        "agreement_rate": round(1 - disagreed / compared, 6) if compared else None,
    }


def read_right(answer: dict, label: int) -> bool:
    """A picture labelled a digit is read right by that digit without not_a_digit; one labelled not a digit, by
    not_a_digit."""
    not_a_digit = "not_a_digit" in answer.get("flags", [])
    return not_a_digit if label == NOT_A_DIGIT else answer.get("digit") == label and not not_a_digit


def labelled(store_path, default: str, candidate: str, *, trained=frozenset()) -> tuple[dict, list[str]]:
    """The labelled disagreements between the two versions (either one shadowing the other): how many, how many
    each read right, how many only one did; and their images' sha256, whose earlier verdicts count the look.

    McNemar's test pairs independent pictures: an image sent again (the same bytes) counts once, its first
    labelled disagreement; one that a recorded fine-tune trained on (`trained`: sha256s) not at all, as `ab` leaves
    them out. How many of each were left out is in the counts."""
    path = Path(store_path)
    if not path.is_file():
        raise CanaryError(
            f"no shadow store at {path}: a runtime shadowing the candidate writes it at its first disagreement "
            f"(mnist-kit serve --runtime kserve --models ... --shadow {candidate}); --db names another file"
        )
    with closing(DisagreementStore(path)) as store:
        rows = store.labels()
    counts = dict.fromkeys(("labelled", "default_right", "candidate_right", "only_default_right"), 0)
    counts.update(only_candidate_right=0, repeats_left_out=0, trained_on_left_out=0)
    digests, seen = [], set()
    for digest, first, first_answer, second, second_answer, label in rows:
        if (first, second) not in ((default, candidate), (candidate, default)):
            continue
        if digest in trained or digest in seen:
            counts["trained_on_left_out" if digest in trained else "repeats_left_out"] += 1
            continue
        seen.add(digest)
        answers = {first: first_answer, second: second_answer}
        mine, theirs = read_right(answers[default], label), read_right(answers[candidate], label)
        counts["labelled"] += 1
        counts["default_right"] += mine
        counts["candidate_right"] += theirs
        counts["only_default_right"] += mine and not theirs
        counts["only_candidate_right"] += theirs and not mine
        digests.append(digest)
    return counts, digests


def trained_on(feedback_db) -> frozenset:
    """The sha256 of every image a fine-tune recorded in feedback.db trained on; none without one."""
    path = Path(feedback_db)
    if not path.is_file():
        return frozenset()
    from mnist_kit.feedback.store import Store

    with closing(Store(path)) as store:
        return frozenset(store.trained_by())


def look_at(digests: list[str], feedback_db) -> int:
    """Which look at these images a verdict now would be: 1 + the most verdicts feedback.db records on any of them
    (`ab`'s count); read only, never recorded."""
    path = Path(feedback_db) if feedback_db else None
    if not digests or path is None or not path.is_file():
        return 1
    from mnist_kit.feedback.store import Store

    with closing(Store(path)) as store:
        seen = store.verdicts_per_image()
    return 1 + max(seen.get(digest, 0) for digest in digests)


def verdict(counts: dict, *, level: float) -> tuple[float, str]:
    """McNemar's exact p on the labelled disagreements, and what it says at `level`."""
    p = ab.mcnemar(counts["only_candidate_right"], counts["only_default_right"])
    if counts["labelled"] < ab.MIN_IMAGES:
        return p, f"too few labels ({counts['labelled']}, need {ab.MIN_IMAGES})"
    if p >= level:
        return p, "no difference shown"
    return p, "candidate better" if counts["only_candidate_right"] > counts["only_default_right"] else "default better"


def fetch(url: str, path: str, token: str | None) -> bytes:
    """One read of the runtime; no runtime there is one clear message."""
    try:
        return client.request(f"{url.rstrip('/')}{path}", token=token, timeout=30)
    except client.ClientError as e:
        if e.status is None:
            raise CanaryError(
                f"no kserve runtime answers at {url}: start one with `mnist-kit serve --runtime kserve "
                "--models mnist.mar,CANDIDATE.mar --shadow VERSION`, or name it with --url"
            ) from None
        raise CanaryError(f"{url}{path}: HTTP {e.status}: {e.detail}: is {url} a kserve runtime's REST port?") from None


def served(url: str, model: str, token: str | None) -> tuple[str, list[str]]:
    """The default version and every version the runtime serves (its management read /models/MODEL/all)."""
    entries = json.loads(fetch(url, f"/models/{model}/all", token))
    versions = [entry["modelVersion"] for entry in entries]
    return next(entry["modelVersion"] for entry in entries if entry.get("isDefault")), versions


def mnist_guard(pairs, default: str, candidate: str, *, url: str, token=None, progress=lambda done, total: None):
    """Both versions, by their version paths, on MNIST's test images (ab.run): the totals and the digits on which
    the candidate reads worse than the default by more than C.PROMOTION_DIGIT_MARGIN points."""
    result = ab.run(pairs, default, candidate, url=url, token=token, progress=progress)
    lost = ab.digits_lost(result)
    return {
        "images": result["paired_images"],
        "default": {k: result["a"][k] for k in ("version", "accuracy", "errors", "per_digit")},
        "candidate": {k: result["b"][k] for k in ("version", "accuracy", "errors", "per_digit")},
        "mcnemar_p": result["mcnemar_p"],
        "margin": C.PROMOTION_DIGIT_MARGIN,
        "digits_lost": lost,
        "passed": not lost,
    }


def status(
    candidate: str,
    *,
    url: str = C.INFERENCE_URL,
    db=None,
    feedback_db=None,
    model: str = C.MODEL_NAME,
    token: str | None = None,
    alpha: float = C.AB_ALPHA,
    mnist_pairs=None,
    progress=lambda done, total: None,
) -> dict:
    """Everything `canary status` reports, as one dict (its --json): each version's figures, the shadow's agreement,
    the verdict on the labelled disagreements, what `canary run` decided about it and, given `mnist_pairs`, the MNIST
    guard per digit."""
    default, versions = served(url, model, token)
    if candidate not in versions:
        raise CanaryError(
            f"the runtime at {url} serves {model} {', '.join(versions)}, not {candidate}: serve it beside the default "
            f"(--models mnist.mar,CANDIDATE.mar --shadow {candidate})"
        )
    if candidate == default:
        raise CanaryError(f"{candidate} is the default version at {url}: a candidate is another version it serves")
    samples = parse(fetch(url, "/metrics", token).decode("utf-8", "replace"))
    feedback_db = feedback_db or default_feedback_db()
    counts, digests = labelled(db or default_store(), default, candidate, trained=trained_on(feedback_db))
    look = look_at(digests, feedback_db)
    level = ab.look_level(alpha, look)
    p, said = verdict(counts, level=level)
    report = {
        "url": url,
        "default": version_figures(samples, default),
        "candidate": version_figures(samples, candidate),
        "shadow": agreement(samples, default, candidate),
        "labels": {**counts, "store": str(db or default_store())},
        "mcnemar_p": p,
        "look": look,
        "alpha": level,
        "alpha_over_all_looks": alpha,
        "look_recorded": False,
        "verdict": said,
    }
    report["decisions"] = decisions(feedback_db, candidate)
    if mnist_pairs is not None:
        report["mnist"] = mnist_guard(mnist_pairs, default, candidate, url=url, token=token, progress=progress)
    return report


def decisions(feedback_db, candidate: str) -> list[dict]:
    """What `canary run` decided about this candidate, oldest first, as feedback.db records it; none without one."""
    path = Path(feedback_db)
    if not path.is_file():
        return []
    from mnist_kit.feedback.store import Store

    with closing(Store(path)) as store:
        return store.decisions(candidate)


def default_store() -> Path:
    from mnist_kit.serving.kserve.disagreements import default_path

    return default_path()


def default_feedback_db() -> Path:
    from mnist_kit.feedback.store import default_path

    return default_path()


def table(report: dict) -> str:
    """What `canary status` prints: each version's row, the shadow's agreement, the verdict, the MNIST guard."""
    default, candidate = report["default"], report["candidate"]
    lines = [f"canary status at {report['url']}: default {default['version']}, candidate {candidate['version']}", ""]
    flags = "".join(f"{flag:>16}" for flag in C.FLAGS)
    lines.append(
        f"{'':10}{'version, roles':<16}{'2xx':>8}{'4xx':>6}{'5xx':>6}{'errors':>9}{'p50':>11}{'p99':>11}{flags}"
    )
    for name, figures in (("default", default), ("candidate", candidate)):
        lines.append(row(name, figures))
    shadow = report["shadow"]
    agreed = "-" if shadow["agreement_rate"] is None else f"{100 * shadow['agreement_rate']:.2f} %"
    labels = report["labels"]
    lines += [
        "",
        f"shadow: {shadow['comparisons']:.0f} pictures compared, {shadow['disagreements']:.0f} disagreements "
        f"({shadow['dropped']:.0f} not stored): agreement {agreed}",
        f"labelled disagreements ({labels['store']}): {labels['labelled']}; default right on "
        f"{labels['default_right']}, candidate on {labels['candidate_right']} (only the default "
        f"{labels['only_default_right']}, only the candidate {labels['only_candidate_right']}); left out: "
        f"{labels['repeats_left_out']} images sent again, {labels['trained_on_left_out']} a fine-tune trained on",
        f"McNemar's exact test: p = {report['mcnemar_p']:.3g}; "
        f"{ab.look_sentence(report['look'], report['alpha_over_all_looks'])} (status records no look)",
        f"verdict: {report['verdict']}",
    ]
    if "mnist" in report:
        lines += mnist_lines(report["mnist"])
    return "\n".join(lines)


def row(name: str, figures: dict) -> str:
    requests, latency = figures["requests"], figures["latency"]
    rate = "-" if figures["error_rate"] is None else f"{100 * figures['error_rate']:.2f} %"
    if latency["p50_ms"] is None:
        timing = f"{'not enough data':>22}"
    else:
        timing = f"{latency['p50_ms']:>8.3f} ms{latency['p99_ms']:>8.3f} ms"
    shares = "".join(
        f"{'-' if share is None else f'{100 * share:.2f} %':>16}" for share in figures["flag_shares"].values()
    )
    roles = "+".join(figures["roles"]) or "none"
    counts = f"{requests['2xx']:>8.0f}{requests['4xx']:>6.0f}{requests['5xx']:>6.0f}"
    return f"{name:<10}{figures['version'] + ' ' + roles:<16}{counts}{rate:>9}{timing}{shares}"


def mnist_lines(guard: dict) -> list[str]:
    a, b = guard["default"], guard["candidate"]
    said = (
        f"no digit more than {guard['margin']} points below the default"
        if guard["passed"]
        else f"more than {guard['margin']} points below the default on "
        + "; ".join(f"the {d['digit']}s, {d['a']:.2f} % → {d['b']:.2f} %" for d in guard["digits_lost"])
    )
    return [
        "",
        f"MNIST guard ({guard['images']} test images, both versions): default {a['accuracy']:.2f} % "
        f"({a['errors']} errors), candidate {b['accuracy']:.2f} % ({b['errors']} errors), p = {guard['mcnemar_p']:.3g}",
        f"per digit: {'passed' if guard['passed'] else 'failed'}: {said}",
    ]
