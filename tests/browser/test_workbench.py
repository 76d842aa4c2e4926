"""The oversight workbench in a real browser against a real server with the demo year: the
board's numbers equal the API's for the same filters, filters live in the URL, every
number drills down to its events, the review queue and form, the event page's proof
checked in the browser (and a tampered proof refused), policy history, the public
report, roles, the phone width, and axe-core on every view.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.browser.helpers import (
    ADMIN,
    AUDITOR,
    DEMO_PASSWORD,
    OFFICER,
    OTHER_OFFICER,
    axe_check,
    no_sideways_scroll,
    screenshot,
    sign_in,
)

if TYPE_CHECKING:
    from playwright.sync_api import Page, Route


# --- the API, to compare with ---------------------------------------------------------


def api(base_url: str, path: str, username: str = OTHER_OFFICER) -> Any:
    token = httpx.post(
        f"{base_url}/v1/auth/token",
        data={"grant_type": "password", "username": username, "password": DEMO_PASSWORD},
    ).json()["access_token"]
    response = httpx.get(f"{base_url}{path}", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    return response.json() if "json" in response.headers["content-type"] else response.text


def settled(page: Page) -> None:
    """The view has loaded its data (no request in flight, no "Loading…")."""
    from playwright.sync_api import expect

    page.wait_for_load_state("networkidle")
    expect(page.locator("#status")).to_have_text("")
    expect(page.locator("#error")).to_have_text("")


def url_query(page: Page) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(page.url).query).items()}


def number(page: Page, selector: str) -> int:
    return int(page.locator(selector).inner_text().replace(",", ""))


def open_view(page: Page, base_url: str, query: str) -> None:
    page.goto(f"{base_url}/dashboard?{query}")
    settled(page)


def board_matches_api(page: Page, base_url: str) -> dict[str, str]:
    q = url_query(page)
    scope = "&".join(f"{k}={q[k]}" for k in ("since", "until", "facility") if k in q)
    days = api(base_url, f"/v1/reports/summary?group_by=day&{scope}")
    denials = api(base_url, f"/v1/reports/denials?{scope}")
    flags = api(base_url, f"/v1/reports/flags?limit=1&{scope}")
    assert number(page, "#tile-accesses .value") == sum(g["count"] for g in days["groups"])
    assert number(page, "#tile-denied .value") == denials["denied"]
    assert number(page, "#tile-creep .value") == denials["mission_creep"]["attempts"]
    assert number(page, "#tile-open .value") == flags["open"]
    assert number(page, "#tile-follow-up .value") == flags["follow_up"]
    shown = {
        row.locator("td").nth(0).inner_text(): int(row.locator("td").nth(1).inner_text())
        for row in page.locator("#denials-reason tbody tr").all()
        if "empty" not in (row.locator("td").first.get_attribute("class") or "")
    }
    assert shown == {r["reason"].replace("_", " "): r["count"] for r in denials["by_reason"]}
    return q


# --- the board -----------------------------------------------------------------------


def test_board_numbers_equal_the_api_and_filters_live_in_the_url(page: Page, base_url: str) -> None:
    from playwright.sync_api import expect

    sign_in(page, base_url, OFFICER)
    settled(page)
    q = board_matches_api(page, base_url)
    assert q["view"] == "board"
    assert q["since"]
    assert q["until"]
    # The chart has a readable axis, and every day's values are in a table (no hover).
    assert page.locator("#per-day svg text").count() >= 5
    days = page.locator("#days tbody tr")
    assert days.count() == 30
    expect(page.locator(".zone-hint").first).to_contain_text("America/Chicago")
    axe_check(page, "board-desktop")
    screenshot(page, "board-desktop")

    # A facility, chosen by its name from the policy, goes into the URL.
    board = page.locator("#board-scope")
    board.get_by_label("Facility").select_option(label="Phelps County Jail")
    board.get_by_role("button", name="Show").click()
    settled(page)
    assert url_query(page)["facility"] == "phelps"
    board_matches_api(page, base_url)
    before = page.locator("#tile-accesses .value").inner_text()
    page.reload()
    settled(page)
    assert board.get_by_label("Facility").input_value() == "phelps"
    assert page.locator("#tile-accesses .value").inner_text() == before


def test_every_number_drills_down_to_its_events(page: Page, base_url: str) -> None:
    sign_in(page, base_url, OFFICER)
    open_view(page, base_url, "view=board&since=2025-10-01&until=2025-12-31")
    reason_link = page.locator("#denials-reason tbody a").first
    expected = int(reason_link.inner_text())
    reason_link.click()
    settled(page)
    q = url_query(page)
    assert q["view"] == "events"
    assert q["decision"] == "deny"
    assert q["reason"]
    assert page.locator("#events tbody tr").count() == expected
    assert page.locator("#events-more-filters").inner_text().startswith("Also filtered by reason")
    axe_check(page, "events-desktop")
    screenshot(page, "events-denied-by-reason")

    page.go_back()
    settled(page)
    page.locator("#tile-denied").click()
    settled(page)
    denied = api(base_url, "/v1/reports/denials?since=2025-10-01&until=2025-12-31")["denied"]
    shown = page.locator("#events tbody tr").count()
    assert shown == min(denied, 50)
    assert all(
        cell == "deny"
        for cell in page.locator("#events tbody tr td:nth-child(8)").all_inner_texts()
    )

    page.go_back()
    settled(page)
    page.locator("#tile-open").click()
    settled(page)
    q = url_query(page)
    assert (q["view"], q["status"], q["since"]) == ("queue", "open", "2025-10-01")


# --- the review queue and the event page ----------------------------------------------


def test_review_an_open_flag_at_one_facility(page: Page, base_url: str) -> None:
    from playwright.sync_api import expect

    sign_in(page, base_url, OFFICER)
    open_view(page, base_url, "view=queue&status=open&facility=ste_genevieve")
    facilities = page.locator("#queue tbody tr td:nth-child(5)").all_inner_texts()
    assert facilities
    assert set(facilities) == {"Ste. Genevieve County Jail"}
    report = api(base_url, "/v1/reports/flags?status=open&facility=ste_genevieve&limit=25")
    assert [int(s) for s in page.locator("#queue tbody tr td:nth-child(1)").all_inner_texts()] == [
        item["seq"] for item in report["items"]
    ]
    assert page.locator("#queue-counts").inner_text().startswith(f"{report['open']:,} open")
    axe_check(page, "queue-desktop")
    screenshot(page, "queue-desktop")

    first = page.locator("#queue tbody a").first
    seq = int(first.inner_text())
    first.click()
    settled(page)
    expect(page.locator("#proof-result")).to_contain_text("In the log: verified", timeout=15_000)
    event = api(base_url, f"/v1/events/{seq}")
    fields = page.locator("#event-fields")
    expect(fields).to_contain_text(event["actor"])
    expect(fields).to_contain_text(event["hash"])
    for flag in event["flags"]:
        expect(page.locator("#event-flags")).to_contain_text(flag.replace("_", " "))
    expect(page.locator("#history tbody")).to_contain_text("(this one)")
    axe_check(page, "event-desktop")
    screenshot(page, "event-desktop")

    # A violation needs a note: the form says so and records nothing.
    page.get_by_label("violation (a note is required)").check()
    page.get_by_role("button", name="Record review").click()
    expect(page.locator("#review-status")).to_contain_text("needs a note")
    assert api(base_url, f"/v1/events/{seq}/reviews") == []

    page.get_by_label("justified").check()
    page.get_by_role("textbox", name="Note").fill("checked with the site lead: covering a shift")
    page.get_by_role("button", name="Record review").click()
    expect(page.locator("#review-status")).to_contain_text("Review recorded as event")
    expect(page.locator("#event-reviews")).to_contain_text("justified by dps.okafor")
    [review] = api(base_url, f"/v1/events/{seq}/reviews")
    assert (review["disposition"], review["reviewer"]) == ("justified", OFFICER)

    page.get_by_role("link", name="Back to the review queue").click()
    settled(page)
    assert url_query(page)["facility"] == "ste_genevieve"
    seqs = [int(s) for s in page.locator("#queue tbody tr td:nth-child(1)").all_inner_texts()]
    assert seq not in seqs


def test_follow_up_stays_visible_as_its_own_state(page: Page, base_url: str) -> None:
    from playwright.sync_api import expect

    sign_in(page, base_url, OFFICER)
    open_view(page, base_url, "view=queue&status=open&facility=phelps")
    link = page.locator("#queue tbody a").first
    seq = int(link.inner_text())
    link.click()
    settled(page)
    page.get_by_label("follow-up needed").check()
    page.get_by_role("button", name="Record review").click()
    expect(page.locator("#review-status")).to_contain_text("Review recorded")
    open_view(page, base_url, "view=queue&status=follow_up&facility=phelps")
    row = page.locator("#queue tbody tr").filter(has=page.get_by_role("link", name=f"event {seq}"))
    expect(row).to_contain_text("in follow-up")


def test_a_tampered_proof_is_shown_as_failed(page: Page, base_url: str) -> None:
    from playwright.sync_api import expect

    def tamper(route: Route) -> None:
        response = route.fetch()
        body = response.json()
        first = bytearray(__import__("base64").b64decode(body["hashes"][0]))
        first[0] ^= 1
        body["hashes"][0] = __import__("base64").b64encode(bytes(first)).decode()
        route.fulfill(response=response, body=json.dumps(body))

    sign_in(page, base_url, OFFICER)
    page.route(re.compile(r".*/v1/log/proof/inclusion\?.*"), tamper)
    open_view(page, base_url, "view=event&seq=200")
    expect(page.locator("#proof-result")).to_contain_text(
        "Not verified: the inclusion proof does not lead to the checkpoint's root"
    )
    screenshot(page, "event-tampered-proof")


# --- policy history and the public report ---------------------------------------------


def test_policy_history_and_its_diff(page: Page, base_url: str) -> None:
    from playwright.sync_api import expect

    sign_in(page, base_url, OFFICER)
    open_view(page, base_url, "view=policies")
    versions = api(base_url, "/v1/policies")
    assert page.locator("#policies tbody tr").count() == len(versions)
    page.get_by_role("link", name=re.compile("^changes of")).first.click()
    settled(page)
    expect(page.locator("#diff")).to_contain_text("mission.window_end")
    expect(page.locator("#diff")).to_contain_text("2027-03-31")
    axe_check(page, "policies-desktop")
    screenshot(page, "policies-desktop")


def test_the_months_public_report_equals_the_api_and_downloads(page: Page, base_url: str) -> None:
    sign_in(page, base_url, OFFICER)
    open_view(page, base_url, "view=transparency&month=2026-03")
    report = api(base_url, "/v1/reports/transparency?month=2026-03")
    header = page.locator("#transparency thead th").all_inner_texts()
    assert header[1:] == [r["name"] for r in report["rows"]]
    lines = page.locator("#transparency tbody tr").all()
    assert len(lines) == len(report["columns"])
    for line, column in zip(lines, report["columns"], strict=True):
        cells = line.locator("td").all_inner_texts()
        expected = [
            "suppressed" if r["cells"][column] is None else f"{r['cells'][column]:,}"
            for r in report["rows"]
        ]
        assert cells[1:] == expected, column
    assert "suppressed" in " ".join(page.locator("#transparency tbody").all_inner_texts())
    axe_check(page, "transparency-desktop")
    screenshot(page, "transparency-desktop")
    with page.expect_download() as download:
        page.get_by_role("button", name="Download CSV").click()
    text = download.value.path().read_text(encoding="utf-8")
    csv_api = api(base_url, "/v1/reports/transparency?month=2026-03&format=csv")
    assert text.splitlines()[0] == csv_api.splitlines()[0]
    assert len(text.splitlines()) == len(csv_api.splitlines()) > 2


# --- roles, signing out, the phone ----------------------------------------------------


def test_a_wrong_role_is_told_plainly(page: Page, base_url: str) -> None:
    from playwright.sync_api import expect

    sign_in(page, base_url, ADMIN)
    expect(
        page.get_by_role("heading", name=re.compile("for oversight officers and auditors"))
    ).to_be_visible()
    expect(page.locator("#refused-text")).to_contain_text("admin")
    expect(page.locator("#nav")).to_be_hidden()
    expect(page.locator("#view-board")).to_be_hidden()
    axe_check(page, "refused-desktop")
    screenshot(page, "refused-admin")


def test_exports_for_auditors_reviews_for_oversight(page: Page, base_url: str) -> None:
    from playwright.sync_api import expect

    sign_in(page, base_url, AUDITOR)
    settled(page)
    expect(page.get_by_role("button", name="Download events CSV")).to_be_visible()
    expect(page.get_by_role("link", name="Public report")).to_be_hidden()
    open_view(page, base_url, "view=event&seq=372")
    expect(page.locator("#review-form")).to_be_hidden()
    expect(page.locator("#proof-result")).to_contain_text("In the log: verified", timeout=15_000)
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, base_url, OFFICER)
    settled(page)
    expect(page.get_by_role("button", name="Download events CSV")).to_be_hidden()


def test_sign_out_ends_the_session(page: Page, base_url: str) -> None:
    from playwright.sync_api import expect

    sign_in(page, base_url, OFFICER)
    settled(page)
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Password")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
    page.goto(f"{base_url}/dashboard?view=queue&status=open")
    expect(page.get_by_label("Password")).to_be_visible()
    expect(page.locator("#view-queue")).to_be_hidden()


@pytest.mark.parametrize(
    "query",
    [
        "view=board&since=2025-10-01&until=2025-10-31",
        "view=queue&status=open",
        "view=events&kind=access",
        "view=event&seq=372",
        "view=policies",
        "view=transparency&month=2026-03",
    ],
)
def test_the_phone_width_has_no_sideways_scroll(
    phone_page: Page, base_url: str, query: str
) -> None:
    sign_in(phone_page, base_url, OFFICER)
    open_view(phone_page, base_url, query)
    no_sideways_scroll(phone_page)
    name = "phone-" + query.split("&")[0].removeprefix("view=")
    axe_check(phone_page, name)
    screenshot(phone_page, name)
