"""The container's exit code is vLLM's, and failures before vLLM say what to fix."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from llmfleet.containers.entrypoint.process_group import end_process_group
from llmfleet.containers.entrypoint.supervisor import EXIT_VLLM_STOPPED, exit_code_of, main
from llmfleet.model_store.errors import EXIT_BAD_INPUT

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("returncode", "asked_to_stop", "expected"),
    [
        (0, True, 0),  # drained on SIGTERM
        (0, False, EXIT_VLLM_STOPPED),  # vLLM left on its own: the orchestrator must replace it
        (1, False, 1),
        (-signal.SIGKILL, False, 137),  # OOM killer or a kill -9
        (-signal.SIGTERM, True, 143),
    ],
)
def test_exit_code_follows_vllm(returncode: int, asked_to_stop: bool, expected: int):
    assert exit_code_of(returncode, asked_to_stop=asked_to_stop) == expected


def test_missing_plan_fails_fast_with_a_clear_message(caplog: pytest.LogCaptureFixture):
    assert main({"LLMFLEET_STORE": "s3://llmfleet-store"}) == EXIT_BAD_INPUT
    assert "LLMFLEET_PLAN is not set" in caplog.text


def test_sigterm_before_vllm_starts_exits_at_once():
    """As PID 1 the default would ignore SIGTERM: the container must still stop while syncing."""
    script = textwrap.dedent(
        """
        import signal, time
        from llmfleet.containers.entrypoint.supervisor import _stop_before_vllm
        signal.signal(signal.SIGTERM, _stop_before_vllm)
        print("syncing", flush=True)
        time.sleep(60)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=REPO)
    assert child.stdout.readline() == b"syncing\n"

    child.send_signal(signal.SIGTERM)

    assert child.wait(timeout=30) == 128 + signal.SIGTERM


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("ignores_sigterm", [False, True])
def test_end_process_group_ends_orphans_of_a_dead_leader(ignores_sigterm: bool):
    """vLLM's EngineCore outlives a killed API server; the group is ended with SIGTERM, or SIGKILL."""
    orphan = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN) if {} else None; print('up', flush=True); time.sleep(60)"
    leader_script = textwrap.dedent(
        f"""
        import subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", {orphan.format(ignores_sigterm)!r}], stdout=subprocess.PIPE)
        child.stdout.readline()
        print(child.pid, flush=True)
        """
    )
    leader = subprocess.Popen([sys.executable, "-c", leader_script], stdout=subprocess.PIPE, start_new_session=True)
    orphan_pid = int(leader.stdout.readline())
    assert leader.wait(timeout=30) == 0
    assert os.getpgid(orphan_pid) == leader.pid, "the orphan is still in the leader's group"

    assert end_process_group(leader.pid, grace=1.0) is True

    assert not _running(orphan_pid)
    assert end_process_group(leader.pid, grace=1.0) is False  # nothing left: nothing to do
