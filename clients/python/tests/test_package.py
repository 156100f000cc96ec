"""The package itself: its committed stubs are what proto/ generates, it
installs with pip, and it lives beside the official Yandex Cloud SDK."""

import subprocess
import sys
from pathlib import Path

import pytest

import opsd

HERE = Path(__file__).resolve().parent
PACKAGE_ROOT = HERE.parent


def test_the_committed_stubs_match_the_protos():
    result = subprocess.run(
        [sys.executable, str(PACKAGE_ROOT / "generate_stubs.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_tests_use_the_installed_package():
    # scripts/python-client-venv installs clients/python with pip; a copy
    # imported from the source tree would not prove that the package installs.
    location = Path(opsd.__file__).resolve()
    assert "site-packages" in location.parts, f"opsd imported from {location}, not installed by pip"
    assert (location.parent / "py.typed").exists()
    assert (location.parent / "v1" / "operation_pb2.pyi").exists()


def test_the_declared_dependencies_admit_what_the_stubs_need():
    import re

    pyproject = (PACKAGE_ROOT / "pyproject.toml").read_text()
    stubs = PACKAGE_ROOT / "src" / "opsd" / "v1"
    grpc_made = re.search(r"GRPC_GENERATED_VERSION = '([0-9.]+)'", (stubs / "producer_pb2_grpc.py").read_text())
    gencode = re.search(
        r"Domain.PUBLIC,\s*(\d+),\s*(\d+),\s*(\d+),", (stubs / "producer_pb2.py").read_text()
    )
    assert f'"grpcio>={grpc_made.group(1)},<2"' in pyproject
    assert f'"protobuf>={".".join(gencode.groups())},<7"' in pyproject
    pinned = (PACKAGE_ROOT / "requirements-dev.txt").read_text()
    assert f"grpcio-tools=={grpc_made.group(1)}" in pinned.splitlines()


def test_every_module_parses_as_python_3_9():
    import ast

    for path in sorted((PACKAGE_ROOT / "src").rglob("*.py")) + sorted(HERE.glob("*.py")):
        ast.parse(path.read_text(), str(path), feature_version=(3, 9))


# Each snippet runs in a fresh interpreter: a proto file registers once per process.
BOTH_ORDERS = {
    "official sdk first": "import yandex.cloud.operation.operation_pb2 as y; import opsd",
    "opsd first": "import opsd; import yandex.cloud.operation.operation_pb2 as y",
}


@pytest.mark.parametrize("order", sorted(BOTH_ORDERS))
def test_opsd_and_the_official_sdk_import_together(order, opsd_server):
    code = f"""
{BOTH_ORDERS[order]}
from yandex.cloud.operation import operation_service_pb2 as service
import opsd._yandex
assert opsd._yandex.OFFICIAL_SDK
assert opsd.v1.Operation.DESCRIPTOR.fields_by_name["operation"].message_type is y.Operation.DESCRIPTOR
client = opsd.Client({opsd_server.endpoint!r})
created = client.create("beside the sdk")
public = client.get_public(created.operation.id)
assert isinstance(public, y.Operation), type(public)
print("ok", created.operation.id)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("ok "), result.stdout + result.stderr


def test_without_the_official_sdk_opsd_uses_its_own_stubs(opsd_server):
    code = f"""
import sys
class NoYandex:
    def find_spec(self, name, path=None, target=None):
        if name == "yandex" or name.startswith("yandex."):
            raise ImportError("no official sdk here")
sys.meta_path.insert(0, NoYandex())
import opsd, opsd._yandex
assert not opsd._yandex.OFFICIAL_SDK
assert "yandex.cloud.operation.operation_pb2" not in sys.modules
client = opsd.Client({opsd_server.endpoint!r})
created = client.create("own stubs")
cancelled = client.cancel(created.operation.id)
import opsd._yandex.operation_pb2 as own
assert cancelled.done and type(cancelled) is own.Operation, type(cancelled)
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stdout + result.stderr
