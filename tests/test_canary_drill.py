"""Issue 37's scenarios (feedback/canary_drill.py): `mnist-kit canary run` against a real kserve runtime under the
kit's load generator, thousands of different pictures of known digits (digits underlined on forms, from MNIST's
test set), the shadow's disagreements labelled by a script from those digits as they come. The same command each
time; only the candidate changes. No request of the load fails while the routing changes."""

import json

import pytest

from mnist_kit.feedback import canary_drill
from mnist_kit.packaging import archive


@pytest.fixture(scope="module")
def traffic(data_dir) -> list[tuple[bytes, int]]:
    return canary_drill.traffic(data_dir)


@pytest.fixture(scope="module")
def default(trained_checkpoint, data_dir, tmp_path_factory):
    """The default recipe's model (`mnist-kit train`), archived as 1.0 (`mnist-kit archive`)."""
    return archive.build(trained_checkpoint, tmp_path_factory.mktemp("default"), data_dir=data_dir)


def drill(scenario, default, traffic, trained_checkpoint, data_dir, home) -> dict:
    made = canary_drill.candidate(scenario, trained_checkpoint, data_dir, home=home)
    ran = canary_drill.drill(default, made, traffic, home=home, data_dir=data_dir)
    print(json.dumps(ran["decisions"], indent=1))  # what canary run printed, shown when a test fails
    assert ran["failed"] == [] and ran["sent"] > 1000
    return ran


def gates(decision: dict) -> dict:
    return {gate["name"]: gate for gate in decision["figures"]["gates"]}


def test_a_candidate_trained_on_3000_images_is_rolled_back_before_it_answers_a_tenth_of_the_traffic(
    default, traffic, trained_checkpoint, data_dir, tmp_path
):
    ran = drill("limit-3000", default, traffic, trained_checkpoint, data_dir, tmp_path)
    assert ran["exit_code"] == 1 and ran["decisions"][-1]["decision"] == "rolled back"
    assert ran["candidate_share"] <= 0.1


def test_a_fine_tune_on_the_users_corrections_that_reads_their_digits_better_is_promoted(
    default, traffic, trained_checkpoint, data_dir, tmp_path
):
    ran = drill("users-fine-tune", default, traffic, trained_checkpoint, data_dir, tmp_path)
    passed = [d for d in ran["decisions"] if d["decision"] == "passed"]
    assert ran["exit_code"] == 0 and ran["decisions"][-1]["decision"] == "promoted"
    assert [d["stage"] for d in passed] == ["shadow", "10 %", "50 %", "100 %"]
    assert gates(passed[0])["verdict"]["figures"]["verdict"] == "candidate better"
    assert ran["answered_by"]["2.0"] > 0


def test_a_candidate_reading_sevens_as_ones_is_stopped_by_the_per_digit_guard_in_the_shadow(
    default, traffic, trained_checkpoint, data_dir, tmp_path
):
    ran = drill("sevens-as-ones", default, traffic, trained_checkpoint, data_dir, tmp_path)
    last = ran["decisions"][-1]
    assert ran["exit_code"] == 1 and (last["stage"], last["decision"]) == ("shadow", "rolled back")
    guard = gates(last)["mnist"]
    assert guard["state"] == "fail" and 7 in [d["digit"] for d in guard["figures"]["digits_lost"]]
    assert "2.0" not in ran["answered_by"]
