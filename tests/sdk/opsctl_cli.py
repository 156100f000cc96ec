"""The producer side of the SDK tests: opsctl with --format json, each call
returning the operation it printed."""

import json
import shlex
import subprocess

import pytest

CLI_TIMEOUT = 30.0


class Opsctl:
    def __init__(self, base: list[str]):
        """`base` is the opsctl binary and its connection flags."""
        self._base = [*base, "--format", "json"]

    def create(
        self,
        description: str,
        *,
        not_cancellable: bool = False,
        cooperative_cancel: bool = False,
        metadata: dict | None = None,
    ) -> dict:
        args = ["create", "--description", description]
        if not_cancellable:
            args.append("--not-cancellable")
        if cooperative_cancel:
            args.append("--cooperative-cancel")
        if metadata is not None:
            args += ["--metadata-json", json.dumps(metadata)]
        return self._run(args)

    def complete_with_response(self, operation_id: str, response: dict) -> dict:
        return self._run(["complete", operation_id, "--response-json", json.dumps(response)])

    def complete_with_error(self, operation_id: str, code: int, message: str) -> dict:
        return self._run(
            ["complete", operation_id, "--error-code", str(code), "--error-message", message]
        )

    def report_failure(self, operation_id: str, code: int, message: str) -> dict:
        return self._run(
            ["report-failure", operation_id, "--error-code", str(code), "--error-message", message]
        )

    def complete_as_reported(self, operation_id: str) -> dict:
        return self._run(["complete", operation_id, "--as-reported"])

    def _run(self, args: list[str]) -> dict:
        command = self._base + args
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False
        )
        if result.returncode != 0:
            pytest.fail(
                f"{shlex.join(command)} exited with {result.returncode}: {result.stderr.strip()}"
            )
        try:
            return json.loads(result.stdout)
        except json.JSONDecodeError as error:
            pytest.fail(f"{shlex.join(command)} printed invalid json ({error}): {result.stdout!r}")
