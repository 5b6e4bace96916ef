"""`python -m starter` is the same as the `campaign` command."""

from starter.cli import main

main()
