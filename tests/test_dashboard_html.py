"""Every dashboard page is well-formed HTML: each block element it opens it closes, in order.

A page assembled from several features (a user's page shows devices, preferences, push
subscriptions and history) can lose a closing tag at a merge; browsers then nest the rest of the
page inside the open element, and forms or tables end up where nobody expects them."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

from diagnoxix.dashboard.render import NAV
from diagnoxix.keys import SERVICE, STORE
from diagnoxix.rules import validated_draft
from diagnoxix.rules.preferences import Preferences

from .dashboard_support import StaffClient, start_server

# Elements that must be closed explicitly (void elements and optional end tags are left out).
CHECKED = {
    "section",
    "table",
    "thead",
    "tbody",
    "form",
    "ul",
    "ol",
    "div",
    "main",
    "nav",
    "details",
    "h1",
    "h2",
    "h3",
}


class _Balance(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in CHECKED:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag not in CHECKED:
            return
        if not self.open or self.open[-1] != tag:
            self.problems.append(f"</{tag}> at line {self.getpos()[0]} closes {self.open[-1:] or 'nothing'}")
            return
        self.open.pop()


def problems_of(html: str) -> list[str]:
    checker = _Balance()
    checker.feed(html)
    checker.close()
    return checker.problems + [f"<{tag}> never closed" for tag in checker.open]


async def test_every_dashboard_page_closes_what_it_opens(tmp_path: Path) -> None:
    server = await start_server(tmp_path)
    staff = StaffClient(server)
    try:
        assert (await staff.login()).status == 303
        store = server.app[STORE]
        await store.put_preferences(
            "patient-1", Preferences(quiet_hours=(22 * 60, 7 * 60), channels={"x": {"push": False}})
        )
        (note,) = await server.app[SERVICE].send(
            [validated_draft("patient-1", "t", "Hello", "m", None, "critical")]
        )
        pages = [path for path, _ in NAV] + [
            "/dashboard/users/patient-1",
            "/dashboard/users/patient-2",
            f"/dashboard/notifications/{note.id}",
        ]
        for path in pages:
            resp = await staff.get(path)
            assert resp.status == 200, path
            assert problems_of(await resp.text()) == [], path
    finally:
        await staff.close()
        await server.close()


def test_the_checker_finds_an_unclosed_section() -> None:
    assert problems_of("<main><section><h2>a</h2></main>") != []
    assert problems_of("<main><section><h2>a</h2></section></main>") == []
