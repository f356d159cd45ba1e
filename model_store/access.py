"""Who may do what in the store, as IAM policy statements (plain JSON dicts).

The CI adapter publisher's rights are written once, here: the CI stack turns them into
`iam.PolicyStatement.from_json` and the local fleet puts them on its emulated role, so the
two can never drift apart. They are exactly the S3 calls `llmfleet adapter publish`,
`promote`, `rollback`, `retire`, `history`, `list` and `versions` make (model_store.store,
model_store.registry):

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
"""

from __future__ import annotations

from model_store.store import MANIFEST_NAME, MODEL_CONFIG, StoreLocation

POLICY_VERSION = "2012-10-17"
# The store layout's top folders (model_store.store).
MODELS, ADAPTERS, REGISTRY = "models", "adapters", "registry"
# The base-model files adapter validation reads; weights are never among them.
MODEL_METADATA_FILES = (MODEL_CONFIG, MANIFEST_NAME)
# kms:ViaService values of S3 are `s3.<region>.amazonaws.com` (`.com.cn` in China): the key is
# usable only through S3, not to decrypt the fleet's other data (log groups, alarm topic) directly.
S3_VIA_SERVICE = "s3.*"


def ci_publisher_statements(bucket: str, prefix: str, key_arn: str, partition: str = "aws") -> list[dict]:
    """The IAM statements of the CI role: publish adapters, change the registry, read base-model metadata.

    `partition` and `key_arn` may be CloudFormation tokens (the CI stack passes them). No
    delete, no `s3:*`, no `*` resource, nothing on model weights or infrastructure.
    """
    store = StoreLocation(bucket=bucket, prefix=prefix.strip("/"))
    bucket_arn = f"arn:{partition}:s3:::{bucket}"

    def under(*parts: str) -> str:
        return f"{bucket_arn}/{store.key(*parts)}"

    return [
        {
            "Sid": "PublishAdapters",
            "Effect": "Allow",
            # GetObject also covers HEAD (version exists? file already uploaded?); PutObject covers
            # the multipart calls of large weights; a failed transfer aborts its upload.
            "Action": ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
            "Resource": [under(ADAPTERS, "*")],
        },
        {
            "Sid": "UpdateRegistry",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject"],
            "Resource": [under(REGISTRY, "*")],
        },
        {
            "Sid": "ReadBaseModelMetadata",
            "Effect": "Allow",
            "Action": ["s3:GetObject"],
            "Resource": [under(MODELS, "*", name) for name in MODEL_METADATA_FILES],
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


__all__ = ["POLICY_VERSION", "ci_publisher_statements"]
