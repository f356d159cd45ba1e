"""The image server end to end on CPU: a tiny random-weight SD3 pipeline (a labelled stand-in,
scripts/standin_pipeline.py) uploaded to moto's S3 through the model store, synced and verified
by the real entrypoint, served by diffusers; clients are the OpenAI SDK and the SageMaker payload.
"""

from __future__ import annotations

import base64
import io
import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx2
import openai
import pytest
from PIL import Image

from llmfleet.containers.image_server.app import PIPELINE_CALLS
from llmfleet.model_store.contract.container import VLLM_API_KEY_ENV
from llmfleet.model_store.store.store import ModelStore, StoreLocation
from llmfleet.scripts.standin_model import entrypoint_environment
from llmfleet.scripts.standin_pipeline import make_tiny_pipeline, standin_image_plan
from tests.conftest import free_port
from llmfleet.containers.image_server.validation import MAX_BODY_BYTES
from tests.e2e.conftest import Server, aws_credentials, client_from_outside, start_entrypoint, wait_healthy, wait_until

MODEL = "tiny-sd3"
API_KEY = "test-image-key"
PREFIX = "fleet"


def png(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    assert image.format == "PNG"
    return image


@pytest.fixture(scope="module")
def image_store(moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """The stand-in pipeline uploaded as models/tiny-sd3/main; returns (store uri, work dir)."""
    work = tmp_path_factory.mktemp("image-server")
    pipeline = make_tiny_pipeline(work / "pipeline")
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    s3.create_bucket(Bucket="llmfleet-image-server")
    ModelStore(StoreLocation("llmfleet-image-server", PREFIX), s3).upload_model(pipeline, MODEL, "main", uploader="e2e")
    return f"s3://llmfleet-image-server/{PREFIX}", work


def boot(image_store: tuple[str, Path], moto_endpoint: str, name: str) -> Server:
    store_uri, work = image_store
    plan = standin_image_plan(work / "pipeline", model_name=MODEL)
    port = free_port()
    env = entrypoint_environment(
        plan, store_uri=store_uri, endpoint_url=moto_endpoint, model_root=work / f"{name}-cache", port=port,
        server_id=name, metrics_seconds=1, base=aws_credentials(moto_endpoint),
    )  # fmt: skip
    env[VLLM_API_KEY_ENV] = API_KEY
    tmp = work / f"{name}-tmp"
    tmp.mkdir(exist_ok=True)
    server = Server(start_entrypoint(env, work / f"{name}.log"), port, work / f"{name}.log", tmp)
    try:
        wait_healthy(server, timeout=180)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="module")
def server(image_store: tuple[str, Path], moto_endpoint: str) -> Iterator[Server]:
    server = boot(image_store, moto_endpoint, "images-a")
    yield server
    server.stop()


def pipeline_calls(server: Server) -> float:
    for line in server.client().get("/metrics").text.splitlines():
        if line.startswith(PIPELINE_CALLS + " "):
            return float(line.split()[1])
    raise AssertionError(f"{PIPELINE_CALLS} missing from /metrics")


def test_openai_sdk_gets_decodable_pngs_of_the_requested_size(server: Server):
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY)
    result = client.images.generate(
        model=MODEL, prompt="a cat on a chair", n=2, size="64x96", response_format="b64_json",
        extra_body={"seed": 7, "num_inference_steps": 2},
    )  # fmt: skip
    images = [png(item.b64_json) for item in result.data]
    assert [image.size for image in images] == [(64, 96), (64, 96)]
    assert images[0].tobytes() != images[1].tobytes()  # seeds 7 and 8


def test_a_seed_gives_the_same_image_and_another_seed_another(server: Server):
    def generate(seed: int) -> bytes:
        body = {"prompt": "a red boat", "size": "64x64", "seed": seed}
        response = server.client().post("/v1/images/generations", json=body, headers={"Authorization": f"Bearer {API_KEY}"})
        assert response.status_code == 200, response.text
        return png(response.json()["data"][0]["b64_json"]).tobytes()

    assert generate(3) == generate(3)
    assert generate(3) != generate(4)


def test_sagemaker_payload_returns_a_png(server: Server):
    payload = {"inputs": "a bowl of fruit", "parameters": {"width": 80, "height": 48, "num_inference_steps": 1, "seed": 1}}
    response = server.client().post("/invocations", content=json.dumps(payload), headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    (image,) = response.json()["images"]
    assert png(image).size == (80, 48)


def test_the_front_door_answers_remote_callers_before_the_body_and_off_the_allowlist(server: Server):
    """From this machine's non-loopback address, as through the load balancer (an ECS task)."""
    before = pipeline_calls(server)
    auth = {"Authorization": f"Bearer {API_KEY}", "content-type": "application/json"}
    with client_from_outside(server.port, timeout=30) as http:
        statuses = {
            "no key, 8 MiB": http.post("/v1/images/generations", content=b" " * (8 * 2**20), headers={"content-type": "application/json"}).status_code,
            "oversize": http.post("/v1/images/generations", content=b" " * (MAX_BODY_BYTES + 1), headers=auth).status_code,
            "invocations on ecs": http.post("/invocations", json={"inputs": "a cat"}, headers=auth).status_code,
            "metrics": http.get("/metrics", headers=auth).status_code,
            "adapters without key": http.get("/llmfleet/adapters").status_code,
            "health": http.get("/health").status_code,
        }
    assert statuses == {"no key, 8 MiB": 401, "oversize": 413, "invocations on ecs": 404, "metrics": 403, "adapters without key": 401, "health": 200}
    assert pipeline_calls(server) == before


def test_the_api_key_guards_the_images_route(server: Server):
    response = server.client().post("/v1/images/generations", json={"prompt": "a cat"})
    assert response.status_code == 401
    response = server.client().post("/v1/images/generations", json={"prompt": "a cat"}, headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "a cat", "size": "72x64"}, "size"),  # not a multiple of 16
        ({"prompt": "a cat", "size": "256x256"}, "size"),  # over the plan's max_size 128
        ({"prompt": "a cat", "n": 5}, "n"),  # over max_images 4
        ({"prompt": "a cat", "num_inference_steps": 0}, "num_inference_steps"),
        ({"prompt": "a cat", "num_inference_steps": 1000}, "num_inference_steps"),
        ({"prompt": "  "}, "prompt"),
        (b"{not json", "body"),
    ],
)
def test_malformed_requests_get_400_naming_the_field_and_never_reach_the_pipeline(server: Server, body, field):
    before = pipeline_calls(server)
    headers = {"Authorization": f"Bearer {API_KEY}", "content-type": "application/json"}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = server.client().post("/v1/images/generations", content=content, headers=headers)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == field
    assert error["message"].startswith(f"{field}:")
    assert pipeline_calls(server) == before


def test_malformed_sagemaker_payload_names_the_parameter(server: Server):
    before = pipeline_calls(server)
    payload = {"inputs": "a cat", "parameters": {"width": 1000}}
    response = server.client().post("/invocations", content=json.dumps(payload), headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "parameters.width"
    assert pipeline_calls(server) == before


def test_drain_finishes_the_image_in_flight_and_answers_new_work_503(image_store, moto_endpoint: str):
    server = boot(image_store, moto_endpoint, "images-drain")
    try:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        slow = {"prompt": "a long one", "size": "128x128", "num_inference_steps": 150, "seed": 1}
        result: dict[str, httpx2.Response] = {}
        worker = threading.Thread(
            target=lambda: result.setdefault("slow", server.client(timeout=120).post("/v1/images/generations", json=slow, headers=headers))
        )
        worker.start()
        wait_until(lambda: pipeline_calls(server) >= 1, "the slow image reached the pipeline", timeout=30)
        server.process.send_signal(signal.SIGTERM)
        wait_until(lambda: server.client().get("/health").status_code == 503, "health says draining", timeout=10)
        refused = server.client().post("/v1/images/generations", json={"prompt": "new work", "size": "64x64"}, headers=headers)
        assert refused.status_code == 503
        assert refused.headers["retry-after"]
        worker.join(timeout=120)
        assert result["slow"].status_code == 200, result["slow"].text
        assert png(result["slow"].json()["data"][0]["b64_json"]).size == (128, 128)
        assert server.process.wait(timeout=60) == 0
    finally:
        server.stop()


def test_llmfleet_invoke_writes_the_png(server: Server, tmp_path: Path):
    from typer.testing import CliRunner

    from llmfleet.scripts.cli import app

    out = tmp_path / "cat.png"
    args = ["invoke", MODEL, "a cat", "--url", server.url, "--api-key", API_KEY, "--out", str(out), "--size", "96x64", "--seed", "5", "-n", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert [png(base64.b64encode(p.read_bytes()).decode()).size for p in (tmp_path / "cat-1.png", tmp_path / "cat-2.png")] == [(96, 64)] * 2
