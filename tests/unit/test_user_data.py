"""The GPU instances' user data, read as text: the model cache at every boot, and the warm pool's
pre-pull and ready signal only when there is a warm pool."""

from __future__ import annotations

import subprocess

from llmfleet.model_store.contract.plan import DEFAULT_MODEL_ROOT
from llmfleet.stacks.user_data import (
    LAUNCH_HOOK_NAME,
    MODEL_CACHE,
    MODEL_CACHE_SCRIPT,
    PER_BOOT_DIR,
    READY_UNIT,
    SERVING_UID,
    instance_user_data,
)

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/llmfleet:abc123"


def test_the_model_cache_is_set_up_at_every_boot_not_only_the_first() -> None:
    text = instance_user_data(region="us-east-1", image_uri=IMAGE, warm_pool=False)
    assert MODEL_CACHE_SCRIPT.startswith(PER_BOOT_DIR + "/")
    assert f"cat > {MODEL_CACHE_SCRIPT} <<'CACHE'\n{MODEL_CACHE}\nCACHE" in text
    # ...and run now: cloud-init ran this boot's per-boot scripts before the user data wrote it.
    assert text.splitlines().count(MODEL_CACHE_SCRIPT) == 1
    assert f"chown {SERVING_UID} {DEFAULT_MODEL_ROOT}" in MODEL_CACHE
    assert f"mountpoint -q {DEFAULT_MODEL_ROOT} && exit 0" in MODEL_CACHE
    assert "echo ECS_IMAGE_PULL_BEHAVIOR=prefer-cached >> /etc/ecs/ecs.config" in text


def test_without_a_warm_pool_nothing_is_pulled_or_signalled() -> None:
    text = instance_user_data(region="us-east-1", image_uri=IMAGE, warm_pool=False)
    for absent in ("ECS_WARM_POOLS_CHECK", "docker pull", LAUNCH_HOOK_NAME, READY_UNIT):
        assert absent not in text


def test_a_warm_pool_instance_pulls_the_image_and_signals_ready_after_cloud_init() -> None:
    text = instance_user_data(region="eu-west-1", image_uri=IMAGE, warm_pool=True)
    assert "echo ECS_WARM_POOLS_CHECK=true >> /etc/ecs/ecs.config" in text
    login = "aws ecr get-login-password --region eu-west-1 | docker login --username AWS --password-stdin "
    assert login + "123456789012.dkr.ecr.us-east-1.amazonaws.com" in text
    assert f"docker pull {IMAGE}" in text
    # The ready signal waits for cloud-init to finish (CDK appends the ECS cluster's lines after these).
    assert "After=cloud-final.service" in text
    assert f"systemctl start --no-block {READY_UNIT}" in text
    assert f"--lifecycle-hook-name {LAUNCH_HOOK_NAME}" in text and "--region eu-west-1" in text
    assert text.index("docker pull") < text.index(f"systemctl enable {READY_UNIT}")


def test_the_user_data_is_valid_bash() -> None:
    for warm_pool in (False, True):
        script = "#!/bin/bash\n" + instance_user_data(region="us-east-1", image_uri=IMAGE, warm_pool=warm_pool)
        result = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    result = subprocess.run(["bash", "-n"], input=MODEL_CACHE, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
