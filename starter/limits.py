"""Bounds on what comes in from outside: numbers that reach the store, text a reviewer edits.

One module so the API (`starter/api/`), the review pages (`starter/api/review_pages.py`) and the
manager share the same figures: an edit the API refuses is refused by the form too, and a page
or step number too large for the store's 64-bit integers is refused (422) before the store is
asked, rather than raising `OverflowError` (a 500).
"""

from __future__ import annotations

#: The longest subject a reviewer may give a draft (characters).
MAX_SUBJECT = 1000
#: The longest body a reviewer may give a draft (characters).
MAX_BODY = 50_000
#: The highest step number anyone may name: far beyond any sequence (1 + MAX_FOLLOW_UPS),
#: far below what would overflow a store integer.
MAX_STEP = 100
#: The highest page number of a paged list: with at most 1,000 rows a page, the offset stays
#: below 10^9, so it fits every store's integers.
MAX_PAGE_NUMBER = 1_000_000
#: The highest draft version a form may name as the base of an edit (a 32-bit integer).
MAX_VERSION = 2**31 - 1
#: The largest urlencoded form the review pages read (bytes): an edit of MAX_BODY characters
#: of 4-byte UTF-8, percent-encoded, is 600 KB; nothing else comes close.
MAX_FORM_BYTES = 1_000_000
