"""The tests mirror the code: each file sits in a folder named for what it tests, the shared
fakes and servers in tests/fakes/, and no file is named after a review round.

A new test dropped flat into tests/ or named `test_hardening_*` fails here, so the layout
a newcomer reads stays the layout there is.
"""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
#: The folders tests live in; each is a package so same-named files cannot clash.
SUBJECTS = {"api", "cli", "delivery", "drafting", "inbound", "leads", "ops", "review",
            "schedules", "senders", "shape", "store", "workflows"}


def test_no_module_sits_flat_in_tests() -> None:
    flat = sorted(p.name for p in TESTS.glob("*.py") if p.name not in {"__init__.py", "conftest.py"})
    assert not flat, f"move these into a subject folder of tests/ or tests/fakes/: {flat}"


def test_tests_live_in_subject_folders_and_helpers_in_fakes() -> None:
    for path in TESTS.rglob("*.py"):
        rel = path.relative_to(TESTS)
        if rel.parts[0] in {"histories", "__init__.py", "conftest.py"}:
            continue
        folder = rel.parts[0]
        if folder == "fakes":
            assert not path.name.startswith("test_"), f"{rel}: a test among the fakes"
            continue
        assert folder in SUBJECTS, f"{rel}: tests/{folder}/ is not a subject folder {sorted(SUBJECTS)}"
        assert path.name == "__init__.py" or path.name.startswith("test_"), (
            f"{rel}: a helper module belongs in tests/fakes/")
        assert (path.parent / "__init__.py").exists(), f"{rel}: its folder needs an __init__.py"


def test_no_test_is_named_after_a_review_round() -> None:
    named = sorted(str(p.relative_to(TESTS)) for p in TESTS.rglob("test_hardening*.py"))
    assert not named, f"name these by subject: {named}"
