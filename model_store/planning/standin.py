"""The plan a CPU vLLM can run in place of a GPU plan (local fleet, end-to-end tests).

Same model name, adapters and LoRA rank as the real plan, so promotion, rollback and drain
behave as in AWS; everything that needs a GPU (tensor parallelism, quantization kernels,
speculative decoding, streaming weights from S3) is taken out. Pure.
"""

from __future__ import annotations

from llmfleet.model_store.facts.architectures import ArchitectureFacts
from llmfleet.model_store.contract.plan import ImagePlan, ServingPlan

# The CPU build serves bfloat16 on AVX-512 hosts and falls back to it elsewhere; float16
# kernels are partial there (vllm/platforms/cpu.py supported dtypes, v0.32, 2026-11).
STANDIN_DTYPE = "bfloat16"
# A handful of concurrent sequences is all a 2-core CPU serves usefully.
STANDIN_MAX_NUM_SEQS = 8


def standin_plan(plan: ServingPlan, arch: ArchitectureFacts, *, max_model_len: int = 512) -> ServingPlan:
    """`plan` reshaped for the CPU vLLM serving the stand-in model described by `arch`.

    The context shrinks to `max_model_len` (capped by the stand-in's positions); batching
    fits that context; drain keeps the plan's shutdown timeout so drain tests mean the same.
    """
    context = min(max_model_len, arch.max_position_embeddings, plan.vllm.max_model_len)
    vllm = plan.vllm.model_copy(
        update={
            "dtype": STANDIN_DTYPE,
            "quantization": None,
            "kv_cache_dtype": "auto",
            "max_model_len": context,
            "tensor_parallel_size": 1,
            "max_num_seqs": min(STANDIN_MAX_NUM_SEQS, plan.vllm.max_num_seqs),
            "max_num_batched_tokens": max(context, STANDIN_MAX_NUM_SEQS),
            "speculative_config": None,
            "load_format": "auto",
        }
    )
    return plan.model_copy(
        update={
            "vllm": vllm,
            "tensor_parallel_size": 1,
            "reasons": [
                *plan.reasons,
                f"stand-in for CPU: {arch.model_type} stand-in, {STANDIN_DTYPE}, TP 1, context {context}, "
                "no quantization, speculative decoding or weight streaming",
            ],
        }
    )


# The image stand-in (scripts/standin_pipeline.py) makes a 64-pixel image in well under a second
# on two cores; 128 pixels and 200 steps leave room for a request that takes seconds (drain tests).
STANDIN_IMAGE_LIMITS = {"size": 64, "max_size": 128, "steps": 2, "max_steps": 200, "offload": "none"}


def standin_image_plan(plan: ImagePlan) -> ImagePlan:
    """`plan` reshaped for the CPU image server serving the tiny SD3 stand-in: small images,
    few steps, no offload; the model name, batch, limits on `n` and the drain stay the plan's."""
    return plan.model_copy(
        update={
            "image": plan.image.model_copy(update=STANDIN_IMAGE_LIMITS),
            "reasons": [*plan.reasons, "stand-in for CPU: the tiny SD3 pipeline, 64-pixel images by default, 128 at most"],
        }
    )
