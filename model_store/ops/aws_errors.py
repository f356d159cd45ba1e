"""AWS failures the user fixes in their environment (no credentials, no region, an expired
token, an unreachable endpoint) as one line saying what to set, with the exit codes of
model_store/errors.py. The one table of them: the CLI's root group consults it for every
error, whatever layer wrapped the botocore exception on its way up.
"""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
    SSOError,
    TokenRetrievalError,
)

from llmfleet.model_store.errors import EXIT_BAD_INPUT, EXIT_REFUSED, LlmfleetError


class AwsError(LlmfleetError):
    """An AWS call failed; the message says what to set or what AWS answered."""

    exit_code = EXIT_REFUSED


class AwsSetupError(AwsError):
    """The AWS environment (credentials, region, token) needs fixing before any call can work."""

    exit_code = EXIT_BAD_INPUT


RENEW = "renew them (`aws sso login`, or fresh AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN)"
CREDENTIALS = (
    "set AWS_PROFILE to a profile of `aws configure` or `aws sso login`, "
    "or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
)

# Checked in order against the exception and its causes; {exc} is botocore's own message.
BY_CLASS: tuple[tuple[type[BotoCoreError] | tuple[type[BotoCoreError], ...], type[LlmfleetError], str], ...] = (
    (NoCredentialsError, AwsSetupError, f"no AWS credentials found: {CREDENTIALS}"),
    (PartialCredentialsError, AwsSetupError, "incomplete AWS credentials ({exc}): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY together (and AWS_SESSION_TOKEN with temporary ones)"),
    (ProfileNotFound, AwsSetupError, "{exc}: set AWS_PROFILE to one of `aws configure list-profiles`"),
    (NoRegionError, AwsSetupError, "no AWS region: set AWS_DEFAULT_REGION (or `region` in the AWS profile), or pass --region where the command has it"),
    ((TokenRetrievalError, SSOError), AwsSetupError, "the AWS SSO session has expired or is missing ({exc}): run `aws sso login` for the profile in AWS_PROFILE"),
    (CredentialRetrievalError, AwsSetupError, "{exc}: fix the credential source of the profile in AWS_PROFILE, or " + CREDENTIALS),
    ((EndpointConnectionError, ConnectTimeoutError), AwsError, "{exc}: check the network, AWS_DEFAULT_REGION and AWS_ENDPOINT_URL"),
)  # fmt: skip
# ClientError codes that mean the credentials, not the request, are at fault, from the services'
# error lists: S3's (ExpiredToken, TokenRefreshRequired, InvalidAccessKeyId, SignatureDoesNotMatch),
# the JSON services' (ExpiredTokenException, UnrecognizedClientException), STS/IAM's
# InvalidClientTokenId, EC2's AuthFailure.
EXPIRED_CODES = frozenset({"ExpiredToken", "ExpiredTokenException", "TokenRefreshRequired"})
REJECTED_CODES = frozenset(
    {"InvalidClientTokenId", "UnrecognizedClientException", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AuthFailure"}
)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc` and what it was raised from or while handling, outermost first (wrappers such as
    StoreError keep the botocore exception there even when raised `from None`)."""
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def _environment_error(exc: BaseException) -> AwsError | None:
    for classes, error_class, message in BY_CLASS:
        if isinstance(exc, classes):
            return error_class(message.format(exc=_one_line(str(exc))))
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in EXPIRED_CODES:
            return AwsSetupError(f"the AWS credentials have expired ({code}): {RENEW}")
        if code in REJECTED_CODES:
            return AwsSetupError(f"AWS rejected the credentials ({code}): {CREDENTIALS}, valid for this account")
    return None


def explain(exc: LlmfleetError | BotoCoreError | ClientError) -> LlmfleetError:
    """The one-line error to show for `exc`: what to set when an AWS environment problem is at
    its root, else `exc` itself when it is an llmfleet error, else the AWS failure (exit 1)."""
    for cause in _causes(exc):
        found = _environment_error(cause)
        if found is not None:
            return found
    if isinstance(exc, LlmfleetError):
        return exc
    return AwsError(f"AWS: {_one_line(str(exc))}")
