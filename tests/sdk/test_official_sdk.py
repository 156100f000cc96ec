"""opsd through the official Yandex Cloud Python SDK's generated OperationService stubs.

Operations are created and completed with opsctl; every read and cancel goes through
the SDK's stubs, so a wrong field, oneof, type URL or status code shows up here.
"""

import os
import re
import uuid
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.struct_pb2 import Struct
from google.rpc import code_pb2
from yandex.cloud.operation import operation_service_pb2, operation_service_pb2_grpc
from yandex.cloud.operation.operation_pb2 import Operation
from opsctl_cli import Opsctl

CONNECT_TIMEOUT = 10.0
RPC_TIMEOUT = 10.0
STRUCT_TYPE_URL = "type.googleapis.com/google.protobuf.Struct"
UNKNOWN_ID = "ops00000000000000000"


@dataclass(frozen=True)
class Target:
    endpoint: str
    opsctl: str


class OperationService:
    """The public API through the SDK's stub, with the metadata the SDK sends on every call."""

    def __init__(self, channel: grpc.Channel):
        self._stub = operation_service_pb2_grpc.OperationServiceStub(channel)

    def get(self, operation_id: str) -> Operation:
        request = operation_service_pb2.GetOperationRequest(operation_id=operation_id)
        return self._stub.Get(request, metadata=self._metadata(), timeout=RPC_TIMEOUT)

    def cancel(self, operation_id: str) -> Operation:
        request = operation_service_pb2.CancelOperationRequest(operation_id=operation_id)
        return self._stub.Cancel(request, metadata=self._metadata(), timeout=RPC_TIMEOUT)

    @staticmethod
    def _metadata() -> tuple:
        return (
            ("authorization", "Bearer test-token"),
            ("idempotency-key", str(uuid.uuid4())),
        )


@pytest.fixture(scope="session")
def target() -> Target:
    missing = [name for name in ("OPSD_ENDPOINT", "OPSCTL") if not os.environ.get(name)]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not set: OPSD_ENDPOINT must be host:port of a running "
            "opsd (plaintext grpc) and OPSCTL the path of the opsctl binary",
            pytrace=False,
        )
    opsctl = os.environ["OPSCTL"]
    if not (os.path.isfile(opsctl) and os.access(opsctl, os.X_OK)):
        pytest.fail(f"OPSCTL={opsctl} is not an executable file", pytrace=False)
    return Target(endpoint=os.environ["OPSD_ENDPOINT"], opsctl=opsctl)


@pytest.fixture(scope="session")
def channel(target: Target):
    with grpc.insecure_channel(target.endpoint) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=CONNECT_TIMEOUT)
        except grpc.FutureTimeoutError:
            pytest.fail(
                f"no grpc connection to opsd at {target.endpoint} within {CONNECT_TIMEOUT:g}s",
                pytrace=False,
            )
        yield channel


@pytest.fixture(scope="session")
def operations(channel: grpc.Channel) -> OperationService:
    return OperationService(channel)


@pytest.fixture(scope="session")
def opsctl(target: Target) -> Opsctl:
    return Opsctl([target.opsctl, "--endpoint", target.endpoint])


def unpack_struct(packed) -> dict:
    struct = Struct()
    assert packed.Unpack(struct), f"{packed.type_url!r} does not unpack into google.protobuf.Struct"
    return json_format.MessageToDict(struct)


def parse_operation(printed: dict) -> Operation:
    return json_format.ParseDict(printed, Operation())


def by_value(operation: Operation) -> dict:
    """The operation with packed messages unpacked: map entries may be encoded in any order."""
    return json_format.MessageToDict(operation)


def rpc_error(call, operation_id: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call(operation_id)
    return raised.value


def test_get_returns_the_operation_created_by_opsctl(operations, opsctl):
    metadata = {
        "instanceId": "fhm123456789",
        "zone": "ru-central1-a",
        "cores": 2,
        "preemptible": False,
        "labels": {"env": "test"},
        "disks": ["boot", "data"],
    }
    created = opsctl.create("create instance", metadata=metadata)

    operation = operations.get(created["id"])

    assert operation.id == created["id"]
    assert re.fullmatch(r"[0-9a-z]{20}", operation.id), operation.id
    assert operation.description == "create instance"
    assert operation.created_by == created.get("createdBy", "")
    assert operation.done is False
    assert operation.WhichOneof("result") is None
    assert operation.metadata.type_url == STRUCT_TYPE_URL
    assert unpack_struct(operation.metadata) == metadata
    assert operation.created_at.seconds > 0
    assert operation.created_at.ToNanoseconds() <= operation.modified_at.ToNanoseconds()


def test_opsctl_json_parses_into_the_sdk_operation_that_get_returns(operations, opsctl):
    created = opsctl.create("resize disk", metadata={"diskId": "epd0123456789", "size": 10})

    assert by_value(parse_operation(created)) == by_value(operations.get(created["id"]))


def test_cancel_completes_a_cancellable_operation_with_cancelled(operations, opsctl):
    created = opsctl.create("delete instance")

    cancelled = operations.cancel(created["id"])

    assert cancelled.id == created["id"]
    assert cancelled.done is True
    assert cancelled.WhichOneof("result") == "error"
    assert cancelled.error.code == code_pb2.CANCELLED == 1
    assert cancelled.created_at.ToNanoseconds() <= cancelled.modified_at.ToNanoseconds()

    again = operations.cancel(created["id"])
    assert again == cancelled
    assert again.SerializeToString(deterministic=True) == cancelled.SerializeToString(
        deterministic=True
    )

    assert operations.get(created["id"]) == cancelled


def test_cancel_of_a_not_cancellable_operation_fails_precondition(operations, opsctl):
    created = opsctl.create("upload object", not_cancellable=True)

    error = rpc_error(operations.cancel, created["id"])

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
    operation = operations.get(created["id"])
    assert operation.done is False
    assert operation.WhichOneof("result") is None


def test_cooperative_cancel_leaves_completion_to_the_producer(operations, opsctl):
    created = opsctl.create("stop instance", cooperative_cancel=True)

    requested = operations.cancel(created["id"])

    assert requested.id == created["id"]
    assert requested.done is False
    assert requested.WhichOneof("result") is None

    opsctl.complete_with_error(created["id"], code_pb2.CANCELLED, "cancelled by producer")

    operation = operations.get(created["id"])
    assert operation.done is True
    assert operation.WhichOneof("result") == "error"
    assert operation.error.code == code_pb2.CANCELLED
    assert operation.error.message == "cancelled by producer"


def test_response_unpacks_by_the_type_name_in_its_url(operations, opsctl):
    response = {"name": "vm-1", "cores": 2}
    created = opsctl.create("create vm")
    completed = opsctl.complete_with_response(created["id"], response)

    operation = operations.get(created["id"])

    assert operation.done is True
    assert operation.WhichOneof("result") == "response"
    assert operation.response.type_url == STRUCT_TYPE_URL
    assert unpack_struct(operation.response) == response

    type_name = operation.response.type_url.rsplit("/", 1)[-1]
    assert type_name == Struct.DESCRIPTOR.full_name == operation.response.TypeName()
    message_class = message_factory.GetMessageClass(
        descriptor_pool.Default().FindMessageTypeByName(type_name)
    )
    unpacked = message_class()
    assert operation.response.Unpack(unpacked)
    assert json_format.MessageToDict(unpacked) == response

    assert by_value(parse_operation(completed)) == by_value(operation)


@pytest.mark.parametrize("rpc", ["get", "cancel"])
def test_unknown_id_is_not_found(operations, rpc):
    error = rpc_error(getattr(operations, rpc), UNKNOWN_ID)

    assert error.code() == grpc.StatusCode.NOT_FOUND, error.details()


@pytest.mark.parametrize("rpc", ["get", "cancel"])
def test_empty_id_is_invalid_argument(operations, rpc):
    error = rpc_error(getattr(operations, rpc), "")

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
