"""The official Yandex Cloud Python SDK's own credentials against opsd over TLS.

`yandexcloud.SDK(service_account_key=...)` signs a PS256 JWT and `SDK(token=...)` sends an
OAuth token; either way the SDK discovers the `iam` endpoint with `ApiEndpointService/List`,
exchanges the credential at `yandex.cloud.iam.v1.IamTokenService/Create` there, and sends the
IAM token it gets with every call. Operations are created and completed with opsctl; reads and
waits go through the unmodified SDK. Two replicas share one IAM signing key: a token issued by
one is accepted by the other. A wrong key, an expired JWT and a wrong audience are refused.
"""

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import jwt
import pytest
import yandexcloud
from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct
from yandex.cloud.iam.v1.iam_token_service_pb2 import CreateIamTokenRequest
from yandex.cloud.iam.v1.iam_token_service_pb2_grpc import IamTokenServiceStub
from yandex.cloud.operation.operation_service_pb2 import GetOperationRequest
from yandex.cloud.operation.operation_service_pb2_grpc import OperationServiceStub
from yandexcloud._auth_fabric import ServiceAccountAuth
from opsctl_cli import CLI_TIMEOUT, Opsctl
from sa_key import make_key

CONNECT_TIMEOUT = 10.0
RPC_TIMEOUT = 10.0
WAIT_TIMEOUT = 30.0
PRODUCER_DELAY = 2.0
# What opsd issues unless --iam-token-lifetime says otherwise.
DEFAULT_LIFETIME = 12 * 3600
ENV_VARS = (
    "OPSD_TLS_ENDPOINT",
    "OPSD_TLS_ENDPOINT_B",
    "OPSD_TLS_CA",
    "OPSD_TOKEN",
    "OPSD_OAUTH_TOKEN",
    "OPSD_SA_KEY_FILE",
    "OPSCTL",
)


@dataclass(frozen=True)
class Target:
    endpoint: str
    endpoint_b: str
    ca: bytes
    ca_path: str
    oauth_token: str
    sa_key: dict
    opsctl: str


@pytest.fixture(scope="session")
def target() -> Target:
    missing = [name for name in ENV_VARS if not os.environ.get(name)]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not set: OPSD_TLS_ENDPOINT and OPSD_TLS_ENDPOINT_B must be "
            "host:port of two opsd replicas serving tls with one --iam-signing-key, OPSD_TLS_CA "
            "the pem ca that signed their certificates, OPSD_TOKEN an admin token for opsctl, "
            "OPSD_OAUTH_TOKEN a token of their tokens file, OPSD_SA_KEY_FILE a service-account "
            "key (json, as sa_key.py writes it) whose public half is in that file, and OPSCTL "
            "the opsctl binary",
            pytrace=False,
        )
    with open(os.environ["OPSD_TLS_CA"], "rb") as file:
        ca = file.read()
    with open(os.environ["OPSD_SA_KEY_FILE"], encoding="utf-8") as file:
        key = json.load(file)
    return Target(
        endpoint=os.environ["OPSD_TLS_ENDPOINT"],
        endpoint_b=os.environ["OPSD_TLS_ENDPOINT_B"],
        ca=ca,
        ca_path=os.environ["OPSD_TLS_CA"],
        oauth_token=os.environ["OPSD_OAUTH_TOKEN"],
        # Exactly what the SDK takes: the fields of `yc iam key create --output`.
        sa_key={name: key[name] for name in ("id", "service_account_id", "private_key")},
        opsctl=os.environ["OPSCTL"],
    )


@pytest.fixture(scope="session")
def opsctl(target: Target) -> Opsctl:
    return Opsctl(
        [target.opsctl, "--endpoint", f"https://{target.endpoint}", "--ca", target.ca_path]
    )


def secure_channel(target: Target, endpoint: str) -> grpc.Channel:
    channel = grpc.secure_channel(
        endpoint, grpc.ssl_channel_credentials(root_certificates=target.ca)
    )
    try:
        grpc.channel_ready_future(channel).result(timeout=CONNECT_TIMEOUT)
    except grpc.FutureTimeoutError:
        pytest.fail(f"no tls connection to opsd at {endpoint}", pytrace=False)
    return channel


def exchange(target: Target, request: CreateIamTokenRequest, endpoint: str | None = None):
    """IamTokenService/Create at `endpoint` (replica A by default), no credentials sent."""
    with secure_channel(target, endpoint or target.endpoint) as channel:
        return IamTokenServiceStub(channel).Create(request, timeout=RPC_TIMEOUT)


def refusal(target: Target, request: CreateIamTokenRequest) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        exchange(target, request)
    return raised.value


def sdk_with(target: Target, endpoint: str | None = None, **credentials) -> yandexcloud.SDK:
    return yandexcloud.SDK(
        endpoint=endpoint or target.endpoint, root_certificates=target.ca, **credentials
    )


def get(sdk: yandexcloud.SDK, operation_id: str):
    return sdk.client(OperationServiceStub).Get(
        GetOperationRequest(operation_id=operation_id), timeout=RPC_TIMEOUT
    )


def wait_for_response_completed_later(sdk: yandexcloud.SDK, opsctl: Opsctl, name: str) -> None:
    """Get, then the SDK's waiter for an operation opsctl completes while it waits."""
    response = {"name": name, "ready": True}
    created = opsctl.create(f"create {name}", metadata={"step": "copy"})
    operation = get(sdk, created["id"])
    assert operation.id == created["id"]
    assert operation.done is False

    def produce() -> dict:
        time.sleep(PRODUCER_DELAY)
        return opsctl.complete_with_response(created["id"], response)

    with ThreadPoolExecutor(max_workers=1) as producer:
        completion = producer.submit(produce)
        result = sdk.wait_operation_and_get_result(
            operation, response_type=Struct, meta_type=Struct, timeout=WAIT_TIMEOUT
        )
        completion.result(timeout=CLI_TIMEOUT)
    assert result.operation.id == created["id"]
    assert json_format.MessageToDict(result.response) == response
    assert json_format.MessageToDict(result.meta) == {"step": "copy"}


def sdk_jwt(target: Target, **changes) -> str:
    """The JWT the SDK signs for its key, with `changes` to its claims."""
    now = int(time.time())
    claims = {
        "iss": target.sa_key["service_account_id"],
        "aud": f"https://iam.{target.endpoint}/iam/v1/tokens",
        "iat": now,
        "exp": now + 3600,
        **changes,
    }
    return jwt.encode(
        claims,
        target.sa_key["private_key"],
        algorithm="PS256",
        headers={"typ": "JWT", "kid": target.sa_key["id"]},
    )


def test_a_service_account_key_discovers_exchanges_gets_and_waits(target, opsctl):
    sdk = sdk_with(target, service_account_key=target.sa_key)
    wait_for_response_completed_later(sdk, opsctl, "vm-by-key")


def test_an_oauth_token_discovers_exchanges_gets_and_waits(target, opsctl):
    with pytest.warns(DeprecationWarning):
        sdk = sdk_with(target, token=target.oauth_token)
    wait_for_response_completed_later(sdk, opsctl, "vm-by-token")


def test_the_exchange_answers_what_the_sdk_asks_with_an_expiry(target):
    for request in (
        ServiceAccountAuth(target.sa_key, target.endpoint).get_token_request(),
        CreateIamTokenRequest(yandex_passport_oauth_token=target.oauth_token),
    ):
        before = int(time.time())
        answer = exchange(target, request)
        assert answer.iam_token
        expires_at = answer.expires_at.seconds
        assert before + DEFAULT_LIFETIME <= expires_at <= int(time.time()) + DEFAULT_LIFETIME


def test_a_token_issued_by_one_replica_is_accepted_by_the_other(target, opsctl):
    request = ServiceAccountAuth(target.sa_key, target.endpoint).get_token_request()
    token = exchange(target, request).iam_token
    created = opsctl.create("seen from replica b")
    on_b = sdk_with(target, endpoint=target.endpoint_b, iam_token=token)
    assert get(on_b, created["id"]).id == created["id"]
    # And the other way round: B issues, A accepts.
    token_from_b = exchange(
        target,
        ServiceAccountAuth(target.sa_key, target.endpoint_b).get_token_request(),
        endpoint=target.endpoint_b,
    ).iam_token
    on_a = sdk_with(target, iam_token=token_from_b)
    assert get(on_a, created["id"]).id == created["id"]


def test_a_wrong_key_is_refused(target, opsctl):
    wrong = make_key(target.sa_key["id"], target.sa_key["service_account_id"])
    wrong = {name: wrong[name] for name in ("id", "service_account_id", "private_key")}

    error = refusal(target, ServiceAccountAuth(wrong, target.endpoint).get_token_request())
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error.details()
    assert error.details() == "bad signature"

    # The SDK object gets no token, so its call fails, naming opsd's refusal.
    created = opsctl.create("never read")
    with pytest.raises(grpc.RpcError) as raised:
        get(sdk_with(target, service_account_key=wrong), created["id"])
    assert "bad signature" in str(raised.value), raised.value


def test_an_expired_jwt_is_refused(target):
    now = int(time.time())
    expired = sdk_jwt(target, iat=now - 7200, exp=now - 3600)
    error = refusal(target, CreateIamTokenRequest(jwt=expired))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error.details()
    assert error.details() == "token expired"


def test_a_wrong_audience_is_refused(target):
    # The SDK builds its audience from the endpoint it was given.
    request = ServiceAccountAuth(target.sa_key, "elsewhere.example:443").get_token_request()
    error = refusal(target, request)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error.details()
    assert error.details().startswith("wrong audience: aud must be one of "), error.details()


def test_a_jwt_valid_for_more_than_an_hour_is_refused(target):
    now = int(time.time())
    error = refusal(target, CreateIamTokenRequest(jwt=sdk_jwt(target, iat=now, exp=now + 7200)))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error.details()
    assert error.details() == "lifetime too long: exp may be at most 1h after iat"


def test_an_unknown_oauth_token_is_refused(target):
    error = refusal(target, CreateIamTokenRequest(yandex_passport_oauth_token="opsd_unknown"))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error.details()
    assert error.details() == "unknown token"
