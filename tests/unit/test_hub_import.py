"""The decisions of `llmfleet model import`: which files, what part sizes, what a rerun reuses."""

from __future__ import annotations

import hashlib

import pytest

from llmfleet.model_store.facts.hub import HubFile, HubNotFound
from llmfleet.model_store.store.hub_import import (
    DEFAULT_PART_SIZE,
    HubRef,
    MIB,
    parse_hub_ref,
    part_holds,
    part_lengths,
    part_size_for,
    plan_file,
    S3_MAX_PARTS,
    select_files,
)
from llmfleet.model_store.store.store import PartRecord, StoreError, StoreRefused

pytestmark = pytest.mark.unit

SHA = "e" * 64


def hub_file(path: str, size: int = 10, sha256: str | None = None) -> HubFile:
    return HubFile(path=path, size=size, sha256=sha256)


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("Qwen/Qwen3-0.6B", HubRef("Qwen/Qwen3-0.6B", None)),
        ("Qwen/Qwen3-0.6B@v1.0", HubRef("Qwen/Qwen3-0.6B", "v1.0")),
        ("hf://meta-llama/Llama-3.1-8B@" + "a" * 40, HubRef("meta-llama/Llama-3.1-8B", "a" * 40)),
        ("acme/tiny@refs/pr/1", HubRef("acme/tiny", "refs/pr/1")),
    ],
)
def test_a_hub_ref_is_a_repo_id_and_an_optional_revision(ref: str, expected: HubRef):
    assert parse_hub_ref(ref) == expected


@pytest.mark.parametrize("ref", ["Qwen3", "a/b/c", "acme/tiny@", "acme/../x", "acme/tiny@-rf", "/tiny", "acme/ti ny"])
def test_anything_else_is_refused_naming_the_form(ref: str):
    with pytest.raises(HubNotFound, match="org/name or org/name@revision"):
        parse_hub_ref(ref)


def test_other_weight_formats_are_left_out_beside_safetensors_and_hidden_files_always():
    files = [
        hub_file("config.json"),
        hub_file("model.safetensors", sha256=SHA),
        hub_file("pytorch_model.bin", sha256=SHA),
        hub_file("original/consolidated.00.pth", sha256=SHA),
        hub_file("tokenizer.model", sha256=SHA),
        hub_file(".gitattributes"),
    ]
    kept, left_out = select_files(files)
    assert [f.path for f in kept] == ["config.json", "model.safetensors", "tokenizer.model"]
    assert left_out == [".gitattributes", "original/consolidated.00.pth", "pytorch_model.bin"]


def test_a_checkpoint_without_safetensors_keeps_its_pickled_weights():
    kept, left_out = select_files([hub_file("config.json"), hub_file("pytorch_model.bin", sha256=SHA)])
    assert [f.path for f in kept] == ["config.json", "pytorch_model.bin"] and left_out == []


def test_an_image_pipeline_is_a_model_by_its_model_index():
    kept, _ = select_files([hub_file("model_index.json"), hub_file("unet/diffusion_pytorch_model.safetensors", sha256=SHA)])
    assert len(kept) == 2


@pytest.mark.parametrize(
    ("files", "error", "words"),
    [
        ([hub_file("tokenizer.json")], StoreError, "no config.json"),
        ([hub_file("config.json"), hub_file("_manifest.json")], StoreError, "reserves"),
        ([hub_file("config.json"), hub_file("sub//x")], StoreRefused, "escapes"),
    ],
    ids=["no-config", "reserved-name", "unsafe-path"],
)
def test_a_repo_the_store_cannot_hold_is_refused(files, error, words):
    with pytest.raises(error, match=words):
        select_files(files)


@pytest.mark.parametrize(
    ("size", "part"),
    [
        (0, DEFAULT_PART_SIZE),
        (5 << 30, DEFAULT_PART_SIZE),  # a 5 GiB shard: 320 parts
        (S3_MAX_PARTS * DEFAULT_PART_SIZE, DEFAULT_PART_SIZE),
        (S3_MAX_PARTS * DEFAULT_PART_SIZE + 1, DEFAULT_PART_SIZE + MIB),
        (160 << 30, 17 * MIB),
    ],
)
def test_parts_are_the_store_size_unless_s3s_part_count_needs_larger(size: int, part: int):
    assert part_size_for(size) == part
    assert len(part_lengths(size, part)) <= S3_MAX_PARTS


def test_a_part_size_below_s3s_minimum_is_raised_to_it_and_beyond_its_maximum_refused():
    assert part_size_for(100, preferred=1) == 5 * MIB
    with pytest.raises(StoreError, match="10000 parts"):
        part_size_for(S3_MAX_PARTS * (5 << 30) + 1)


@pytest.mark.parametrize(("size", "lengths"), [(0, [0]), (10, [10]), (25, [10, 10, 5]), (30, [10, 10, 10])])
def test_parts_cover_the_file_exactly(size: int, lengths: list[int]):
    assert part_lengths(size, 10) == lengths


def test_a_stored_file_is_skipped_and_a_small_one_sent_whole():
    big = hub_file("model.safetensors", 3 * DEFAULT_PART_SIZE, SHA)
    assert plan_file(big, "k", stored=True, in_progress=None).action == "stored"
    assert plan_file(hub_file("config.json", 100), "k", stored=False, in_progress=None).action == "put"
    fresh = plan_file(big, "k", stored=False, in_progress=None)
    assert (fresh.action, fresh.part_size, fresh.upload_id, fresh.reuse) == ("multipart", DEFAULT_PART_SIZE, None, {})


def test_a_rerun_reuses_the_parts_cut_as_this_plan_cuts_them():
    size = 2 * DEFAULT_PART_SIZE + 7
    listed = {
        1: PartRecord(DEFAULT_PART_SIZE, '"1"', None),
        2: PartRecord(5 * MIB, '"2"', None),  # cut for another part size: sent again
        3: PartRecord(7, '"3"', None),
        4: PartRecord(7, '"4"', None),  # beyond the file's parts
    }
    plan = plan_file(hub_file("model.safetensors", size, SHA), "k", stored=False, in_progress=("upload-1", listed))
    assert plan.upload_id == "upload-1"
    assert sorted(plan.reuse) == [1, 3]


def test_a_large_file_without_a_hub_sha256_is_refused():
    with pytest.raises(StoreError, match="no sha256"):
        plan_file(hub_file("weights.raw", 2 * DEFAULT_PART_SIZE), "k", stored=False, in_progress=None)


def test_a_stored_part_is_kept_only_when_it_holds_the_bytes_read_now():
    data = b"part bytes"
    md5 = hashlib.md5(data).hexdigest()
    assert part_holds(PartRecord(len(data), f'"{md5}"', None), data, "unused")
    assert not part_holds(PartRecord(len(data), '"0123"', None), data, "unused")
    assert part_holds(PartRecord(len(data), '"kms-etag"', "c2hh"), data, "c2hh")  # S3's listed sha256 wins
    assert not part_holds(PartRecord(len(data), f'"{md5}"', "other"), data, "c2hh")
