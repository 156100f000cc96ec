"""Every status opsd answers becomes its typed exception, with the code, the
message and the decoded google.rpc details; credentials and TLS as opsctl
takes them; retries on UNAVAILABLE."""

import logging
import time

import grpc
import pytest
from google.rpc import error_details_pb2

import opsd
from opsd.errors import ERROR_CLASSES, from_grpc

from conftest import certificates, make_token, tokens_file


def test_every_status_code_has_its_own_exception_class():
    codes = [code for code in grpc.StatusCode if code != grpc.StatusCode.OK]
    assert sorted(ERROR_CLASSES, key=lambda c: c.value[0]) == codes
    classes = set(ERROR_CLASSES.values())
    assert len(classes) == len(codes)
    for code, cls in ERROR_CLASSES.items():
        assert cls.code == code
        assert cls.__name__.lower() == code.name.replace("_", "").lower()
        assert issubclass(cls, opsd.RpcError) and issubclass(cls, opsd.OpsdError)


def test_invalid_argument_carries_bad_request_field_violations(client):
    with pytest.raises(opsd.InvalidArgument) as raised:
        client.get("")
    error = raised.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.message == "operation_id: is required"
    assert error.field_violations == [("operation_id", "is required")]
    assert isinstance(error.bad_request, error_details_pb2.BadRequest)
    assert error.status.code == 3
    assert str(error) == "INVALID_ARGUMENT: operation_id: is required"

    with pytest.raises(opsd.InvalidArgument) as raised:
        client.create("x" * 257, lease=0.5)
    fields = [field for field, _ in raised.value.field_violations]
    assert fields == ["description", "lease_duration"], raised.value.message


def test_not_found_carries_resource_info(client):
    with pytest.raises(opsd.NotFound) as raised:
        client.get("ops0000000000000000x")
    error = raised.value
    assert error.message == "operation ops0000000000000000x not found"
    assert error.resource_info.resource_type == "operation"
    assert error.resource_info.resource_name == "ops0000000000000000x"


def test_failed_precondition_carries_its_type(client):
    locked = client.create("not cancellable", cancellation="not_cancellable").operation.id
    with pytest.raises(opsd.FailedPrecondition) as raised:
        client.cancel(locked)
    error = raised.value
    assert error.precondition_types == ["NOT_CANCELLABLE"]
    assert error.precondition_failure.violations[0].subject == f"operations/{locked}"
    assert error.message == f"operation is not cancellable: {locked}"

    client.complete(locked, response={"ok": True})
    with pytest.raises(opsd.FailedPrecondition) as raised:
        client.complete(locked, response={"ok": False})
    assert raised.value.precondition_types == ["COMPLETED_DIFFERENTLY"]
    with pytest.raises(opsd.FailedPrecondition) as raised:
        client.progress(locked, 1, 2)
    assert raised.value.precondition_types == ["ALREADY_DONE"]


def test_aborted_names_the_running_exclusive_operation(client):
    first = client.create("exclusive", resource_id="disk-exclusive", exclusive=True).operation.id
    with pytest.raises(opsd.Aborted) as raised:
        client.create("second", resource_id="disk-exclusive", exclusive=True)
    assert raised.value.resource_info.resource_name == first
    assert raised.value.message == f"resource disk-exclusive is busy with running operation {first}"


def test_resource_exhausted_past_the_watchers_limit(start_opsd):
    server = start_opsd("--max-watchers", "1")
    with opsd.Client(server.endpoint, timeout=10) as client:
        op_id = client.create("watched twice").operation.id
        first = client.watch(op_id)
        assert next(first).operation.id == op_id
        with pytest.raises(opsd.ResourceExhausted) as raised:
            next(client.watch(op_id))
        first.close()
    assert "--max-watchers" in raised.value.message


def test_unimplemented_for_a_method_opsd_does_not_serve(client):
    method = client._channel.unary_unary("/opsd.v1.OperationService/NoSuchMethod")
    with pytest.raises(grpc.RpcError) as raw:
        method(b"", timeout=5)
    error = from_grpc(raw.value)
    assert isinstance(error, opsd.Unimplemented)
    assert error.code == grpc.StatusCode.UNIMPLEMENTED


def test_unavailable_after_jittered_retries_of_an_idempotent_call(unused_address, caplog):
    retry = opsd.Retry(attempts=4, initial_backoff=0.05, max_backoff=0.2)
    with opsd.Client(unused_address, timeout=2, retry=retry) as client:
        with caplog.at_level(logging.DEBUG, logger="opsd"):
            with pytest.raises(opsd.Unavailable):
                client.get("ops00000000000000000")
            retries = [r for r in caplog.records if r.getMessage() == "call failed, retrying"]
            assert len(retries) == 3
            assert all(0.025 <= r.pause <= 0.2 for r in retries)
            caplog.clear()
            # Create without an idempotency key is not retried: it might make a second operation.
            with pytest.raises(opsd.Unavailable):
                client.create("once")
            assert not [r for r in caplog.records if r.getMessage() == "call failed, retrying"]
            with pytest.raises(opsd.Unavailable):
                client.create("once", idempotency_key="k1")
            assert len([r for r in caplog.records if r.getMessage() == "call failed, retrying"]) == 3


@pytest.fixture
def unused_address():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"


@pytest.fixture
def secured(start_opsd, tmp_path):
    """A TLS server admitting an admin and a viewer token."""
    ca, cert, key = certificates(tmp_path)
    admin, viewer = make_token(), make_token()
    tokens = tokens_file(
        tmp_path / "tokens.toml",
        [("py-admin", admin, ["admin"]), ("py-viewer", viewer, ["viewer"])],
    )
    server = start_opsd("--tls-cert", str(cert), "--tls-key", str(key), "--tokens-file", str(tokens))
    return server, ca, admin, viewer


def test_tls_with_a_ca_and_a_token_from_the_environment(secured, monkeypatch):
    server, ca, admin, _ = secured
    monkeypatch.setenv("OPSD_TOKEN", admin)
    monkeypatch.setenv("OPSD_CA", str(ca))
    with opsd.Client(f"https://{server.endpoint}") as client:
        op = client.create("over tls")
        assert op.operation.created_by == "py-admin"
        assert client.get(op.operation.id).operation.id == op.operation.id
    with opsd.Client(f"https://{server.endpoint}", ca=ca.read_bytes(), token=admin) as client:
        assert client.get(op.operation.id).operation.created_by == "py-admin"


def test_unauthenticated_and_permission_denied(secured, monkeypatch):
    server, ca, admin, viewer = secured
    monkeypatch.delenv("OPSD_TOKEN", raising=False)
    endpoint = f"https://{server.endpoint}"
    with opsd.Client(endpoint, ca=str(ca)) as anonymous:
        with pytest.raises(opsd.Unauthenticated) as raised:
            anonymous.get("ops00000000000000000")
    assert raised.value.message == "missing credentials: send authorization: Bearer <token>"
    with opsd.Client(endpoint, ca=str(ca), token=make_token()) as stranger:
        with pytest.raises(opsd.Unauthenticated) as raised:
            stranger.list()
    assert raised.value.message == "unknown token"
    with opsd.Client(endpoint, ca=str(ca), token=viewer) as reader:
        with pytest.raises(opsd.PermissionDenied) as raised:
            reader.create("not allowed")
        assert raised.value.message == "permission denied: py-viewer may not use the producer api (producer)"
        with pytest.raises(opsd.PermissionDenied):
            reader.start_operation(description="not allowed either")


def test_tls_without_the_ca_is_refused(secured):
    server, _, admin, _ = secured
    retry = opsd.Retry(attempts=1)
    with opsd.Client(f"https://{server.endpoint}", token=admin, timeout=5, retry=retry) as client:
        with pytest.raises(opsd.Unavailable):
            client.get("ops00000000000000000")
    with opsd.Client(server.endpoint, token=admin, timeout=5, retry=retry) as plaintext:
        with pytest.raises(opsd.Unavailable):
            plaintext.get("ops00000000000000000")


@pytest.mark.parametrize(
    "endpoint, message",
    [
        ("ftp://host:1", "the scheme must be http or https"),
        ("https://host/path", "a path is not allowed"),
        ("host", "expected HOST:PORT"),
        ("", "expected HOST:PORT"),
    ],
)
def test_bad_endpoints_are_refused_clearly(endpoint, message):
    with pytest.raises(ValueError, match=message):
        opsd.Client(endpoint)


def test_bad_tokens_and_missing_ca_files_are_refused_clearly(tmp_path):
    with pytest.raises(ValueError, match="the token cannot be sent as a header value"):
        opsd.Client("127.0.0.1:1", token="two words")
    with pytest.raises(ValueError, match="ca .*missing.pem"):
        opsd.Client("https://127.0.0.1:1", ca=str(tmp_path / "missing.pem"))


def test_the_default_https_port_is_443():
    client = opsd.Client("https://opsd.example.internal")
    assert client.endpoint == "opsd.example.internal:443"
    client.close()


def test_a_wait_does_not_retry_forever_on_a_final_answer(client):
    started = time.monotonic()
    with pytest.raises(opsd.InvalidArgument):
        client.wait("not-an-id", timeout=30)
    assert time.monotonic() - started < 5


def test_bad_arguments_are_refused_before_any_call(client):
    with pytest.raises(ValueError, match="unknown cancellation 'sometimes'"):
        client.create("x", cancellation="sometimes")
    with pytest.raises(ValueError, match="unknown step state 'halfway'"):
        client.progress("ops00000000000000000", 1, 2, steps={"copy": "halfway"})
    with pytest.raises(TypeError, match="cannot pack int"):
        client.create("x", metadata=42)
    with pytest.raises(ValueError, match="not both"):
        client.complete("ops00000000000000000", response={}, error=opsd.status(9, "no"))
