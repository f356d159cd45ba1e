"""Ending vLLM's whole process group: the API server, its EngineCore and workers.

Shared by the container's supervisor and `llmfleet verify`, and light to import (psutil only),
so that the CLI does not pull in the container's server dependencies.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time

import psutil

# What is left of vLLM's group (EngineCore, workers) gets SIGTERM, then SIGKILL after this.
GROUP_GRACE_SECONDS = 5.0

log = logging.getLogger("llmfleet.entrypoint")


def _group_members(pgid: int) -> list[int]:
    """Pids of the group's processes that still run (a zombie holds nothing)."""
    members = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process.pid)
    return members


def _reap_group(pgid: int) -> None:
    """Collect exited members that are our children: as PID 1 (SageMaker's `docker run`)
    orphans are re-parented to us and would stay zombies."""
    while True:
        try:
            pid, _ = os.waitpid(-pgid, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _wait_group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _group_members(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
        _reap_group(pgid)
    return True


def end_process_group(pgid: int, grace: float = GROUP_GRACE_SECONDS) -> bool:
    """End every process of vLLM's group; True if any was left.

    PR_SET_PDEATHSIG covers only the API server: when it dies its EngineCore and workers
    would live on as orphans holding memory (and on a GPU, the device).
    """
    _reap_group(pgid)
    if not _group_members(pgid):
        return False
    for signum in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signum)
        if _wait_group_gone(pgid, grace):
            return True
    log.error("vLLM's process group %d survives SIGKILL: pids %s", pgid, _group_members(pgid))
    return True
