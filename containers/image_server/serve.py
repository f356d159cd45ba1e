"""Boot, serve and drain one image server: the container's life for a `kind: image` plan.

    plan + store from the environment (the entrypoint's settings) -> sync the pipeline, verified
    against its _manifest.json -> load it on the GPU -> serve -> on SIGTERM: new work 503 while
    queued and running images finish (at most the plan's drain_seconds) -> exit 0.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Mapping

import uvicorn

from llmfleet.containers.entrypoint.metrics import start_publisher
from llmfleet.containers.entrypoint.settings import EntrypointSettings
from llmfleet.containers.entrypoint.store_sync import StoreGateway
from llmfleet.containers.image_server.app import Batcher, create_app
from llmfleet.containers.image_server.pipeline import ImagePipeline
from llmfleet.model_store.contract.container import VLLM_API_KEY_ENV
from llmfleet.model_store.contract.request_limits import queue_images

log = logging.getLogger("llmfleet.image_server")


class DrainingServer(uvicorn.Server):
    """uvicorn whose first SIGTERM/SIGINT drains instead of closing connections: the flag makes the
    app answer new work 503, and the server stops once the batcher is idle or the drain is over."""

    def __init__(self, config: uvicorn.Config, batcher: Batcher, draining: threading.Event, drain_seconds: float):
        super().__init__(config)
        self.batcher, self.draining, self.drain_seconds = batcher, draining, drain_seconds

    def handle_exit(self, sig: int, frame) -> None:
        if self.draining.is_set():
            super().handle_exit(sig, frame)  # a second signal: stop now
            return
        log.info("signal %d: draining (new requests get 503; queued and running images finish)", sig)
        self.draining.set()
        threading.Thread(target=self._stop_when_idle, name="drain", daemon=True).start()

    def _stop_when_idle(self) -> None:
        if not self.batcher.wait_idle(self.drain_seconds):
            log.warning("drain: images still running after %ss; stopping anyway", self.drain_seconds)
        self.should_exit = True


def _stop_before_serving(signum: int, _frame) -> None:
    """SIGTERM while syncing or loading: nothing to drain, leave now (PID 1 would ignore it)."""
    raise SystemExit(128 + signum)


def serve_images(settings: EntrypointSettings, env: Mapping[str, str]) -> int:
    plan = settings.plan
    signal.signal(signal.SIGTERM, _stop_before_serving)
    signal.signal(signal.SIGINT, _stop_before_serving)
    gateway = StoreGateway.connect(settings)
    pipeline = ImagePipeline(gateway.model_location(), plan.image)
    batcher = Batcher(pipeline.generate, plan.image.max_batch, queue_images(plan.image))
    batcher.start()
    draining, stop = threading.Event(), threading.Event()
    app = create_app(plan, batcher, env.get(VLLM_API_KEY_ENV) or None, draining, settings.server_id, settings.target)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info", timeout_graceful_shutdown=5)
    server = DrainingServer(config, batcher, draining, plan.image.drain_seconds)
    start_publisher(batcher.metrics_text, lambda: 0, settings, stop)
    log.info("image server for %s on port %d", plan.model_name, settings.port)
    try:
        server.run()
    finally:
        stop.set()
    return 0
