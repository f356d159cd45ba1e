"""A stage's CI role cannot write another model's adapters or another stage's registry.

moto's server does not enforce IAM here (tests/integration/test_access.py explains the
method): the real `llmfleet adapter` commands run against it while every call is recorded,
and each call is evaluated against the CI role's statements (model_store.store.access) with moto's
IAM evaluator. A call the role would be refused shows up in `refusals`.
"""

from __future__ import annotations

from llmfleet.model_store.store.access import ci_publisher_statements
from tests.integration.conftest import MODEL, REVISION, write_adapter, write_model
from tests.integration.test_access import KEY_ARN, PREFIX, STAGE, Call, Fleet, fleet, refusals  # noqa: F401 - the fixture

OTHER_MODEL = "other"  # in the store, not among the models the role publishes for
OTHER_STAGE = "staging"


def statements(fleet: Fleet) -> list[dict]:
    """The CI role of stage STAGE of a fleet that serves MODEL only."""
    return ci_publisher_statements(fleet.location.bucket, PREFIX, KEY_ARN, models=[MODEL], stage=STAGE)


def refused_writes(calls: list[Call], fleet: Fleet) -> list[str]:
    return [problem for problem in refusals(calls, statements(fleet)) if problem.startswith("s3:PutObject")]


def test_publishing_for_a_model_outside_the_fleet_is_refused(fleet: Fleet) -> None:
    for model in (MODEL, OTHER_MODEL):
        fleet.admin.upload_model(write_model(fleet.tmp / model), model, REVISION, uploader="admin")
    own = fleet.run("adapter", "publish", write_adapter(fleet.tmp / "a1", seed=1), "-m", MODEL, "-n", "medical", "--version", "v1")
    assert own.exit_code == 0, own.stderr
    assert refusals(fleet.recorder.take(), statements(fleet)) == []

    adapter = write_adapter(fleet.tmp / "a2", seed=1, base=OTHER_MODEL)
    other = fleet.run("adapter", "publish", adapter, "-m", OTHER_MODEL, "-n", "medical", "--version", "v1")
    assert other.exit_code == 0, other.stderr  # moto let it through; the role would not have
    calls = fleet.recorder.take()
    writes = [c for c in calls if c.operation == "PutObject"]
    assert writes and all(c.key.startswith(f"{PREFIX}/adapters/{OTHER_MODEL}/medical/v1/") for c in writes)
    assert len(refused_writes(calls, fleet)) == len(writes)  # every file and the manifest
    # Validation's read of the other base model is refused as well: the publish stops there.
    assert any(p.startswith(f"s3:GetObject on arn:aws:s3:::{fleet.location.bucket}/{PREFIX}/models/{OTHER_MODEL}/")
               for p in refusals(calls, statements(fleet)))  # fmt: skip


def test_promoting_on_another_stage_is_refused(fleet: Fleet) -> None:
    fleet.admin.upload_model(write_model(fleet.tmp / MODEL), MODEL, REVISION, uploader="admin")
    assert fleet.run("adapter", "publish", write_adapter(fleet.tmp / "a", seed=1), "-m", MODEL, "-n", "medical",
                     "--version", "v1").exit_code == 0  # fmt: skip
    fleet.recorder.take()

    assert fleet.run("adapter", "promote", "medical@v1", "-m", MODEL, "-s", STAGE).exit_code == 0
    assert refusals(fleet.recorder.take(), statements(fleet)) == []

    assert fleet.run("adapter", "promote", "medical@v1", "-m", MODEL, "-s", OTHER_STAGE).exit_code == 0
    calls = fleet.recorder.take()
    registry = f"arn:aws:s3:::{fleet.location.bucket}/{PREFIX}/registry/{MODEL}/{OTHER_STAGE}.json"
    (write,) = [c for c in calls if c.operation == "PutObject"]
    assert refused_writes(calls, fleet) == [f"s3:PutObject on {registry} (for {write})"]
