"""The model store (S3 + KMS), the log bucket, the ECR repository and the serving image: each
created here unless the caller passes their own (StoreProps).

The store bucket's policy makes every published version's manifest write-once
(model_store.store.access.write_once_statement); each serving role reads its model's prefixes and
writes only its own stage's and target's compile cache (model_store.store.access.serving_scope).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from llmfleet.model_store.store.access import serving_scope, write_once_statement
from llmfleet.model_store.contract.plan import DeploymentPlan
from llmfleet.model_store.store.store import StoreLocation
from llmfleet.stacks.compliance import acknowledge, checkov_skip, nag_rendered
from llmfleet.stacks.config import IMAGE_BY_DIGEST, PLACEHOLDER_DIGEST, StackConfigError

DOCKERFILE = "containers/vllm/Dockerfile"
# The directory holding containers/ and model_store/ beside this package: the image's build
# context, wherever the package is installed and whatever the working directory.
IMAGE_SOURCE_ROOT = Path(__file__).resolve().parent.parent
# The image copies model_store/ and containers/ (containers/vllm/Dockerfile), so the build context
# is the repository root; everything else there (venvs, node_modules, cdk.out: gigabytes) stays
# out of the staged asset, and edits elsewhere do not change the image's hash.
IMAGE_CONTEXT = ["containers", "model_store"]
NONCURRENT_VERSION_DAYS = 30
LOG_RETENTION_DAYS = 365
BASE_IMAGE_ARG = "VLLM_IMAGE"  # containers/vllm/Dockerfile's ARG for its FROM
REPLICATION_ACKNOWLEDGED = (
    "NIST.800.53.R5-S3BucketReplicationEnabled",
    "versioned in one region; cross-region replication (a second region's bucket and costs) is the operator's choice",
)
# An image in ECR (SageMaker pulls only from ECR): account, region, repository, then a tag or a digest.
ECR_IMAGE_URI = (
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/"
    r"(?P<repository>[a-z0-9][a-z0-9._/-]*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9._-]{0,127})|@(?P<digest>sha256:[0-9a-f]{64}))$"
)


@dataclass(frozen=True)
class EcrImage:
    """An image URI in ECR, in its parts (`parse_ecr_image`)."""

    account: str
    region: str
    repository: str
    tag_or_digest: str


def parse_ecr_image(uri: str, where: str) -> EcrImage:
    """`<account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag>` (or `@sha256:<digest>`) in its parts;
    `where` names the field in the error."""
    match = re.fullmatch(ECR_IMAGE_URI, uri)
    if match is None:
        raise StackConfigError(
            f"{where}: {uri!r} is not an ECR image URI; use <account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag>"
            f" or ...@sha256:<64 hex> (SageMaker and the fleet's private subnets pull from ECR only)"
        )
    return EcrImage(
        account=match["account"],
        region=match["region"],
        repository=match["repository"],
        tag_or_digest=match["tag"] or match["digest"],
    )


@dataclass(frozen=True)
class StoreProps:
    """bucket_name: the store bucket's name (the manifest's `store`). prefix: the store's key
    prefix in the bucket (default "": the bucket's root). key: the KMS key for the store, logs,
    alarms and the repository; it must be the given bucket's encryption key if that has one
    (default None: the given bucket's encryption key, else a new key with rotation). bucket: the
    store bucket, named bucket_name (default None: a new versioned, KMS-encrypted, SSL-only
    bucket; a given bucket gets the write-once statement in its policy when it is defined in the
    app, and a warning when imported). access_logs: the bucket for load-balancer, VPC flow and S3 access
    logs, SSE-S3 encrypted (default None: a new one). image_uri: the serving image in ECR,
    `<account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag>` or `@sha256:<digest>` (default
    None: the image comes from this construct's repository, below; no repository is created when
    given). image_tag: a tag CI already pushed to the repository (default None: build the image
    as a CDK asset at synth). base_image: the image the asset is built FROM, pinned by digest,
    `<repository>:<tag>@sha256:<64 hex>` (default None; required when neither image_uri nor
    image_tag is given). repo_root: the directory holding containers/ to build the image from
    (default: the one beside this package, IMAGE_SOURCE_ROOT)."""

    bucket_name: str
    prefix: str = ""
    key: kms.IKey | None = None
    bucket: s3.IBucket | None = None
    access_logs: s3.IBucket | None = None
    image_uri: str | None = None
    image_tag: str | None = None  # a tag CI pushed to the repository; None builds the image asset
    base_image: str | None = None
    repo_root: Path = IMAGE_SOURCE_ROOT

    def __post_init__(self) -> None:
        given_name = literal_bucket_name(self.bucket) if self.bucket is not None else self.bucket_name
        if given_name != self.bucket_name:
            named = f"is named {given_name!r}" if given_name else "has no name of its own (CloudFormation would name it)"
            raise StackConfigError(
                f"StoreProps.bucket: the bucket {named}, but the manifest's store is {self.bucket_name!r}; give the "
                f"bucket that name (bucket_name=) or import it by it (s3.Bucket.from_bucket_name): servers and CI are "
                f"granted on the manifest's store"
            )
        bucket_key = self.bucket.encryption_key if self.bucket is not None else None
        if self.key is not None and bucket_key is not None and bucket_key.key_arn != self.key.key_arn:
            raise StackConfigError(
                "StoreProps.key: the store bucket is encrypted with another key; servers and CI decrypt the store with "
                "`key`, so pass the bucket's own key (or leave key out to use it)"
            )
        if self.image_uri is not None:
            if self.image_tag is not None:
                raise StackConfigError(
                    f"StoreProps.image_uri {self.image_uri!r} and image_tag {self.image_tag!r}: give one, the image's "
                    f"URI or the tag of this construct's repository"
                )
            parse_ecr_image(self.image_uri, "StoreProps.image_uri")
            return
        if self.image_tag is not None:
            return
        if not (self.repo_root / DOCKERFILE).is_file():
            raise StackConfigError(f"StoreProps.repo_root: {self.repo_root} has no {DOCKERFILE} to build the image from")
        if self.base_image is None or not re.fullmatch(IMAGE_BY_DIGEST, self.base_image):
            raise StackConfigError(
                f"StoreProps.base_image: the serving image is built FROM a base pinned by digest, "
                f"<repository>:<tag>@sha256:<64 hex>, but {self.base_image!r} was given "
                f"(-c vllm_image=vllm/vllm-openai:<tag>@sha256:<digest>, or -c image_tag=<a pushed tag>)"
            )


def literal_bucket_name(bucket: s3.IBucket) -> str | None:
    """The name a bucket is given in the app (imported by name, or `bucket_name=`), None if CloudFormation names it."""
    if not cdk.Token.is_unresolved(bucket.bucket_name):
        return bucket.bucket_name
    resource = bucket.node.default_child
    name = resource.bucket_name if isinstance(resource, s3.CfnBucket) else None
    return name if name and not cdk.Token.is_unresolved(name) else None


@dataclass(frozen=True)
class ServingImage:
    """The vLLM serving image, as ECS wants it and as SageMaker wants it (a URI plus a pull grant)."""

    container_image: ecs.ContainerImage
    uri: str
    repository: ecr.IRepository

    def grant_pull(self, grantee: iam.IGrantable) -> None:
        self.repository.grant_pull(grantee)


class StoreConstruct(Construct):
    """KMS key, versioned SSL-only store bucket, access-log bucket, ECR repository and image; the
    ones given in the props are used as they are (attributes key, bucket, access_logs, repository, image)."""

    def __init__(self, scope: Construct, id: str, props: StoreProps) -> None:
        super().__init__(scope, id)
        # One key for the fleet: the given one, else the given bucket's own, else a new one.
        self.key = props.key or (props.bucket and props.bucket.encryption_key) or kms.Key(
            self,
            "Key",
            enable_key_rotation=True,
            description="llmfleet: model store, logs, alarms, API keys",
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        self._let_services_use_key()  # log groups and alarm notifications encrypt with it
        self.access_logs = props.access_logs or self._access_log_bucket()
        self.bucket = self._store_bucket(props) if props.bucket is None else props.bucket
        # A published version's manifest can never be replaced, whoever holds PutObject.
        write_once = self.bucket.add_to_resource_policy(
            iam.PolicyStatement.from_json(write_once_statement(props.bucket_name, props.prefix, cdk.Aws.PARTITION))
        )
        if not write_once.statement_added:
            cdk.Annotations.of(self).add_warning(
                f"the store bucket {props.bucket_name} is imported, so its policy cannot be changed here: add "
                f"llmfleet.model_store.store.access.write_once_statement to it, or published versions stay replaceable by any writer"
            )
        self.repository = None if props.image_uri is not None else self._repository()
        self.image = self._serving_image(props)

    def _let_services_use_key(self) -> None:
        """Services that encrypt with the key on their own behalf: CloudWatch Logs (log groups) and
        CloudWatch (alarm notifications to the encrypted topic)."""
        stack = cdk.Stack.of(self)
        added = self.key.add_to_resource_policy(
            iam.PolicyStatement(
                actions=["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
                principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
                resources=["*"],
                conditions={"ArnLike": {"kms:EncryptionContext:aws:logs:arn": stack.format_arn(service="logs", resource="*")}},
            )
        )
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                resources=["*"],
            )
        )
        if not added.statement_added:
            cdk.Annotations.of(self).add_warning(
                "the KMS key is imported, so its policy cannot be changed here: allow logs.<region>.amazonaws.com and "
                "cloudwatch.amazonaws.com to use it (encrypted log groups and alarm notifications), or deploys fail"
            )

    def _access_log_bucket(self) -> s3.Bucket:
        # ALB and S3 server access logs can only be delivered to SSE-S3 buckets.
        access_logs = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            versioned=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[
                s3.LifecycleRule(
                    expiration=cdk.Duration.days(LOG_RETENTION_DAYS),
                    noncurrent_version_expiration=cdk.Duration.days(NONCURRENT_VERSION_DAYS),
                )
            ],
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        acknowledge(access_logs, "AwsSolutions-S1", "the access-log bucket is the log destination; logging it would loop")
        checkov_skip(access_logs, "CKV_AWS_18", "the access-log bucket is the log destination; logging it would loop")
        acknowledge(
            access_logs,
            "NIST.800.53.R5-S3DefaultEncryptionKMS",
            "ALB and S3 server access logs can only be delivered to SSE-S3 buckets",
        )
        acknowledge(access_logs, *REPLICATION_ACKNOWLEDGED)
        return access_logs

    def _store_bucket(self, props: StoreProps) -> s3.Bucket:
        bucket = s3.Bucket(
            self,
            "Bucket",
            bucket_name=props.bucket_name,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=True,
            enforce_ssl=True,
            versioned=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix=f"s3/{props.bucket_name}/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    noncurrent_version_expiration=cdk.Duration.days(NONCURRENT_VERSION_DAYS),
                    abort_incomplete_multipart_upload_after=cdk.Duration.days(7),
                )
            ],
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        acknowledge(bucket, *REPLICATION_ACKNOWLEDGED)
        return bucket

    def _repository(self) -> ecr.Repository:
        return ecr.Repository(
            self,
            "Repository",
            image_scan_on_push=True,
            image_tag_mutability=ecr.TagMutability.IMMUTABLE,
            encryption=ecr.RepositoryEncryption.KMS,
            encryption_key=self.key,
            lifecycle_rules=[ecr.LifecycleRule(tag_status=ecr.TagStatus.UNTAGGED, max_image_age=cdk.Duration.days(14))],
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )

    def _serving_image(self, props: StoreProps) -> ServingImage:
        if props.image_uri is not None:
            return ecr_image(self, "ImageRepository", props.image_uri, "StoreProps.image_uri")
        if props.image_tag is not None:
            return ServingImage(
                container_image=ecs.ContainerImage.from_ecr_repository(self.repository, props.image_tag),
                uri=self.repository.repository_uri_for_tag(props.image_tag),
                repository=self.repository,
            )
        warn_if_placeholder(self, "serving image", props.base_image, "vllm_image", "-c image_tag=<a pushed tag>")
        build_args = {BASE_IMAGE_ARG: props.base_image}
        asset = image_asset(self, "ServingImage", props.repo_root, DOCKERFILE, IMAGE_CONTEXT, build_args=build_args)
        return ServingImage(
            container_image=ecs.ContainerImage.from_docker_image_asset(asset),
            uri=asset.image_uri,
            repository=asset.repository,
        )


def warn_if_placeholder(scope: Construct, image: str, base_image: str, context_key: str, instead: str) -> None:
    """A synth warning when `base_image` is cdk.json's placeholder digest: it synthesizes, a deploy fails."""
    if base_image.endswith(PLACEHOLDER_DIGEST):
        cdk.Annotations.of(scope).add_warning(
            f"the {image}'s base {base_image} is a placeholder digest: these templates synthesize but `cdk deploy` "
            f"fails building the image. Pass -c {context_key}=<repository>:<tag>@sha256:<digest> "
            f"(docker buildx imagetools inspect <repository>:<tag>) or {instead}."
        )


def image_asset(
    scope: Construct,
    id: str,
    repo_root: Path,
    dockerfile: str,
    context: list[str],
    *,
    build_args: dict[str, str] | None = None,
) -> ecr_assets.DockerImageAsset:
    """An image built at deploy time from `dockerfile` in `repo_root`, with only the `context` paths in its build
    context (venvs, node_modules, cdk.out stay out of the staged asset; edits elsewhere keep its hash)."""
    return ecr_assets.DockerImageAsset(
        scope,
        id,
        directory=str(repo_root),
        file=dockerfile,
        build_args=build_args,
        exclude=["*", *(f"!{path}" for path in context), "**/__pycache__"],
        ignore_mode=cdk.IgnoreMode.DOCKER,
        platform=ecr_assets.Platform.LINUX_AMD64,
    )


def ecr_image(scope: Construct, id: str, uri: str, where: str) -> ServingImage:
    """An image already in ECR, by URI (`parse_ecr_image`), with its repository imported for pull grants."""
    image = parse_ecr_image(uri, where)
    repository = ecr.Repository.from_repository_attributes(
        scope,
        id,
        repository_name=image.repository,
        repository_arn=cdk.Stack.of(scope).format_arn(
            service="ecr",
            account=image.account,
            region=image.region,
            resource="repository",
            resource_name=image.repository,
        ),
    )
    return ServingImage(
        container_image=ecs.ContainerImage.from_ecr_repository(repository, image.tag_or_digest),
        uri=uri,
        repository=repository,
    )


def object_arn(bucket_name: str, prefix: str) -> str:
    """ARN of every object under `prefix/` in a bucket named literally (keeps grants readable in the template)."""
    return f"arn:{cdk.Aws.PARTITION}:s3:::{bucket_name}/{prefix}/*"


def model_read_statements(bucket_name: str, prefixes: list[str]) -> list[iam.PolicyStatement]:
    """Read-only access to the objects under the given store prefixes, and key names in the bucket.

    ListBucket is not conditioned on `s3:prefix`: S3 answers a GET of a missing key with 403
    unless the caller may list the bucket, and a prefix-conditioned grant does not count for
    object requests. A server reads its stage's registry document before any adapter was ever
    promoted, when it does not exist yet; with a 403 the entrypoint cannot tell "no adapters"
    from "no access" and refuses to start. Listing shows key names, never content.
    """
    return [
        iam.PolicyStatement(actions=["s3:GetObject"], resources=[object_arn(bucket_name, p) for p in prefixes]),
        iam.PolicyStatement(actions=["s3:ListBucket"], resources=[f"arn:{cdk.Aws.PARTITION}:s3:::{bucket_name}"]),
    ]


def grant_serving_access(role: iam.IRole, plan: DeploymentPlan, store: StoreLocation, key: kms.IKey, target: str) -> None:
    """What a server of `plan` on `target` (a row of model_store.contract.targets) may do in the store
    (model_store.store.access.serving_scope): read its own model's prefixes, and write one, the
    compile cache of its stage and target (published after its first start). Nothing of
    another model, stage or target is written, nothing is deleted."""
    scope = serving_scope(store, plan.model_name, plan.stage, target)
    for statement in model_read_statements(store.bucket, list(scope.reads)):
        role.add_to_principal_policy(statement)
    role.add_to_principal_policy(
        iam.PolicyStatement(actions=["s3:PutObject"], resources=[object_arn(store.bucket, p) for p in scope.writes])
    )
    # SSE-KMS: reading needs Decrypt, writing the cache a data key; the two actions, as the CI role
    # has them (grant_encrypt_decrypt's wildcards, kms:ReEncrypt* and kms:GenerateDataKey*, fail cdk-nag IAM5).
    key.grant(role, "kms:Decrypt", "kms:GenerateDataKey")
    for prefix in scope.reads:
        access = "read and write" if prefix in scope.writes else "read-only"
        acknowledge(
            role,
            f"AwsSolutions-IAM5[Resource::{nag_rendered(object_arn(store.bucket, prefix))}]",
            f"{access} on the server's own store prefix {prefix}/ (its model's weights, adapters and registry; "
            f"its stage's and target's compile cache), nothing else",
        )
