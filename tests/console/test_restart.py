"""The console across a restart of opsd: what it shows comes from the store,
and its feed resumes where it stopped."""

from playwright.sync_api import expect

from conftest import Api

LIVE = 5000


def test_the_console_survives_a_restart_and_its_feed_resumes(start_opsd, page):
    server = start_opsd()
    api = Api(server.url)
    done = api.create("snapshot disk-1")
    api.succeed(done)
    running = api.create("snapshot disk-2")
    page.goto(server.url + "/console")
    expect(page.locator("#rows tr")).to_have_count(2)
    expect(page.locator("#live")).to_have_text("live")

    # The same address and data; the open page reconnects by itself.
    server.stop()
    expect(page.locator("#live")).to_have_text("reconnecting", timeout=LIVE)
    server.start()
    # Completed before the page is back: it resumes from its last event id,
    # so it misses nothing.
    api.succeed(running)
    expect(page.locator("#live")).to_have_text("live", timeout=15000)
    row = page.locator(f'#rows tr[data-id="{running}"] .state')
    expect(row).to_have_text("succeeded", timeout=LIVE)
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1

    # A fresh load after the restart shows the same history.
    page.reload()
    expect(page.locator("#rows tr")).to_have_count(2)
    expect(page.locator(f'#rows tr[data-id="{done}"] .state')).to_have_text("succeeded")
    assert not page.errors, page.errors
