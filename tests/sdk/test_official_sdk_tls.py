"""opsd over TLS through the unmodified official Yandex Cloud Python SDK object.

`yandexcloud.SDK` discovers its endpoints with `ApiEndpointService/List` on the
endpoint it is given, then opens TLS channels to the addresses listed for `operation`
and `iam`; operations are created and completed with opsctl, and read, awaited and
cancelled through the SDK.
"""

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import pytest
import yandexcloud
from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct
from google.rpc import code_pb2
from yandex.cloud.endpoint.api_endpoint_service_pb2 import ListApiEndpointsRequest
from yandex.cloud.endpoint.api_endpoint_service_pb2_grpc import ApiEndpointServiceStub
from yandex.cloud.operation.operation_pb2 import Operation
from yandex.cloud.operation.operation_service_pb2 import (
    CancelOperationRequest,
    GetOperationRequest,
)
from yandex.cloud.operation.operation_service_pb2_grpc import OperationServiceStub
from yandexcloud.operations import OperationError
from opsctl_cli import CLI_TIMEOUT, Opsctl

CONNECT_TIMEOUT = 10.0
RPC_TIMEOUT = 10.0
WAIT_TIMEOUT = 30.0
PRODUCER_DELAY = 2.5
MIN_WAIT = 2.0
# The token opsd issued for this test (opsctl reads the same variable).
IAM_TOKEN = os.environ.get("OPSD_TOKEN", "test-token")
REQUIRED_ENDPOINT_IDS = ("operation", "iam")
UNKNOWN_ID = "ops00000000000000000"
ENV_VARS = ("OPSD_TLS_ENDPOINT", "OPSD_TLS_CA", "OPSCTL")


@dataclass(frozen=True)
class Target:
    endpoint: str
    ca: bytes
    ca_path: str
    opsctl: str


@pytest.fixture(scope="session")
def target() -> Target:
    missing = [name for name in ENV_VARS if not os.environ.get(name)]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not set: OPSD_TLS_ENDPOINT must be host:port of a running "
            "opsd serving tls, OPSD_TLS_CA the path of the pem ca certificate that signed its "
            "certificate and OPSCTL the path of the opsctl binary",
            pytrace=False,
        )
    endpoint = os.environ["OPSD_TLS_ENDPOINT"]
    if "://" in endpoint:
        pytest.fail(
            f"OPSD_TLS_ENDPOINT={endpoint} must be host:port, without a scheme", pytrace=False
        )
    ca_path = os.environ["OPSD_TLS_CA"]
    try:
        with open(ca_path, "rb") as file:
            ca = file.read()
    except OSError as error:
        pytest.fail(f"OPSD_TLS_CA={ca_path} is not readable: {error}", pytrace=False)
    if b"-----BEGIN CERTIFICATE-----" not in ca:
        pytest.fail(f"OPSD_TLS_CA={ca_path} holds no pem certificate", pytrace=False)
    opsctl = os.environ["OPSCTL"]
    if not (os.path.isfile(opsctl) and os.access(opsctl, os.X_OK)):
        pytest.fail(f"OPSCTL={opsctl} is not an executable file", pytrace=False)
    return Target(endpoint=endpoint, ca=ca, ca_path=ca_path, opsctl=opsctl)


@pytest.fixture(scope="session")
def discovered(target: Target) -> dict[str, str]:
    """The endpoints opsd lists, checked up front so that a wrong answer fails clearly."""
    credentials = grpc.ssl_channel_credentials(root_certificates=target.ca)
    with grpc.secure_channel(target.endpoint, credentials) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=CONNECT_TIMEOUT)
        except grpc.FutureTimeoutError:
            pytest.fail(
                f"no tls connection to opsd at {target.endpoint} verified by {target.ca_path} "
                f"within {CONNECT_TIMEOUT:g}s",
                pytrace=False,
            )
        try:
            listed = ApiEndpointServiceStub(channel).List(
                ListApiEndpointsRequest(), timeout=RPC_TIMEOUT
            )
        except grpc.RpcError as error:
            pytest.fail(
                f"ApiEndpointService/List at {target.endpoint} failed: "
                f"{error.code().name}: {error.details()}",
                pytrace=False,
            )
    endpoints = {endpoint.id: endpoint.address for endpoint in listed.endpoints}
    absent = [id_ for id_ in REQUIRED_ENDPOINT_IDS if not endpoints.get(id_)]
    if absent:
        pytest.fail(
            f"ApiEndpointService/List at {target.endpoint} has no address for "
            f"{', '.join(absent)}: {endpoints}",
            pytrace=False,
        )
    return endpoints


@pytest.fixture(scope="session")
def sdk(target: Target, discovered: dict[str, str]) -> yandexcloud.SDK:
    return yandexcloud.SDK(
        endpoint=target.endpoint, root_certificates=target.ca, iam_token=IAM_TOKEN
    )


@pytest.fixture(scope="session")
def operations(sdk: yandexcloud.SDK) -> OperationServiceStub:
    return sdk.client(OperationServiceStub)


@pytest.fixture(scope="session")
def opsctl(target: Target) -> Opsctl:
    return Opsctl(
        [target.opsctl, "--endpoint", f"https://{target.endpoint}", "--ca", target.ca_path]
    )


def get(operations: OperationServiceStub, operation_id: str) -> Operation:
    return operations.Get(GetOperationRequest(operation_id=operation_id), timeout=RPC_TIMEOUT)


def to_dict(message) -> dict:
    return json_format.MessageToDict(message)


def test_wait_returns_the_response_of_an_operation_completed_later(sdk, operations, opsctl):
    metadata = {"instanceId": "fhm123456789", "zone": "ru-central1-a"}
    response = {"name": "vm-1", "cores": 2, "preemptible": False, "labels": {"env": "test"}}
    created = opsctl.create("create instance", metadata=metadata)
    operation = get(operations, created["id"])
    assert operation.id == created["id"]
    assert operation.done is False

    def produce() -> dict:
        time.sleep(PRODUCER_DELAY)
        return opsctl.complete_with_response(created["id"], response)

    with ThreadPoolExecutor(max_workers=1) as producer:
        started = time.monotonic()
        completion = producer.submit(produce)
        result = sdk.wait_operation_and_get_result(
            operation, response_type=Struct, meta_type=Struct, timeout=WAIT_TIMEOUT
        )
        elapsed = time.monotonic() - started
        completion.result(timeout=CLI_TIMEOUT)

    assert elapsed >= MIN_WAIT, f"the sdk returned after {elapsed:.2f}s, before completion"
    assert elapsed < WAIT_TIMEOUT, f"the sdk gave up waiting after {elapsed:.2f}s"
    assert result.operation.id == created["id"]
    assert to_dict(result.meta) == metadata
    assert to_dict(result.response) == response

    completed = get(operations, created["id"])
    assert completed.done is True
    assert completed.WhichOneof("result") == "response"


def test_wait_raises_operation_error_for_a_failed_operation(sdk, operations, opsctl):
    created = opsctl.create("create bucket")
    operation = get(operations, created["id"])
    opsctl.complete_with_error(created["id"], code_pb2.FAILED_PRECONDITION, "quota exceeded")

    with pytest.raises(OperationError) as raised:
        sdk.wait_operation_and_get_result(
            operation, response_type=Struct, meta_type=Struct, timeout=WAIT_TIMEOUT
        )

    error = raised.value
    assert error.operation_result.operation.id == created["id"]
    code = re.search(r"Error code: (\d+)\.", error.message)
    assert code is not None, error.message
    assert int(code.group(1)) == code_pb2.FAILED_PRECONDITION == 9, error.message
    assert "Message: quota exceeded. " in error.message, error.message

    failed = get(operations, created["id"])
    assert failed.done is True
    assert failed.WhichOneof("result") == "error"
    assert failed.error.code == code_pb2.FAILED_PRECONDITION
    assert failed.error.message == "quota exceeded"


def test_cancel_through_the_sdk_client_completes_with_cancelled(operations, opsctl):
    created = opsctl.create("delete instance")

    cancelled = operations.Cancel(
        CancelOperationRequest(operation_id=created["id"]), timeout=RPC_TIMEOUT
    )

    assert cancelled.id == created["id"]
    assert cancelled.done is True
    assert cancelled.WhichOneof("result") == "error"
    assert cancelled.error.code == code_pb2.CANCELLED == 1
    assert get(operations, created["id"]) == cancelled


def test_get_of_an_unknown_id_through_the_sdk_client_is_not_found(operations):
    with pytest.raises(grpc.RpcError) as raised:
        get(operations, UNKNOWN_ID)

    assert raised.value.code() == grpc.StatusCode.NOT_FOUND, raised.value.details()


def test_a_reported_failure_reads_as_error_while_not_done(operations, opsctl):
    created = opsctl.create("create disk")
    opsctl.report_failure(created["id"], code_pb2.RESOURCE_EXHAUSTED, "quota exceeded")

    failing = get(operations, created["id"])

    # The SDK's own message type carries both: not done, yet an error.
    assert failing.done is False
    assert failing.WhichOneof("result") == "error"
    assert failing.error.code == code_pb2.RESOURCE_EXHAUSTED == 8
    assert failing.error.message == "quota exceeded"


def test_the_sdk_waiter_waits_past_a_reported_failure_until_done(sdk, operations, opsctl):
    """The waiter polls until `done`: a failure reported while the producer cleans up
    does not end the wait; the final error raises OperationError once it is done."""
    created = opsctl.create("create disk")
    operation = get(operations, created["id"])
    opsctl.report_failure(created["id"], code_pb2.RESOURCE_EXHAUSTED, "quota exceeded")

    def clean_up_then_complete() -> dict:
        time.sleep(PRODUCER_DELAY)
        return opsctl.complete_as_reported(created["id"])

    with ThreadPoolExecutor(max_workers=1) as producer:
        started = time.monotonic()
        completion = producer.submit(clean_up_then_complete)
        with pytest.raises(OperationError) as raised:
            sdk.wait_operation_and_get_result(
                operation, response_type=Struct, meta_type=Struct, timeout=WAIT_TIMEOUT
            )
        elapsed = time.monotonic() - started
        completion.result(timeout=CLI_TIMEOUT)

    assert elapsed >= MIN_WAIT, f"the sdk stopped after {elapsed:.2f}s, at the reported failure"
    assert elapsed < WAIT_TIMEOUT, f"the sdk gave up waiting after {elapsed:.2f}s"
    assert "Error code: 8. " in raised.value.message, raised.value.message
    assert "Message: quota exceeded. " in raised.value.message, raised.value.message
    assert get(operations, created["id"]).done is True


def test_the_sdk_waiter_raises_at_its_timeout_for_a_failing_operation(sdk, operations, opsctl):
    """At its timeout the waiter returns the latest state; with an error set there,
    the SDK raises OperationError although the operation is not done."""
    created = opsctl.create("create disk")
    operation = get(operations, created["id"])
    opsctl.report_failure(created["id"], code_pb2.RESOURCE_EXHAUSTED, "still cleaning up")

    started = time.monotonic()
    with pytest.raises(OperationError) as raised:
        sdk.wait_operation_and_get_result(
            operation, response_type=Struct, meta_type=Struct, timeout=MIN_WAIT
        )
    elapsed = time.monotonic() - started

    assert elapsed >= MIN_WAIT, f"the sdk stopped after {elapsed:.2f}s, before its timeout"
    assert "Message: still cleaning up. " in raised.value.message, raised.value.message
    assert get(operations, created["id"]).done is False
