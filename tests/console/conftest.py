"""Fixtures of the console's browser tests: real opsd processes (OPSD_BIN, else
the workspace's target/debug/opsd), the REST API to make operations with, and
Debian's chromium driven by Playwright."""

import hashlib
import json
import os
import queue
import secrets
import signal
import subprocess
import threading
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parents[2]
# (what, seconds): how long each live update took to show after the API's
# answer, reported at the end of the run.
SHOWN_AFTER = []
START_TIMEOUT = 30.0
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def opsd_binary() -> str:
    binary = os.environ.get("OPSD_BIN") or str(REPO / "target" / "debug" / "opsd")
    if not os.access(binary, os.X_OK):
        pytest.fail(f"no opsd binary at {binary}: set OPSD_BIN", pytrace=False)
    return binary


def screenshot_dir() -> Path:
    """Where screenshots go: OPSD_CONSOLE_SCREENSHOTS (docs/console to refresh
    the README's), else target/console-screenshots."""
    directory = Path(os.environ.get("OPSD_CONSOLE_SCREENSHOTS") or REPO / "target" / "console-screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


class Opsd:
    """One opsd process over a SQLite store in `data_dir`."""

    def __init__(self, data_dir: Path, args=()) -> None:
        self.data_dir = data_dir
        self.args = list(args)
        self.address = "127.0.0.1:0"
        self.process = None
        self.log = deque(maxlen=300)

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self) -> "Opsd":
        self.process = subprocess.Popen(
            [opsd_binary(), "--listen", self.address, "--data-dir", str(self.data_dir), *self.args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "OPSD_LOG": "info"},
            text=True,
        )
        lines: "queue.Queue[str]" = queue.Queue()

        def drain(stream) -> None:
            for line in stream:
                self.log.append(line.rstrip("\n"))
                lines.put(line)
            lines.put("")

        threading.Thread(target=drain, args=(self.process.stderr,), daemon=True).start()
        while True:
            try:
                line = lines.get(timeout=START_TIMEOUT)
            except queue.Empty:
                self.stop()
                pytest.fail(f"opsd did not start listening:\n{self.log_tail()}", pytrace=False)
            if not line:
                pytest.fail(f"opsd exited before listening:\n{self.log_tail()}", pytrace=False)
            if "address=" in line:
                self.address = line.split("address=", 1)[1].split()[0]
                return self

    def log_tail(self) -> str:
        return "\n".join(self.log)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


class Api:
    """The REST API, as a producer or consumer holding `token` (or none)."""

    def __init__(self, base: str, token: str = "") -> None:
        self.base = base
        self.token = token

    def call(self, method: str, path: str, body=None, headers=None):
        """(status, decoded JSON body)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("content-type", "application/json")
        if self.token:
            request.add_header("authorization", f"Bearer {self.token}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def ok(self, method: str, path: str, body=None, headers=None):
        status, answer = self.call(method, path, body, headers)
        assert status == 200, f"{method} {path}: {status} {answer}"
        return answer

    def create(self, description: str, headers=None, **fields) -> str:
        body = {"description": description, **fields}
        return self.ok("POST", "/v1/operations", body, headers)["operation"]["id"]

    def progress(self, operation_id: str, done: int, total: int, message: str = "", steps=()):
        progress = {"workDone": str(done), "workTotal": str(total), "message": message,
                    "steps": [{"name": name, "state": state} for name, state in steps]}
        return self.ok("POST", f"/v1/operations/{operation_id}:updateMetadata", {"progress": progress})

    def succeed(self, operation_id: str, response=None):
        response = response or {"@type": "type.googleapis.com/google.protobuf.Struct", "value": {"ok": True}}
        return self.ok("POST", f"/v1/operations/{operation_id}:complete", {"response": response})

    def fail(self, operation_id: str, code: int, message: str):
        return self.ok("POST", f"/v1/operations/{operation_id}:complete",
                       {"error": {"code": code, "message": message}})

    def get(self, operation_id: str):
        return self.ok("GET", f"/v1/operations/{operation_id}")


def new_token() -> str:
    return "opsd_" + secrets.token_urlsafe(32)


def tokens_file(path: Path, principals) -> Path:
    """`principals`: (id, token, scopes, roles)."""
    entries = []
    for principal, token, scopes, roles in principals:
        digest = hashlib.sha256(token.encode()).hexdigest()
        entries.append(
            f'[[principal]]\nid = "{principal}"\ntoken_sha256 = "{digest}"\n'
            f"scopes = {json.dumps(list(scopes))}\nroles = {json.dumps(list(roles))}\n"
        )
    path.write_text("\n".join(entries))
    return path


@pytest.fixture
def start_opsd(tmp_path_factory):
    """Starts opsd processes with extra flags; all are stopped after the test."""
    started = []

    def start(*args: str) -> Opsd:
        server = Opsd(tmp_path_factory.mktemp("opsd-data"), args).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def browser():
    executable = os.environ.get("OPSD_CHROMIUM") or "/usr/bin/chromium"
    if not os.access(executable, os.X_OK):
        pytest.fail(f"no chromium at {executable}: apt-get install chromium, or set OPSD_CHROMIUM", pytrace=False)
    with sync_playwright() as playwright:
        # launch() gives every run a fresh, temporary profile.
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh browser context (its own sessionStorage) and page that records
    every dialog, page error and request it makes."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme="light")
    page = context.new_page()
    page.dialogs = []
    page.errors = []
    page.requests = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.on("request", lambda request: page.requests.append(request.url))

    def on_dialog(dialog):
        page.dialogs.append((dialog.type, dialog.message))
        dialog.accept() if dialog.type == "confirm" else dialog.dismiss()

    page.on("dialog", on_dialog)
    yield page
    context.close()


def pytest_terminal_summary(terminalreporter):
    if not SHOWN_AFTER:
        return
    terminalreporter.write_sep("-", "live updates, from the API's answer to the page")
    for what, seconds in SHOWN_AFTER:
        terminalreporter.write_line(f"{seconds * 1000:7.0f} ms  {what}")
    worst = max(seconds for _, seconds in SHOWN_AFTER)
    terminalreporter.write_line(f"{worst * 1000:7.0f} ms  the slowest of {len(SHOWN_AFTER)}")
