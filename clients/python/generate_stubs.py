"""Generates the protobuf and gRPC stubs of the opsd package from the repository's proto/.

    python generate_stubs.py          # writes them into src/opsd
    python generate_stubs.py --check  # regenerates into a temporary directory and
                                      # fails, listing the differences, unless the
                                      # committed stubs are exactly what it made

It needs grpcio-tools at the version pinned in requirements-dev.txt (the stubs
carry that version). The layout inside the package:

    proto/opsd/v1/*.proto                   -> src/opsd/v1/*_pb2.py, *_pb2.pyi, *_pb2_grpc.py
    proto/yandex/cloud/operation/*.proto    -> src/opsd/_yandex/ (same names)

`opsd.v1` is a subpackage of `opsd`, so its generated absolute imports work as
they are. The yandex stubs are imported through `opsd._yandex`, which prefers
the official SDK's modules of the same protos when that SDK is installed (one
process cannot hold two copies of a proto file); so every
`from yandex.cloud.operation import` becomes `from opsd._yandex import`.
`google.rpc` comes from googleapis-common-protos.
"""

import argparse
import difflib
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
PACKAGE = HERE / "src" / "opsd"

# proto file (relative to proto/) -> directory inside the package
PROTOS = {
    "opsd/v1/operation.proto": "v1",
    "opsd/v1/producer.proto": "v1",
    "yandex/cloud/operation/operation.proto": "_yandex",
    "yandex/cloud/operation/operation_service.proto": "_yandex",
}

SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")

YANDEX_IMPORT = re.compile(r"^from yandex\.cloud\.operation import ", re.MULTILINE)


def generated_names():
    """Every generated file, as a path relative to the package."""
    names = []
    for proto, directory in PROTOS.items():
        stem = Path(proto).stem
        names.extend(f"{directory}/{stem}{suffix}" for suffix in SUFFIXES)
    return sorted(names)


def generate(out: Path) -> None:
    """Runs protoc (from grpcio-tools) and lays the stubs out under `out` as in the package."""
    from grpc_tools import protoc  # the pinned grpcio-tools
    import grpc_tools

    raw = Path(tempfile.mkdtemp(prefix="opsd-stubs-"))
    try:
        well_known = Path(grpc_tools.__file__).parent / "_proto"
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={raw}",
            f"--pyi_out={raw}",
            f"--grpc_python_out={raw}",
            *PROTOS,
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        for proto, directory in PROTOS.items():
            stem = Path(proto).stem
            for suffix in SUFFIXES:
                source = raw / Path(proto).parent / f"{stem}{suffix}"
                text = YANDEX_IMPORT.sub("from opsd._yandex import ", source.read_text())
                target = out / directory / f"{stem}{suffix}"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
    finally:
        shutil.rmtree(raw, ignore_errors=True)


def check() -> int:
    """0 when the committed stubs equal freshly generated ones; prints a diff otherwise."""
    with tempfile.TemporaryDirectory(prefix="opsd-stubs-check-") as fresh:
        generate(Path(fresh))
        problems = []
        for name in generated_names():
            want = (Path(fresh) / name).read_text()
            committed = PACKAGE / name
            have = committed.read_text() if committed.exists() else ""
            if want != have:
                problems.append(name)
                sys.stdout.writelines(
                    difflib.unified_diff(
                        have.splitlines(keepends=True),
                        want.splitlines(keepends=True),
                        f"committed/{name}",
                        f"generated/{name}",
                    )
                )
        if problems:
            print(
                "the stubs do not match proto/: run `python clients/python/generate_stubs.py`"
                f" ({', '.join(problems)})"
            )
            return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    if parser.parse_args().check:
        return check()
    generate(PACKAGE)
    for name in generated_names():
        print(os.path.join("src", "opsd", name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
