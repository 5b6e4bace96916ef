"""`campaign reviewer add|list|remove`: the named reviewers of the review pages and API.

A reviewer's token is printed once, by `add`, and stored only as its hash; it is a bearer
token for the API's review routes and the sign-in of the pages (see starter/review_auth.py).
These commands need only the store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from rich.table import Table

from campaign_core.settings import load_settings
from campaign_core.store.factory import open_store
from starter.cli.app import JsonFlag, emit_json, err, out, run, shown
from starter.review_auth import Reviewers

reviewer_app = typer.Typer(help="Named reviewers: their tokens sign in to the review pages "
                                "and reach the API's review routes.", no_args_is_help=True)
T = TypeVar("T")
Name = Annotated[str, typer.Argument(metavar="NAME", help="The reviewer's name.")]


async def _with_reviewers(act: Callable[[Reviewers], Awaitable[T]]) -> T:
    store = open_store(load_settings())
    try:
        return await act(Reviewers(store))
    finally:
        await store.close()


@reviewer_app.command("add")
def add(name: Name, as_json: JsonFlag = False) -> None:
    """Create a reviewer and print their personal token (once: only its hash is kept)."""
    token = run(_with_reviewers(lambda r: r.add(name)))
    if as_json:
        emit_json({"reviewer": name, "token": token})
        return
    err.print(f"Reviewer {shown(name)} created. Their token (shown only now; give it to them "
              "privately):")
    out.print(token, highlight=False)


@reviewer_app.command("list")
def list_reviewers(as_json: JsonFlag = False) -> None:
    """The active reviewers."""
    rows = run(_with_reviewers(lambda r: r.list()))
    if as_json:
        emit_json([{"reviewer": r.name, "created_at": r.created_at} for r in rows])
        return
    table = Table("reviewer", "since")
    for r in rows:
        table.add_row(shown(r.name), shown(r.created_at[:19].replace("T", " ")))
    out.print(table)


@reviewer_app.command("remove")
def remove(name: Name) -> None:
    """Remove a reviewer: their token and their signed-in sessions stop working at once."""
    run(_with_reviewers(lambda r: r.remove(name)))
    err.print(f"Reviewer {shown(name)} removed.")
