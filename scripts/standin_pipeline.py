"""A tiny random-weight Stable Diffusion 3 pipeline, made offline: the image models' stand-in.

Built from diffusers' and transformers' config classes (SD3 transformer, 16-channel VAE, two
CLIP text encoders with projection, a T5 encoder) with tokenizers trained here on a fixed
corpus, so the local fleet and the end-to-end tests serve a real `StableDiffusion3Pipeline`
on CPU in seconds with no model hub. Its images are noise: it proves the serving path, not
the art. `model_index.json` carries `llmfleet_standin: true`.

`tiny_components()` is also what scripts/image_gpu_bench.py uses for the tokenizers: the
measured model is built from real configs, its tokenizers never leave token ids' meaning.

    python -m llmfleet.scripts.standin_pipeline DEST
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from llmfleet.model_store.planning import standin
from llmfleet.model_store.contract.plan import ImagePlan
from llmfleet.model_store.planning.image import plan_image_model
from llmfleet.model_store.contract.manifest import parse_fleet
from llmfleet.model_store.facts.pipelines import facts_from_record, read_pipeline

STANDIN_MARKER = "llmfleet_standin"
CLIP_VOCAB = 300
T5_VOCAB = 300
# Small enough to generate a 64-pixel image in well under a second on two cores; large enough
# for the pipeline's own shape rules (VAE scale 8 x patch 2 = sides in multiples of 16).
TRANSFORMER = {
    "sample_size": 32,
    "patch_size": 2,
    "in_channels": 16,
    "num_layers": 1,
    "attention_head_dim": 8,
    "num_attention_heads": 4,
    "caption_projection_dim": 32,
    "joint_attention_dim": 32,
    "pooled_projection_dim": 64,
    "out_channels": 16,
    "pos_embed_max_size": 64,
    "qk_norm": "rms_norm",
}
VAE = {
    "block_out_channels": [32, 32, 32, 32],
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 16,
    "layers_per_block": 1,
    "norm_num_groups": 32,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "sample_size": 64,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
    "shift_factor": 0.0609,
    "scaling_factor": 1.5305,
}
CLIP = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 4, "projection_dim": 32}
T5 = {"d_model": 32, "d_kv": 8, "d_ff": 37, "num_layers": 1, "num_heads": 4, "relative_attention_num_buckets": 8}
_CORPUS = (
    "a cat sitting on a red chair, watercolor. A photo of the sea at sunset with boats. "
    "An astronaut riding a horse on the moon, digital art. A bowl of fruit, oil painting. "
    "0123456789 portrait landscape city night forest mountain river bird dog flower."
)


def _clip_tokenizer(work: Path):
    """A byte-level BPE with CLIP's special tokens, saved as vocab.json + merges.txt."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    core = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=CLIP_VOCAB,
        special_tokens=["<|startoftext|>", "<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    core.train_from_iterator([_CORPUS] * 10, trainer=trainer)
    core.model.save(str(work))
    return CLIPTokenizer(vocab=str(work / "vocab.json"), merges=str(work / "merges.txt"), model_max_length=77)


def _t5_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import T5TokenizerFast

    core = Tokenizer(models.Unigram())
    core.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=T5_VOCAB, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>", show_progress=False
    )
    core.train_from_iterator([_CORPUS] * 10, trainer=trainer)
    return T5TokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", extra_ids=0, model_max_length=512)


def tiny_tokenizers() -> dict[str, Any]:
    """The three tokenizers an SD3 pipeline takes (CLIP, CLIP, T5), trained offline."""
    with tempfile.TemporaryDirectory() as work:
        clip = _clip_tokenizer(Path(work))
    return {"tokenizer": clip, "tokenizer_2": clip, "tokenizer_3": _t5_tokenizer()}


def tiny_components(seed: int = 0) -> dict[str, Any]:
    """Every component of a tiny random-weight StableDiffusion3Pipeline."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    tokenizers = tiny_tokenizers()
    torch.manual_seed(seed)
    clip = dict(CLIP, vocab_size=len(tokenizers["tokenizer"]), max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    return {
        "transformer": SD3Transformer2DModel(**TRANSFORMER),
        "vae": AutoencoderKL(**VAE),
        "text_encoder": CLIPTextModelWithProjection(CLIPTextConfig(**clip)),
        "text_encoder_2": CLIPTextModelWithProjection(CLIPTextConfig(**clip)),
        "text_encoder_3": T5EncoderModel(T5Config(**T5, vocab_size=len(tokenizers["tokenizer_3"]))),
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=3.0),
        **tokenizers,
    }


def make_tiny_pipeline(dest: Path) -> Path:
    """Write the stand-in pipeline (safetensors, tokenizers, scheduler) to `dest`, marked as one."""
    from diffusers import StableDiffusion3Pipeline

    dest = Path(dest)
    StableDiffusion3Pipeline(**tiny_components()).save_pretrained(dest, safe_serialization=True)
    index_path = dest / "model_index.json"
    index = json.loads(index_path.read_text())
    index[STANDIN_MARKER] = True
    index_path.write_text(json.dumps(index, indent=2) + "\n")
    return dest


def standin_image_plan(pipeline_dir: Path, *, model_name: str, stage: str = "test") -> ImagePlan:
    """The stand-in's plan, made like a real one (manifest -> image planner, up to 4 images in
    flight), then reshaped for the CPU by `model_store.planning.standin.standin_image_plan`."""
    manifest = parse_fleet(
        json.dumps(
            {
                "name": "standin",
                "stage": stage,
                "models": [
                    {"name": model_name, "kind": "image", "source": str(pipeline_dir), "serving": {"target_concurrency": 4}}
                ],
            }
        )
    )
    model_index, components = read_pipeline(pipeline_dir)
    facts = facts_from_record(model_index, components, str(pipeline_dir))
    return standin.standin_image_plan(plan_image_model(manifest, manifest.models[0], facts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path)
    print(make_tiny_pipeline(parser.parse_args().dest))


if __name__ == "__main__":
    main()
