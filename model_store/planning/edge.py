"""Edge limits derived from a plan: what one client may send before it crowds out the others."""

from __future__ import annotations

import math

from llmfleet.model_store.gateway.contract import GatewaySizing, REQUESTS_PER_SECOND_PER_TASK
from llmfleet.model_store.contract.plan import AnyPlan
from llmfleet.model_store.planning.image import ASSUMED_IMAGE_SECONDS
from llmfleet.model_store.planning.lifecycle import ASSUMED_REQUEST_SECONDS
from llmfleet.model_store.contract.kinds import kind

# WAF counts a rate-based rule's requests over one of 60/120/300/600 s; the shortest reacts fastest.
RATE_WINDOW_SECONDS = 60
# WAF's smallest rate-based limit.
MIN_RATE_LIMIT = 10


def client_rate_limit(plan: AnyPlan, window_seconds: int = RATE_WINDOW_SECONDS) -> int:
    """Requests per `window_seconds` from one client IP at which it alone would fill every slot of the
    model at full scale-out: max_capacity servers x max_num_seqs sequences, each slot held for about
    ASSUMED_REQUEST_SECONDS. A client faster than that starves everyone else, so it is cut off there.
    An image server makes one image at a time per GPU, each for about ASSUMED_IMAGE_SECONDS."""
    if not kind(plan.kind).makes_tokens:
        return max(MIN_RATE_LIMIT, math.ceil(plan.autoscaling.max_capacity * window_seconds / ASSUMED_IMAGE_SECONDS))
    slots = plan.autoscaling.max_capacity * plan.vllm.max_num_seqs
    return max(MIN_RATE_LIMIT, math.ceil(slots * window_seconds / ASSUMED_REQUEST_SECONDS))


def gateway_client_rate_limit(sizing: GatewaySizing, window_seconds: int = RATE_WINDOW_SECONDS) -> int:
    """Requests per `window_seconds` from one client IP at which it alone would fill the fleet's gateway
    at full scale-out (max_tasks x the requests per second a task holds). Each consumer's own rpm and
    tpm are the gateway's to enforce; this only cuts off an address that would crowd out all of them."""
    return max(MIN_RATE_LIMIT, math.ceil(sizing.max_tasks * REQUESTS_PER_SECOND_PER_TASK * window_seconds))
