"""Every stage module, imported so that its handlers register with ``registry``.

Imported on the first message rather than at the import of function_app, which must stay fast;
kept apart from the registry, which the stages import, so that neither imports the other.
"""

from __future__ import annotations


def load_stages() -> None:
    from shared.pipeline import (  # noqa: F401 - imported for the handlers they register
        callbacks,
        deliver,
        diagnostics,
        email_flow,
        escalation,
        followups,
        notes,
        poll,
        process,
        slack_codes,
        slack_flow,
        slack_reasons,
    )
