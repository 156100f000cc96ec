"""The web console in a real chromium against a real opsd: every operation is
made through the REST API, every check is on what the page shows."""

import re
import time
import urllib.request

from playwright.sync_api import expect

from conftest import SHOWN_AFTER, Api, new_token, screenshot_dir, tokens_file

# A change made through the API while a page is open shows within a second.
LIVE = 1000
XSS = '<img src=x onerror="window.__pwned=1;alert(1)">'


def rows(page):
    return page.locator("#rows tr")


def row(page, operation_id):
    return page.locator(f'#rows tr[data-id="{operation_id}"]')


def shown(what, action, expectation):
    """Runs `action` (a change through the API), then `expectation` (which
    must hold within LIVE), and records how long the page took."""
    action()
    started = time.monotonic()
    expectation()
    SHOWN_AFTER.append((what, time.monotonic() - started))


def fetched(page, path):
    """Whether the page has finished a request to `path` (a resource timing entry)."""
    return page.evaluate(
        "(path) => performance.getEntriesByType('resource').some((e) => new URL(e.name).pathname === path)",
        path,
    )


def test_the_list_shows_operations_and_follows_the_feed(start_opsd, page):
    server = start_opsd()
    api = Api(server.url)
    first = api.create("snapshot disk-1", resourceId="disk-1", idPrefix="snp")
    second = api.create("resize disk-2", resourceId="disk-2")
    api.progress(second, 3, 10, "copying blocks")
    done = api.create("delete disk-3", resourceId="disk-3")
    api.succeed(done)

    page.goto(server.url + "/console")
    expect(rows(page)).to_have_count(3)
    # Newest first.
    assert [r.get_attribute("data-id") for r in rows(page).all()] == [done, second, first]
    expect(row(page, done).locator(".state")).to_have_text("succeeded")
    expect(row(page, second).locator(".progress .text")).to_contain_text("3/10 (30%)")
    expect(page.locator("#live")).to_have_text("live")
    # Once the feed is open the page reads its first page again, once, not
    # each row by itself.
    page.wait_for_function(
        "() => performance.getEntriesByType('resource')"
        ".filter((e) => new URL(e.name).pathname === '/v1/operations').length >= 2")
    assert not [url for url in page.requests if "/v1/operations/" in url], page.requests

    # Scrolled down, the page keeps its place while rows arrive above.
    page.set_viewport_size({"width": 1280, "height": 300})
    page.mouse.wheel(0, 200)
    # A function, not an expression: the console's policy forbids eval.
    page.wait_for_function("() => window.scrollY > 0")
    scrolled = page.evaluate("window.scrollY")

    # Changes made through the API while the page is open show without a
    # reload, each within a second of the API's answer.
    shown("progress in the list", lambda: api.progress(first, 7, 10, "uploading"),
          lambda: expect(row(page, first).locator(".progress .text")).to_contain_text("7/10 (70%)", timeout=LIVE))
    shown("completion in the list", lambda: api.succeed(first),
          lambda: expect(row(page, first).locator(".state")).to_have_text("succeeded", timeout=LIVE))
    made = []
    shown("new operation in the list", lambda: made.append(api.create("snapshot disk-9", resourceId="disk-9")),
          lambda: expect(rows(page).first).to_have_attribute("data-id", made[0], timeout=LIVE))
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1, "the page reloaded"
    assert page.evaluate("window.scrollY") >= scrolled, "the scroll position was lost"

    page.set_viewport_size({"width": 1280, "height": 800})
    page.evaluate("window.scrollTo(0, 0)")
    shown("steps in the list",
          lambda: api.progress(second, 6, 10, "copying blocks", [("prepare", "STATE_DONE"), ("copy", "STATE_RUNNING")]),
          lambda: expect(row(page, second).locator(".progress .text")).to_contain_text("6/10", timeout=LIVE))
    page.screenshot(path=str(screenshot_dir() / "list.png"), animations="disabled")
    # Nothing came from anywhere but opsd itself.
    assert all(url.startswith(server.url + "/") for url in page.requests), page.requests
    assert not page.errors, page.errors


def test_filters_in_the_url_show_only_matching_rows(start_opsd, page):
    server = start_opsd()
    api = Api(server.url)
    wanted = api.create("snapshot disk-1", resourceId="disk-1")
    finished = api.create("old snapshot of disk-1", resourceId="disk-1")
    api.succeed(finished)
    other = api.create("snapshot disk-2", resourceId="disk-2")
    scoped = api.create("snapshot disk-1 elsewhere", resourceId="disk-1", scope="team-b")

    page.goto(server.url + "/console?resourceId=disk-1&state=RUNNING")
    expect(rows(page)).to_have_count(2)
    listed = {r.get_attribute("data-id") for r in rows(page).all()}
    assert listed == {wanted, scoped}
    # The form shows the filters the URL holds.
    expect(page.locator('input[name="resourceId"]')).to_have_value("disk-1")
    expect(page.locator('select[name="state"]')).to_have_value("RUNNING")

    page.goto(server.url + "/console?resourceId=disk-1&state=RUNNING&scope=team-b")
    expect(rows(page)).to_have_count(1)
    expect(rows(page).first).to_have_attribute("data-id", scoped)

    # A live change that leaves the filter takes the row away; one that does
    # not match never appears.
    shown("a row leaving the filter", lambda: api.succeed(scoped),
          lambda: expect(rows(page)).to_have_count(0, timeout=LIVE))
    api.create("snapshot disk-2 again", resourceId="disk-2", scope="team-b")

    # The form writes the URL: filters by text in the description, ignoring case.
    page.goto(server.url + "/console")
    page.fill('input[name="descriptionContains"]', "DISK-2")
    page.press('input[name="descriptionContains"]', "Enter")
    page.wait_for_url(re.compile(r".*descriptionContains=DISK-2.*"))
    expect(rows(page)).to_have_count(2)
    assert other in {r.get_attribute("data-id") for r in rows(page).all()}

    # Bad filters get the API's own error.
    page.goto(server.url + "/console?createdAfter=yesterday")
    expect(page.locator(".error")).to_contain_text("400")
    assert not page.errors, page.errors


def test_id_prefix_and_description_filters_find_rows_beyond_the_first_page(start_opsd, page):
    server = start_opsd()
    api = Api(server.url)
    # The oldest operation, so not on the first page of the unfiltered list.
    needle = api.create("Resize ÄRGER-disk to 50%", idPrefix="fnd")
    hay = [api.create(f"snapshot disk-{n}", idPrefix="hay") for n in range(8)]

    page.goto(server.url + "/console?pageSize=3")
    expect(rows(page)).to_have_count(3)
    assert needle not in {r.get_attribute("data-id") for r in rows(page).all()}
    expect(page.locator("#more")).to_be_visible()

    for query in ["idPrefix=fnd", f"idPrefix={needle[:12]}", "descriptionContains=%C3%A4rger-DISK",
                  "descriptionContains=50%25", "idPrefix=fnd&descriptionContains=resize"]:
        page.goto(server.url + "/console?pageSize=3&" + query)
        expect(rows(page)).to_have_count(1)
        expect(rows(page).first).to_have_attribute("data-id", needle)
        expect(page.locator("#more")).to_be_hidden()
    # The form shows them under the API's names.
    expect(page.locator('input[name="idPrefix"]')).to_have_value("fnd")
    expect(page.locator('input[name="descriptionContains"]')).to_have_value("resize")

    # Only matching rows, over more than one page.
    page.goto(server.url + "/console?pageSize=3&descriptionContains=SNAPSHOT")
    expect(rows(page)).to_have_count(3)
    page.click("#more")
    expect(rows(page)).to_have_count(6)
    page.click("#more")
    expect(rows(page)).to_have_count(8)
    assert {r.get_attribute("data-id") for r in rows(page).all()} == set(hay)
    page.goto(server.url + "/console?pageSize=3&descriptionContains=%25_")
    expect(page.locator("#list-status")).to_have_text("No operation matches.")

    # Following the feed: an operation the description filter does not match
    # never shows, one it matches does (the feed itself filters by prefix only).
    page.goto(server.url + "/console?idPrefix=fnd&descriptionContains=%C3%84rger")
    expect(rows(page)).to_have_count(1)
    expect(page.locator("#live")).to_have_text("live")
    other = api.create("snapshot disk-99", idPrefix="fnd")
    made = []
    shown("a new match of a filtered list", lambda: made.append(api.create("ärger again", idPrefix="fnd")),
          lambda: expect(rows(page).first).to_have_attribute("data-id", made[0], timeout=LIVE))
    page.wait_for_function(
        "(path) => performance.getEntriesByType('resource').some((e) => new URL(e.name).pathname === path)",
        arg=f"/v1/operations/{other}", timeout=LIVE)
    assert fetched(page, f"/v1/operations/{other}")
    expect(rows(page)).to_have_count(2)
    expect(row(page, other)).to_have_count(0)
    # A change that takes a row out of the search's reach is not possible (the
    # description never changes), but one leaving another filter is.
    page.goto(server.url + "/console?descriptionContains=%C3%A4rger&state=RUNNING")
    expect(rows(page)).to_have_count(2)
    expect(page.locator("#live")).to_have_text("live")
    shown("a row leaving a searched list", lambda: api.succeed(needle),
          lambda: expect(row(page, needle)).to_have_count(0, timeout=LIVE))
    assert not page.errors, page.errors


def test_the_operation_page_shows_progress_timeline_and_outcome(start_opsd, page):
    server = start_opsd("--console-trace-url", "https://jaeger.example/trace/{trace_id}")
    api = Api(server.url)
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    operation_id = api.create(
        "snapshot disk-7", resourceId="disk-7", idPrefix="snp",
        cancellationPolicy="CANCELLATION_POLICY_COOPERATIVE",
        metadata={"@type": "type.googleapis.com/google.protobuf.Struct", "value": {"diskId": "disk-7"}},
        headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"},
    )
    api.progress(operation_id, 2, 5, "copying blocks",
                 [("freeze", "STATE_DONE"), ("copy", "STATE_RUNNING"), ("thaw", "STATE_PENDING")])

    page.goto(f"{server.url}/console/operations/{operation_id}")
    expect(page.locator("#op-id")).to_have_text(operation_id)
    expect(page.locator("#progress .text")).to_contain_text("2/5 (40%)")
    expect(page.locator("#progress .steps li")).to_have_text(["freeze", "copy", "thaw"])
    expect(page.locator("#metadata")).to_contain_text('"diskId": "disk-7"')
    expect(page.locator("#metadata")).to_contain_text("google.protobuf.Struct")
    expect(page.locator("#fields")).to_contain_text("disk-7")
    expect(page.locator("#fields")).to_contain_text("cooperative")
    link = page.locator("#fields a", has_text=trace)
    expect(link).to_have_attribute("href", f"https://jaeger.example/trace/{trace}")
    expect(page.locator("#events tr")).to_have_count(2)
    expect(page.locator("#events tr").nth(0)).to_contain_text("created")
    expect(page.locator("#events tr").nth(1)).to_contain_text("metadata updated")
    expect(page.locator("#events tr").nth(1)).to_contain_text("anonymous")
    # The opsctl and grpcurl commands are there to copy.
    expect(page.get_by_role("button", name="Copy opsctl command")).to_have_attribute(
        "title", re.compile(f"opsctl --endpoint {re.escape(server.url)} get {operation_id}"))
    expect(page.get_by_role("button", name="Copy grpcurl command")).to_have_attribute(
        "title", re.compile("opsd.v1.OperationService/Get"))
    page.screenshot(path=str(screenshot_dir() / "operation.png"), full_page=True)

    # The outcome arrives live, and the timeline grows with it.
    shown("completion on the operation page", lambda: api.fail(operation_id, 9, "disk-7 is attached to a running vm"),
          lambda: expect(page.locator("h1 .state")).to_have_text("failed", timeout=LIVE))
    expect(page.locator("#error")).to_contain_text('"message": "disk-7 is attached to a running vm"')
    expect(page.locator("#events tr")).to_have_count(3)
    expect(page.locator("#events tr").nth(2)).to_contain_text("FAILED_PRECONDITION")
    expect(page.locator("#cancel")).to_have_count(0)

    # The timeline filters by kind, in the URL too.
    page.select_option("#kind", "EVENT_KIND_METADATA_UPDATED")
    expect(page.locator("#events tr")).to_have_count(1)
    assert "kind=EVENT_KIND_METADATA_UPDATED" in page.url

    succeeded = api.create("resize disk-8")
    api.succeed(succeeded)
    page.goto(f"{server.url}/console/operations/{succeeded}")
    expect(page.locator("#response")).to_contain_text('"ok": true')
    expect(page.locator("#events tr").last).to_contain_text("completed")

    page.goto(f"{server.url}/console/operations/nosuchoperation00000")
    expect(page.locator(".error")).to_contain_text("404")
    assert not page.errors, page.errors


def test_cancel_asks_first_then_cancels(start_opsd, page):
    server = start_opsd()
    api = Api(server.url)
    operation_id = api.create("snapshot disk-5")
    page.goto(f"{server.url}/console/operations/{operation_id}")
    page.dialogs.clear()
    page.locator("#cancel").click()
    expect(page.locator("h1 .state")).to_have_text("cancelled", timeout=LIVE)
    assert page.dialogs == [("confirm", f"Cancel operation {operation_id}?")]
    answer = api.get(operation_id)
    assert answer["operation"]["done"] is True
    assert answer["operation"]["error"]["code"] == 1
    expect(page.locator("#cancel")).to_have_count(0)

    # Operations that cannot be cancelled offer no button.
    fixed = api.create("upload", cancellationPolicy="CANCELLATION_POLICY_NOT_CANCELLABLE")
    page.goto(f"{server.url}/console/operations/{fixed}")
    expect(page.locator("#op-id")).to_have_text(fixed)
    expect(page.locator("#cancel")).to_have_count(0)


def test_producer_strings_are_text_and_run_nothing(start_opsd, page):
    server = start_opsd()
    api = Api(server.url)
    operation_id = api.create(XSS, resourceId=XSS)
    api.progress(operation_id, 1, 2, XSS, [(XSS, "STATE_RUNNING")])

    page.goto(server.url + "/console")
    expect(row(page, operation_id).locator("td.desc")).to_have_text(XSS)
    expect(row(page, operation_id).locator(".progress .text")).to_contain_text(XSS)
    page.goto(f"{server.url}/console/operations/{operation_id}")
    expect(page.locator("#description")).to_have_text(XSS)
    expect(page.locator("#progress .steps li")).to_have_text([XSS])
    # Live updates render as text too.
    shown("progress on the operation page", lambda: api.progress(operation_id, 2, 2, XSS + "<b>bold</b>"),
          lambda: expect(page.locator("#progress .text")).to_contain_text("<b>bold</b>", timeout=LIVE))
    assert page.locator("main img").count() == 0
    assert page.locator("main b").count() == 0
    assert page.evaluate("window.__pwned") is None
    assert page.dialogs == []
    assert not page.errors, page.errors


def test_the_console_is_served_with_a_strict_policy(start_opsd):
    server = start_opsd()
    for path in ["/console", "/console/operations/x", "/console/console.js", "/console/console.css"]:
        with urllib.request.urlopen(server.url + path, timeout=10) as response:
            policy = response.headers["content-security-policy"]
            assert "default-src 'none'" in policy and "script-src 'self'" in policy
            assert "unsafe" not in policy
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["set-cookie"] is None
    # Small pages: everything the first load fetches.
    total = sum(
        len(urllib.request.urlopen(server.url + path, timeout=10).read())
        for path in ["/console", "/console/console.js", "/console/console.css", "/console/favicon.svg",
                     "/console/settings.json"]
    )
    assert total < 200 * 1024, total


def test_with_a_tokens_file_the_console_shows_only_what_the_token_may(start_opsd, tmp_path, page):
    producer, viewer, operator = new_token(), new_token(), new_token()
    tokens = tokens_file(tmp_path / "tokens.toml", [
        ("producer", producer, ["*"], ["producer", "viewer"]),
        ("team-a-viewer", viewer, ["team-a"], ["viewer"]),
        ("team-a-operator", operator, ["team-a"], ["operator"]),
    ])
    server = start_opsd("--tokens-file", str(tokens))
    api = Api(server.url, producer)
    mine = api.create("team a's snapshot", scope="team-a")
    theirs = api.create("team b's snapshot", scope="team-b")

    # Without a token: a sign-in form, and nothing else.
    page.goto(server.url + "/console")
    expect(page.locator("#token")).to_be_visible()
    expect(page.locator("#token")).to_have_attribute("type", "password")
    assert page.locator("#rows").count() == 0
    assert "team" not in page.locator("main").inner_text()
    page.goto(f"{server.url}/console/operations/{mine}")
    expect(page.locator("#token")).to_be_visible()
    assert "snapshot" not in page.locator("main").inner_text()

    # A wrong token is refused and asked for again.
    page.goto(server.url + "/console")
    page.fill("#token", "opsd_wrong")
    page.press("#token", "Enter")
    expect(page.locator(".error")).to_contain_text("refused")
    expect(page.locator("#token")).to_be_visible()

    # The viewer sees its scope only, and no Cancel.
    page.fill("#token", viewer)
    page.press("#token", "Enter")
    expect(rows(page)).to_have_count(1)
    expect(rows(page).first).to_have_attribute("data-id", mine)
    expect(page.locator("#who")).to_contain_text("team-a-viewer")
    assert page.evaluate("document.cookie") == ""
    assert page.evaluate("sessionStorage.length") == 1
    assert page.evaluate("localStorage.length") == 0
    # Live updates go through the token too, and stay in its scope.
    shown("progress through a token", lambda: (api.progress(mine, 1, 4, "copying"), api.progress(theirs, 1, 4, "copying")),
          lambda: expect(row(page, mine).locator(".progress .text")).to_contain_text("1/4", timeout=LIVE))
    newer = api.create("team b's second snapshot", scope="team-b")
    shown("a new operation through a token", lambda: api.create("team a's second snapshot", scope="team-a"),
          lambda: expect(rows(page)).to_have_count(2, timeout=LIVE))
    assert row(page, newer).count() == 0

    page.goto(f"{server.url}/console/operations/{mine}")
    expect(page.locator("#op-id")).to_have_text(mine)
    expect(page.locator("#cancel")).to_have_count(0)
    # The API refuses the viewer's cancel anyway.
    status, answer = Api(server.url, viewer).call("POST", f"/operations/{mine}:cancel", {})
    assert status == 403, (status, answer)
    assert api.get(mine)["operation"].get("done") is not True
    page.goto(f"{server.url}/console/operations/{theirs}")
    expect(page.locator(".error")).to_contain_text("404")

    # A new tab asks again: the token lived in that tab only.
    other = page.context.browser.new_context()
    fresh = other.new_page()
    fresh.goto(server.url + "/console")
    expect(fresh.locator("#token")).to_be_visible()
    other.close()

    # The operator may cancel, through the button.
    page.goto(server.url + "/console")
    page.click("#sign-out")
    expect(page.locator("#token")).to_be_visible()
    page.fill("#token", operator)
    page.press("#token", "Enter")
    expect(rows(page)).to_have_count(2)
    page.goto(f"{server.url}/console/operations/{mine}")
    page.locator("#cancel").click()
    expect(page.locator("h1 .state")).to_have_text("cancelled", timeout=LIVE)
    assert api.get(mine)["operation"]["error"]["code"] == 1
    assert not page.errors, page.errors


def test_the_overview_shows_running_stuck_and_per_producer_numbers(start_opsd, page):
    server = start_opsd("--console-stuck-after", "4s")
    api = Api(server.url)
    # A cooperative producer that ignores a cancel request, and one that honours it.
    ignoring = api.create("snapshot disk-40", idPrefix="coo", cancellationPolicy="CANCELLATION_POLICY_COOPERATIVE")
    api.ok("POST", f"/operations/{ignoring}:cancel", {})
    polite = api.create("snapshot disk-30", idPrefix="coo", cancellationPolicy="CANCELLATION_POLICY_COOPERATIVE")
    api.ok("POST", f"/operations/{polite}:cancel", {})
    api.fail(polite, 1, "cancelled on request")
    # One failure in four.
    for n in range(3):
        api.succeed(api.create(f"snapshot disk-{n + 10}", idPrefix="snp"))
    api.fail(api.create("snapshot disk-20", idPrefix="snp"), 9, "disk is busy")
    # A producer without a usual pace, silent past --console-stuck-after.
    quiet = api.create("check quota-1", idPrefix="qui")
    time.sleep(2.6)
    # A producer that reports every few milliseconds, then falls silent: past
    # ten of its usual gaps (and the 1s floor), well before 4s.
    chatty = api.create("copy image-1", idPrefix="cpy")
    for n in range(1, 5):
        api.progress(chatty, n, 10, f"copied {n}")
    time.sleep(1.6)
    # Just created, but its lease lapses within 30s.
    leased = api.create("resize disk-2", idPrefix="rsz", leaseDuration="20s")
    api.progress(leased, 1, 3, "growing")

    page.goto(server.url + "/console/overview")
    expect(page.locator("#card-running .n")).to_have_text("4")
    expect(page.locator("#card-stuck .n")).to_have_text("4")
    expect(page.locator("#card-completed .n")).to_have_text("5")
    expect(page.locator("#card-failed .n")).to_have_text("1")
    expect(page.locator("#stuck tbody tr")).to_have_count(4)
    why = lambda operation_id: page.locator("#stuck tbody tr", has_text=operation_id).locator("td.why .reason")
    rules = lambda operation_id: [r.get_attribute("data-rule") for r in why(operation_id).all()]
    expect(why(quiet)).to_have_text("no change for over 4s")
    assert rules(quiet) == ["unchanged"]
    assert rules(ignoring) == ["unchanged"]
    expect(why(chatty)).to_have_text(re.compile(r"^\d+× the usual \d+ms between its producer's updates$"))
    assert rules(chatty) == ["slower-than-usual"]
    expect(why(leased)).to_have_text(re.compile(r"^lease lapses in \d+s$"))
    assert rules(leased) == ["lease-lapsing"]
    # Least recently changed first.
    expect(page.locator("#stuck tbody tr").first).to_contain_text(ignoring)
    expect(page.locator("#oldest tbody tr").first).to_contain_text(ignoring)
    expect(page.locator("#oldest tbody tr")).to_have_count(4)

    producer = lambda prefix: page.locator(f'#producers tbody tr[data-prefix="{prefix}"] td')
    coo = producer("coo")
    expect(coo.nth(1)).to_have_text("1")
    expect(coo.nth(2)).to_have_text("1")
    expect(coo.nth(3)).to_have_text("0%")
    expect(coo.nth(4)).to_have_text("1")
    expect(coo.nth(7)).to_have_text(re.compile(r"^\d+ms$"))
    # The producer ignoring Cancel stands out.
    expect(coo.nth(9).locator(".state.failed")).to_have_text("1 ignoring cancel")
    snp = producer("snp")
    expect(snp.nth(1)).to_have_text("0")
    expect(snp.nth(2)).to_have_text("4")
    expect(snp.nth(3)).to_have_text("25%")
    expect(snp.nth(3)).to_have_class("failed-share")
    expect(snp.nth(4)).to_have_text("")
    expect(snp.nth(5)).to_have_text(re.compile(r"^\d+ms$"))
    expect(snp.nth(9)).to_have_text("")
    expect(producer("cpy").nth(8)).to_have_text(re.compile(r"^\d+ms$"))
    # One call made all of it.
    api_calls = [url for url in page.requests if "/v1/" in url and "/v1/caller" not in url]
    assert [url.split(server.address, 1)[1] for url in api_calls] == ["/v1/overview"], api_calls
    page.screenshot(path=str(screenshot_dir() / "overview.png"), full_page=True)
    assert not page.errors, page.errors


def test_narrow_screens_and_dark_mode(start_opsd, browser):
    server = start_opsd()
    api = Api(server.url)
    operation_id = api.create("snapshot disk-1", resourceId="disk-1")
    api.progress(operation_id, 1, 2, "copying")
    context = browser.new_context(viewport={"width": 390, "height": 760}, color_scheme="dark")
    page = context.new_page()
    page.goto(server.url + "/console")
    expect(row(page, operation_id)).to_be_visible()
    # Nothing wider than the screen but the table, which scrolls in its box.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(13, 17, 23)", background
    page.screenshot(path=str(screenshot_dir() / "list-narrow-dark.png"), full_page=True, animations="disabled")
    # Keyboard: the skip link first, then the navigation.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    context.close()


def test_producers_descriptor_sets_show_their_payloads_field_by_field(start_opsd, page, tmp_path):
    from conftest import REPO, opsd_binary
    import subprocess

    snapshot_set = REPO / "examples" / "snapshot-service" / "snapshot.binpb"
    server = start_opsd("--descriptor-set", str(snapshot_set))
    api = Api(server.url)
    snapshot = "type.googleapis.com/opsd.example.v1.Snapshot"
    operation_id = api.create("snapshot disk-4", metadata={"@type": snapshot, "diskId": "disk-4"})
    answer = api.succeed(operation_id, {"@type": snapshot, "snapshotId": "snap-4", "diskId": "disk-4",
                                        "sizeBytes": "4096"})
    assert answer["operation"]["response"]["snapshotId"] == "snap-4"
    page.goto(f"{server.url}/console/operations/{operation_id}")
    expect(page.locator("#response")).to_contain_text('"snapshotId": "snap-4"')
    expect(page.locator("#response")).to_contain_text('"sizeBytes": "4096"')
    expect(page.locator("#response")).to_contain_text("opsd.example.v1.Snapshot")
    expect(page.locator("#metadata")).to_contain_text('"diskId": "disk-4"')

    # A file that is no descriptor set stops opsd at start, naming it.
    bad = tmp_path / "bad.binpb"
    bad.write_bytes(b"\xff\xff not protobuf")
    refused = subprocess.run(
        [opsd_binary(), "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"),
         "--descriptor-set", str(bad)],
        capture_output=True, text=True, timeout=30,
    )
    assert refused.returncode != 0
    assert f"--descriptor-set: {bad} is not a usable FileDescriptorSet" in refused.stderr, refused.stderr
