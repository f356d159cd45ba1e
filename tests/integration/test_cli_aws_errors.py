"""Every command that talks to AWS, run as a user without a working AWS setup would run it: no
credentials, no region, an SSO session that is gone, a profile that does not exist, an
expired token, an endpoint nothing answers. Each is one line on stderr saying what to set,
and the exit code the README documents (2: fix the environment; 1: AWS unreachable). Every
other command, run the same way, does its work or fails for its own reason in one line; the
two lists together hold every command of the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import typer.main
from typer.core import TyperCommand, TyperGroup

from llmfleet.model_store.errors import EXIT_BAD_INPUT, EXIT_REFUSED
from tests.conftest import REPO, free_port
from llmfleet.scripts.cli import app
from tests.integration.conftest import write_adapter, write_model
from tests.integration.hub_server import LocalHub

FLEET_YAML = """
name: demo
region: us-east-1
stage: prod
store: s3://llmfleet-store
models:
  - name: tiny
    architecture: Qwen/Qwen3-0.6B
    lora: {max_rank: 16}
  - name: tiny-local
    source: model
    max_model_len: 1024
    lora: {max_rank: 16}
gateway: {enabled: true, consumers: consumers.yaml}
"""
SSO_PROFILE = """
[profile gone]
sso_session = corp
sso_account_id = 111111111111
sso_role_name = Publisher
region = us-east-1

[sso-session corp]
sso_start_url = https://example.awsapps.com/start
sso_region = us-east-1
"""
# Store and stage come from ./fleet.yaml: none of these names one.
AWS_COMMANDS = {
    "model upload": ["model", "upload", "model", "-m", "tiny"],
    "adapter publish": ["adapter", "publish", "adapter", "-m", "tiny", "-n", "medical"],
    "adapter promote": ["adapter", "promote", "medical@v1", "-m", "tiny"],
    "adapter rollback": ["adapter", "rollback", "medical", "-m", "tiny"],
    "adapter retire": ["adapter", "retire", "medical", "-m", "tiny"],
    "adapter history": ["adapter", "history", "medical", "-m", "tiny"],
    "adapter list": ["adapter", "list", "-m", "tiny"],
    "adapter versions": ["adapter", "versions", "medical", "-m", "tiny"],
    "status": ["status"],  # no local fleet: the store's registry
    "status --aws": ["status", "--aws"],
    "model import": ["model", "import", "acme/tiny-chat", "-m", "tiny"],  # the local Hub answers first
    "invoke --sagemaker": ["invoke", "tiny", "Hello", "--sagemaker", "demo-tiny", "--region", "us-east-1"],
    "invoke --sagemaker --stream": ["invoke", "tiny", "Hello", "--sagemaker", "demo-tiny", "--region", "us-east-1", "--stream"],
    "gateway keys create": ["gateway", "keys", "create", "-c", "team"],
    "gateway keys rotate": ["gateway", "keys", "rotate", "-c", "team"],
    "gateway keys list": ["gateway", "keys", "list"],
    "invoke --sagemaker --out": ["invoke", "tiny", "a cat", "--sagemaker", "demo-tiny", "--region", "us-east-1", "--out", "cat.png"],
}


# The commands that need no AWS, run without it as well: (arguments, exit code, what stderr holds:
# nothing on success, else the one line's words). The local Hub is the only network.
OFFLINE_COMMANDS = {
    "plan": (["plan"], 0, ()),
    "catalog": (["catalog"], 0, ()),
    "schema": (["schema", "-o", "schema.json"], 0, ()),
    "adapter validate": (["adapter", "validate", "adapter-local", "-m", "tiny-local"], 0, ()),
    "invoke": (["invoke", "tiny", "Hello"], EXIT_BAD_INPUT, ("no --url and no local fleet",)),
    "verify": (["verify"], EXIT_REFUSED, ("needs an NVIDIA GPU",)),
    "local env": (["local", "env"], EXIT_BAD_INPUT, ("no local fleet", "llmfleet local up")),
    "local down": (["local", "down"], 0, ()),
    "usage": (["usage"], EXIT_BAD_INPUT, ("no usage database", "LLMFLEET_GATEWAY_DATABASE_URL")),
}
RUN_ELSEWHERE = {
    "lock": "below: it notes what to set and carries on with the Hub",
    "local up": "tests/e2e/test_local_fleet.py: vLLM against moto, with moto's credentials whatever the machine's",
}


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """A project folder: fleet.yaml, a model and an adapter directory, empty AWS config files;
    the Hub is a local one holding `acme/tiny-chat`."""
    (tmp_path / "fleet.yaml").write_text(FLEET_YAML)
    (tmp_path / "consumers.yaml").write_text("consumers: [{name: team, models: ['*']}]\n")
    write_model(tmp_path / "model")
    write_adapter(tmp_path / "adapter")
    write_adapter(tmp_path / "adapter-local", base="tiny-local")
    for name in ("config", "credentials"):
        (tmp_path / "aws" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "aws" / name).write_text("")
    files = {path.name: path.read_bytes() for path in (tmp_path / "model").iterdir()}
    with LocalHub({"acme/tiny-chat": {"commits": {"a" * 40: files}, "refs": {"main": "a" * 40}}}) as hub:
        (tmp_path / "hub").write_text(hub.endpoint)
        yield tmp_path


def llmfleet(workdir: Path, *args: str, **aws: str) -> subprocess.CompletedProcess:
    """The CLI in `workdir` with no AWS_* variable of this machine: empty AWS config and
    credentials files, no instance metadata service, the local Hub, then `aws` on top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LLMFLEET_", "HF_"))}
    env |= {
        "PYTHONPATH": str(REPO),
        "HOME": str(workdir),
        "AWS_CONFIG_FILE": str(workdir / "aws" / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(workdir / "aws" / "credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "HF_ENDPOINT": (workdir / "hub").read_text(),
        "HF_HOME": str(workdir / "hf"),
        "COLUMNS": "400",  # a message is one line however long
    } | aws
    return subprocess.run(
        [sys.executable, "-m", "llmfleet.scripts", *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=120
    )


def one_line(result: subprocess.CompletedProcess, code: int, *words: str) -> str:
    assert result.returncode == code, result.stdout + result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ") and all(word in line for word in words), line
    return line


@pytest.mark.parametrize("args", AWS_COMMANDS.values(), ids=AWS_COMMANDS.keys())
def test_without_credentials_every_aws_command_says_what_to_set(workdir: Path, args: list[str]) -> None:
    one_line(llmfleet(workdir, *args), EXIT_BAD_INPUT, "no AWS credentials found", "AWS_PROFILE", "AWS_ACCESS_KEY_ID")


@pytest.mark.parametrize("command", OFFLINE_COMMANDS)
def test_without_credentials_every_other_command_works_or_fails_in_one_line(workdir: Path, command: str) -> None:
    args, code, words = OFFLINE_COMMANDS[command]
    result = llmfleet(workdir, *args)
    if code:
        one_line(result, code, *words)
    else:
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr and "error:" not in result.stderr, result.stderr


def command_paths(command: TyperCommand | TyperGroup, prefix: str = "") -> set[str]:
    if isinstance(command, TyperGroup):
        return {path for name, sub in command.commands.items() for path in command_paths(sub, f"{prefix}{name} ")}
    return {prefix.strip()}


def test_the_lists_hold_every_command_of_the_cli() -> None:
    listed = {name.split(" --")[0] for name in AWS_COMMANDS} | set(OFFLINE_COMMANDS) | set(RUN_ELSEWHERE)
    assert command_paths(typer.main.get_command(app)) == listed


def test_json_after_the_command_also_gets_the_error_object(workdir: Path) -> None:
    result = llmfleet(workdir, "adapter", "list", "-m", "tiny", "--json")
    line = one_line(result, EXIT_BAD_INPUT, "no AWS credentials found")
    assert json.loads(result.stdout) == {"error": line.removeprefix("error: "), "rule": None, "kind": "AwsSetupError"}


def test_debug_after_the_command_shows_the_traceback_first(workdir: Path) -> None:
    result = llmfleet(workdir, "adapter", "list", "-m", "tiny", "--debug")
    assert result.returncode == EXIT_BAD_INPUT
    assert result.stderr.startswith("Traceback (most recent call last):")
    assert "botocore.exceptions.NoCredentialsError" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: no AWS credentials found")


def test_without_a_region_sagemaker_calls_say_how_to_give_one(workdir: Path) -> None:
    result = llmfleet(workdir, "invoke", "tiny", "Hello", "--sagemaker", "demo-tiny", AWS_ACCESS_KEY_ID="a", AWS_SECRET_ACCESS_KEY="b")
    one_line(result, EXIT_BAD_INPUT, "no AWS region", "AWS_DEFAULT_REGION", "--region")


def test_a_lapsed_sso_session_and_an_unknown_profile(workdir: Path) -> None:
    (workdir / "aws" / "config").write_text(SSO_PROFILE)
    one_line(llmfleet(workdir, "adapter", "list", "-m", "tiny", AWS_PROFILE="gone"), EXIT_BAD_INPUT, "SSO session", "aws sso login")
    one_line(llmfleet(workdir, "status", "--aws", AWS_PROFILE="nobody"), EXIT_BAD_INPUT, "(nobody) could not be found", "AWS_PROFILE")


class ExpiredTokenHandler(BaseHTTPRequestHandler):
    """What AWS answers a request signed with an expired session token: S3's XML error, the
    JSON protocol's for SageMaker."""

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("X-Amz-Target"):
            body = json.dumps({"__type": "ExpiredTokenException", "message": "The security token included in the request is expired"})
            content_type = "application/x-amz-json-1.1"
        else:
            body = "<Error><Code>ExpiredToken</Code><Message>The provided token has expired.</Message></Error>"
            content_type = "application/xml"
        self.send_response(400)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def expired_aws() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ExpiredTokenHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("command", ["adapter list", "adapter versions", "invoke --sagemaker"])
def test_an_expired_token_says_to_renew_it(workdir: Path, expired_aws: str, command: str) -> None:
    credentials = {"AWS_ACCESS_KEY_ID": "ASIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_SESSION_TOKEN": "expired"}
    result = llmfleet(workdir, *AWS_COMMANDS[command], AWS_ENDPOINT_URL=expired_aws, **credentials)
    one_line(result, EXIT_BAD_INPUT, "AWS credentials have expired", "aws sso login", "AWS_SESSION_TOKEN")


def test_an_endpoint_nothing_answers_is_one_line_and_exit_1(workdir: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # bound then released: nothing listens there
    credentials = {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b", "AWS_DEFAULT_REGION": "us-east-1"}
    result = llmfleet(workdir, *AWS_COMMANDS["adapter list"], AWS_ENDPOINT_URL=closed, **credentials)
    one_line(result, EXIT_REFUSED, closed, "AWS_ENDPOINT_URL")


def test_lock_without_credentials_notes_what_to_set_and_carries_on(workdir: Path) -> None:
    result = llmfleet(workdir, "lock", HF_HUB_OFFLINE="1")
    assert result.returncode == 0, result.stderr
    assert "note: model 'tiny': store not used (no AWS credentials found: set AWS_PROFILE" in result.stderr
