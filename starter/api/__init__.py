"""The HTTP API (`campaign api`): the CLI's commands over HTTP, plus what the outside calls.

One router module per resource (campaigns, drafts, schedules, suppressions, webhooks,
unsubscribe, health, the review pages), what they depend on in deps.py, and `create_app`
in main.py, which puts them together. Same `CampaignManager` as the CLI.
"""

from starter.api.main import create_app, server_options

__all__ = ["create_app", "server_options"]
