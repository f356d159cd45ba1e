"""A tiny random-weight Qwen3 and peft LoRA adapters for it, made offline.

The local fleet and the end-to-end tests run the real vLLM (CPU build) with no model hub:
this module writes a checkpoint vLLM loads in seconds (tokenizer and chat template
included) and adapters whose outputs differ from the base model's.

    python -m llmfleet.scripts.standin_model DEST [--adapter NAME[:SEED] ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from llmfleet.model_store.contract.container import container_env
from llmfleet.model_store.facts.architectures import read_checkpoint_architecture
from llmfleet.model_store.contract.manifest import parse_fleet
from llmfleet.model_store.contract.plan import ServingPlan
from llmfleet.model_store.planning.text import plan_model
from llmfleet.model_store.planning.standin import standin_plan
from llmfleet.model_store.contract.targets import ECS

# Shapes from the measurements of the CPU build: its attention kernels reject head_dim 16
# and take 64; two layers keep the model loading in seconds.
HIDDEN_SIZE = 128
INTERMEDIATE_SIZE = 256
NUM_LAYERS = 2
NUM_HEADS = 2
NUM_KV_HEADS = 1
HEAD_DIM = 64
VOCAB_TARGET = 600
MAX_POSITIONS = 2048
LORA_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
STANDIN_MARKER = "llmfleet_standin"

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# Reasoning parsers (deepseek_r1, qwen3) refuse to start unless the vocabulary has these as
# single tokens; Qwen3 and DeepSeek-R1 tokenizers add them as non-special tokens, so they
# stay in the decoded text for the parser to split on.
THINK_TOKENS = ("<think>", "</think>")
# Qwen's ChatML layout, without tools: enough for vLLM's chat endpoint to render prompts.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_CORPUS = (
    "The quick brown fox jumps over the lazy dog. A fleet of servers answers questions about "
    "medicine, law and finance. Hello, how are you today? Tell me a story about the sea. "
    "What is two plus two? Adapters change the answers of a language model. 0123456789 "
    "system user assistant: You are a helpful assistant. Please summarise the contract."
)


def _train_tokenizer():
    """A byte-level BPE with ChatML special tokens and the reasoning markers, trained on a
    fixed corpus (deterministic)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_TARGET,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator([_CORPUS] * 20, trainer=trainer)
    core.add_tokens([AddedToken(token, special=False, normalized=False) for token in THINK_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        chat_template=CHAT_TEMPLATE,
    )


def make_tiny_model(dest: Path) -> Path:
    """Write a random-weight Qwen3 checkpoint (safetensors, tokenizer, chat template) to `dest`.

    `config.json` carries `llmfleet_standin: true` so nobody mistakes it for a real model.
    """
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer()
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN_SIZE,
        intermediate_size=INTERMEDIATE_SIZE,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS,
        num_key_value_heads=NUM_KV_HEADS,
        head_dim=HEAD_DIM,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        torch_dtype="bfloat16",
    )
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)
    config_path = dest / "config.json"
    written = json.loads(config_path.read_text())
    written[STANDIN_MARKER] = True
    config_path.write_text(json.dumps(written, indent=2) + "\n")
    return dest


def make_lora_adapter(model_dir: Path, dest: Path, *, rank: int = 8, seed: int = 0, base_model_name: str) -> Path:
    """Write a peft LoRA adapter for the model in `model_dir` to `dest` (safetensors).

    `init_lora_weights=False` draws both LoRA matrices at random, so the adapter's outputs
    differ from the base model's and from other seeds'. `base_model_name` is what the
    adapter declares as its base (adapter validation compares it with the served model).
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen3ForCausalLM

    dest = Path(dest)
    torch.manual_seed(seed)
    base = Qwen3ForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
    config = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        target_modules=list(LORA_TARGET_MODULES),
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(base, config)
    peft_model.save_pretrained(dest, safe_serialization=True)
    config_path = dest / "adapter_config.json"
    written = json.loads(config_path.read_text())
    written["base_model_name_or_path"] = base_model_name
    config_path.write_text(json.dumps(written, indent=2) + "\n")
    return dest


def standin_serving_plan(
    model_dir: Path, *, model_name: str, stage: str = "test", max_rank: int = 16, max_loras: int = 4, lora: bool = True
) -> ServingPlan:
    """The plan the CPU vLLM runs for the stand-in in `model_dir`: planned like a real model
    (fleet manifest -> planner), then reshaped by `standin_plan`. Without `lora` the CPU build
    compiles the model (with LoRA it runs eagerly), which the compile-cache tests need."""
    manifest = parse_fleet(
        json.dumps(
            {
                "name": "standin",
                "stage": stage,
                "models": [
                    {
                        "name": model_name,
                        "source": str(model_dir),
                        "max_model_len": 512,
                        **({"lora": {"max_rank": max_rank, "max_loras": max_loras}} if lora else {}),
                    }
                ],
            }
        )
    )
    arch = read_checkpoint_architecture(model_dir)
    return standin_plan(plan_model(manifest, manifest.models[0], arch), arch)


def entrypoint_environment(
    plan: ServingPlan,
    *,
    store_uri: str,
    endpoint_url: str | None,
    model_root: Path,
    port: int,
    server_id: str = "standin-0",
    poll_seconds: float = 1.0,
    metrics_seconds: float = 60.0,
    compile_cache: bool | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment `python -m llmfleet.containers.entrypoint` needs to serve `plan` on this machine."""
    env = dict(os.environ if base is None else base)
    env.update(
        container_env(
            plan,
            store_uri,
            ECS.name,  # as the local fleet: a stand-in for an ECS task
            endpoint_url=endpoint_url,
            model_root=str(model_root),
            port=port,
            server_id=server_id,
            poll_seconds=poll_seconds,
            metrics_seconds=metrics_seconds,
            compile_cache=compile_cache,
        )
    )
    # The CPU build sizes its KV cache from this (GiB), not from GPU memory.
    env["VLLM_CPU_KVCACHE_SPACE"] = "1"
    return env


def wait_until_healthy(url: str, process: subprocess.Popen, *, timeout: float, log: Path | None = None) -> float:
    """Block until `url`/health answers 200; returns the seconds waited. RuntimeError (with
    the log's tail) if the process exits first or `timeout` passes."""
    import httpx2

    started = time.monotonic()
    with httpx2.Client(base_url=url, timeout=5) as http:
        while time.monotonic() - started < timeout:
            if process.poll() is not None:
                tail = log.read_text(errors="replace")[-4000:] if log else ""
                raise RuntimeError(f"server exited with {process.returncode} before it was healthy:\n{tail}")
            try:
                if http.get("/health").status_code == 200:
                    return time.monotonic() - started
            except httpx2.HTTPError:
                pass
            time.sleep(0.2)
    tail = log.read_text(errors="replace")[-4000:] if log else ""
    raise RuntimeError(f"{url}/health not 200 within {timeout} s:\n{tail}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, help="Directory for the model; adapters go to DEST-adapters/NAME.")
    parser.add_argument("--base-model-name", default="qwen3-small", help="Base model name the adapters declare.")
    parser.add_argument("--adapter", action="append", default=[], metavar="NAME[:SEED]")
    args = parser.parse_args(argv)
    model_dir = make_tiny_model(args.dest)
    print(model_dir)
    for index, spec in enumerate(args.adapter):
        name, _, seed = spec.partition(":")
        target = args.dest.parent / f"{args.dest.name}-adapters" / name
        print(make_lora_adapter(model_dir, target, seed=int(seed or index), base_model_name=args.base_model_name))


if __name__ == "__main__":
    main()
