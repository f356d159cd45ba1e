"""The AWS environment failures, each as one line saying what to set, with its exit code,
also when a layer (the store, the registry) wrapped the botocore exception on the way up."""

from __future__ import annotations

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
    SSOTokenLoadError,
    TokenRetrievalError,
    UnauthorizedSSOTokenError,
)

from llmfleet.model_store.ops.aws_errors import AwsError, AwsSetupError, explain
from llmfleet.model_store.errors import EXIT_BAD_INPUT, EXIT_REFUSED
from llmfleet.model_store.contract.manifest import ManifestError
from llmfleet.model_store.store.store import StoreError


def client_error(code: str, message: str = "the message", operation: str = "GetObject") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (NoCredentialsError(), ["no AWS credentials", "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]),
        (PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY"), ["incomplete", "missing: AWS_SECRET_ACCESS_KEY", "together"]),
        (ProfileNotFound(profile="ci"), ["(ci) could not be found", "AWS_PROFILE", "list-profiles"]),
        (NoRegionError(), ["no AWS region", "AWS_DEFAULT_REGION", "--region"]),
        (TokenRetrievalError(provider="sso", error_msg="token expired"), ["SSO session", "token expired", "aws sso login"]),
        (SSOTokenLoadError(error_msg="Token for s does not exist"), ["SSO session", "does not exist", "aws sso login"]),
        (UnauthorizedSSOTokenError(), ["SSO session", "aws sso login"]),
        (client_error("ExpiredToken", "The provided token has expired."), ["expired (ExpiredToken)", "aws sso login", "AWS_SESSION_TOKEN"]),
        (client_error("ExpiredTokenException", operation="InvokeEndpoint"), ["expired (ExpiredTokenException)"]),
        (client_error("InvalidAccessKeyId"), ["rejected the credentials (InvalidAccessKeyId)", "AWS_PROFILE"]),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else None,
)
def test_an_environment_failure_says_what_to_set_in_one_line_and_exits_2(exc: Exception, words: list[str]) -> None:
    error = explain(exc)
    assert isinstance(error, AwsSetupError) and error.exit_code == EXIT_BAD_INPUT
    assert "\n" not in str(error)
    for word in words:
        assert word in str(error), (word, str(error))


@pytest.mark.parametrize(
    "exc",
    [
        EndpointConnectionError(endpoint_url="http://127.0.0.1:9/bucket"),
        ConnectTimeoutError(endpoint_url="https://s3.us-east-1.amazonaws.com/bucket"),
    ],
)
def test_an_unreachable_endpoint_names_what_decides_it_and_exits_1(exc: Exception) -> None:
    error = explain(exc)
    assert type(error) is AwsError and error.exit_code == EXIT_REFUSED
    assert str(exc) in str(error) and "AWS_ENDPOINT_URL" in str(error) and "AWS_DEFAULT_REGION" in str(error)


def test_a_wrapped_cause_is_found_whether_raised_from_it_or_while_handling_it() -> None:
    def wrapped(suppress: bool) -> StoreError:
        try:
            try:
                raise client_error("ExpiredToken")
            except ClientError as exc:
                if suppress:
                    raise StoreError("s3://b/registry/m/prod.json: cannot read the registry") from None
                raise StoreError("s3://b/k: S3 ExpiredToken") from exc
        except StoreError as store_error:
            return store_error

    for suppress in (True, False):
        error = explain(wrapped(suppress))
        assert isinstance(error, AwsSetupError) and "expired (ExpiredToken)" in str(error)


def test_other_failures_keep_their_own_message_and_code() -> None:
    manifest = ManifestError("fleet.yaml:3: models: at least 1 item")
    assert explain(manifest) is manifest
    denied = explain(client_error("AccessDenied", "Access Denied", "ListObjectsV2"))
    assert type(denied) is AwsError and denied.exit_code == EXIT_REFUSED
    assert str(denied) == "AWS: An error occurred (AccessDenied) when calling the ListObjectsV2 operation: Access Denied"
    store = StoreError("s3://b/k: S3 NoSuchBucket")
    store.__context__ = client_error("NoSuchBucket")
    assert explain(store) is store
