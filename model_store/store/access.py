"""Who may do what in the store, as IAM policy statements (plain JSON dicts).

The CI adapter publisher's rights are written once, here: the CI stack turns them into
`iam.PolicyStatement.from_json` and the local fleet puts them on its emulated role, so the
two can never drift apart. They are exactly the S3 calls `llmfleet adapter publish`,
`promote`, `rollback`, `retire`, `history`, `list` and `versions` make (model_store.store.store,
model_store.store.registry), for the fleet's models and one stage only:

    publish   GET  models/<m>/<rev>/_manifest.json, models/<m>/<rev>/config.json (validation)
              HEAD adapters/<m>/<a>/<v>/_manifest.json (version exists?) and each file (resume)
              PUT / multipart upload of each file, abort on failure; PUT _manifest.json If-None-Match
    promote   HEAD adapters/<m>/<a>/<v>/_manifest.json; when missing: LIST adapters/<m>/<a>/ and
              GET its manifests (the error names the published versions)
              GET registry/<m>/<stage>.json, PUT it If-Match (If-None-Match on the first change)
    rollback, retire: GET + conditional PUT of registry/<m>/<stage>.json
    history, list:    GET registry/<m>/<stage>.json
    versions:         LIST adapters/<m>/<a>/, GET its manifests

S3 answers a HEAD or GET of a missing key with 403 instead of 404 unless the caller may
s3:ListBucket on the bucket, and a ListBucket grant conditioned on `s3:prefix` does not
apply to object requests (the key is absent from their request context). The first publish
of a version, a resumed upload and the first promotion on a stage all ask for keys that do
not exist yet, so ListBucket is granted on the bucket without a prefix condition: it shows
key names (model, revision, adapter and file names), never content.

Also here: who a CI role trusts (GitHub's OIDC subject), what a server may read and write
(`serving_scope`), and the bucket statement that makes published versions write-once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from llmfleet.model_store.errors import EXIT_BAD_INPUT, LlmfleetError
from llmfleet.model_store.contract.layout import ADAPTERS, COMPILE_CACHE, MODELS, REGISTRY
from llmfleet.model_store.contract.manifest import DNS_LABEL
from llmfleet.model_store.store.store import MANIFEST_NAME, MODEL_CONFIG, ModelStore, StoreError, StoreLocation

POLICY_VERSION = "2012-10-17"
# The folders whose versions end with a `_manifest.json` (written once, last, If-None-Match).
VERSIONED_FOLDERS = (MODELS, ADAPTERS, COMPILE_CACHE)
# The base-model files adapter validation reads; weights are never among them.
MODEL_METADATA_FILES = (MODEL_CONFIG, MANIFEST_NAME)
# kms:ViaService values of S3 are `s3.<region>.amazonaws.com` (`.com.cn` in China): the key is
# usable only through S3, not to decrypt the fleet's other data (log groups, alarm topic) directly.
S3_VIA_SERVICE = "s3.*"
# The manifest's stage rule (model_store.contract.manifest.FleetManifest.stage).
STAGE = r"^[a-z][a-z0-9-]{0,19}$"

# What a CI role's trust may name, one row per value: (pattern, what is allowed). GitHub puts
# `repo:<owner>/<name>:environment:<env>` in the OIDC token's `sub` of a job that names an
# environment, else `repo:<owner>/<name>:ref:<ref>` (GitHub docs, "OpenID Connect", example
# subject claims, 2026-11). No wildcard is allowed: the subject is compared with StringEquals.
GITHUB_RULES = {
    "github_repo": (r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$", "a GitHub 'owner/name'"),
    "github_environment": (r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$", "a GitHub environment name: letters, digits, '.', '_', '-'"),
    "github_ref": (
        r"^refs/(?:heads|tags)/(?!.*\.\.)[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*$",
        "refs/heads/<branch> or refs/tags/<tag>, no wildcard",
    ),
}


class AccessError(LlmfleetError):
    """A model, stage, target or GitHub value a policy cannot be written for; names the value and what is allowed."""

    exit_code = EXIT_BAD_INPUT


def check_github(field: str, value: str) -> str:
    """`value` if it matches GITHUB_RULES[field], else an AccessError naming both."""
    pattern, allowed = GITHUB_RULES[field]
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        raise AccessError(f"{field}: must be {allowed}, but {value!r} was given")
    return value


def github_subject(repo: str, *, environment: str | None = None, ref: str | None = None) -> str:
    """The exact OIDC `sub` a CI role trusts: jobs of `repo` in one environment, or on one ref.

    Exactly one of `environment` and `ref`. A job that names an environment carries that
    environment in its subject and not its ref, so a ref-trusting role admits only jobs
    without one."""
    check_github("github_repo", repo)
    if (environment is None) == (ref is None):
        raise AccessError(
            f"github_environment, github_ref: name exactly one, but environment={environment!r} and ref={ref!r} were given"
        )
    if environment is not None:
        return f"repo:{repo}:environment:{check_github('github_environment', environment)}"
    return f"repo:{repo}:ref:{check_github('github_ref', ref)}"


def check_model(model: str) -> str:
    """`model` if it is a model name the manifest allows, else an AccessError."""
    if not isinstance(model, str) or not re.fullmatch(DNS_LABEL, model):
        raise AccessError(f"model: must match {DNS_LABEL}, but {model!r} was given")
    return model


def check_models(models: Sequence[str]) -> list[str]:
    """The model names, checked, sorted and without repeats; an AccessError for none or a bad one."""
    if isinstance(models, str) or not models:
        raise AccessError(f"models: must be a non-empty list of model names, but {models!r} was given")
    return sorted({check_model(model) for model in models})


def check_stage(stage: str) -> str:
    """`stage` if it is a stage the manifest allows, else an AccessError."""
    if not isinstance(stage, str) or not re.fullmatch(STAGE, stage):
        raise AccessError(f"stage: must match {STAGE}, but {stage!r} was given")
    return stage


def ci_publisher_statements(
    bucket: str, prefix: str, key_arn: str, partition: str = "aws", *, models: Sequence[str], stage: str
) -> list[dict]:
    """The IAM statements of one stage's CI role: publish adapters of `models`, change their
    registry documents of `stage`, read their base-model metadata.

    `partition` and `key_arn` may be CloudFormation tokens (the CI stack passes them). No
    delete, no `s3:*`, no `*` resource, nothing on model weights or infrastructure, nothing of
    another model or another stage's registry. Adapter versions are shared by every stage (a
    version is promoted stage by stage), so each stage's role may publish them.
    """
    store = StoreLocation(bucket=bucket, prefix=prefix.strip("/"))
    bucket_arn = f"arn:{partition}:s3:::{bucket}"
    models, stage = check_models(models), check_stage(stage)

    def under(*parts: str) -> str:
        return f"{bucket_arn}/{store.key(*parts)}"

    return [
        {
            "Sid": "PublishAdapters",
            "Effect": "Allow",
            # GetObject also covers HEAD (version exists? file already uploaded?); PutObject covers
            # the multipart calls of large weights; a failed transfer aborts its upload.
            "Action": ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
            "Resource": [under(ADAPTERS, model, "*") for model in models],
        },
        {
            "Sid": "UpdateRegistry",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject"],
            "Resource": [under(REGISTRY, model, f"{stage}.json") for model in models],
        },
        {
            "Sid": "ReadBaseModelMetadata",
            "Effect": "Allow",
            "Action": ["s3:GetObject"],
            "Resource": [under(MODELS, model, "*", name) for model in models for name in MODEL_METADATA_FILES],
        },
        {
            # Unconditioned: the only way S3 answers 404 (not 403) for keys that do not exist yet
            # (see the module docstring). It reveals key names, not content.
            "Sid": "FindStoreKeys",
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": [bucket_arn],
        },
        {
            # SSE-KMS with a bucket key: writes need a data key, reads and multipart uploads Decrypt.
            "Sid": "StoreKey",
            "Effect": "Allow",
            "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
            "Resource": [key_arn],
            "Condition": {"StringLike": {"kms:ViaService": S3_VIA_SERVICE}},
        },
    ]


@dataclass(frozen=True)
class ServingScope:
    """The store prefixes (keys without a trailing '/') a server reads and writes."""

    reads: tuple[str, ...]
    writes: tuple[str, ...]


def compile_cache_scope(store: StoreLocation, model: str, stage: str, target: str) -> str:
    """`compile-cache/<model>/<stage>/<target>`: the caches one stage's servers on one target
    publish and restore. vLLM unpickles its compile cache, so no other stage's or target's
    server may write what these load. The key is the one servers use
    (ModelStore.compile_cache_prefix); building it needs no S3 client."""
    try:
        return ModelStore(store, s3_client=None).compile_cache_prefix(model, stage, target)
    except StoreError as exc:
        raise AccessError(str(exc)) from None


def serving_scope(store: StoreLocation, model: str, stage: str, target: str) -> ServingScope:
    """A server of `model` on `stage` and `target`: it reads its model's weights, adapters and
    registry documents and its own compile cache, and writes only that compile cache."""
    cache = compile_cache_scope(store, model, stage, target)
    return ServingScope(reads=(*(store.key(folder, model) for folder in (MODELS, ADAPTERS, REGISTRY)), cache), writes=(cache,))


def write_once_statement(bucket: str, prefix: str, partition: str = "aws") -> dict:
    """The store bucket's statement that makes a published version's manifest write-once.

    It denies, to every principal, a PutObject of any `_manifest.json` under models/,
    adapters/ and compile-cache/ that does not carry `If-None-Match` (condition key
    `s3:if-none-match`, enforced by S3 since November 2024): S3 then refuses a write to a key
    that exists, so a manifest, once published, is never replaced, whoever holds PutObject.
    A manifest pins every file of its version by size and sha256 and readers verify each byte
    against it, so an overwritten file breaks its version (the download is refused), never
    changes what it serves. Multipart uploads of a manifest key are refused too (their first
    call cannot carry the header); manifests are single small PUTs.

    Why not S3 Object Lock: it keeps an object *version* from being deleted or changed, but a
    PUT to the same key still succeeds and becomes the current version that readers get, so
    it does not make a key write-once; compliance mode would also make a wrong upload
    undeletable for the retention period. Why not a KMS signature on manifests: see
    docs/stacks.md ("Published versions are write-once").
    """
    store = StoreLocation(bucket=bucket, prefix=prefix.strip("/"))
    bucket_arn = f"arn:{partition}:s3:::{bucket}"
    return {
        "Sid": "PublishedVersionsAreWriteOnce",
        "Effect": "Deny",
        "Principal": {"AWS": "*"},
        "Action": ["s3:PutObject"],
        "Resource": [f"{bucket_arn}/{store.key(folder, '*', MANIFEST_NAME)}" for folder in VERSIONED_FOLDERS],
        "Condition": {"Null": {"s3:if-none-match": "true"}},
    }


__all__ = [
    "COMPILE_CACHE",
    "GITHUB_RULES",
    "POLICY_VERSION",
    "AccessError",
    "ServingScope",
    "check_github",
    "check_models",
    "check_stage",
    "ci_publisher_statements",
    "compile_cache_scope",
    "github_subject",
    "serving_scope",
    "write_once_statement",
]
