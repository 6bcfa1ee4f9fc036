"""How a dry run's outcome reads on a line, for replays and redrives alike."""

from __future__ import annotations


def outcome_word(done: bool, would: bool, verb: str) -> str:
    """``replayed``/``redriven``, ``would`` in a dry run, else ``skipped``, padded to one width."""
    return (verb if done else "would" if would else "skipped").ljust(len(verb))


def preview_line(preview: dict[str, object]) -> str:
    """A dry run's preview on the end of its line: channel, masked address, record; empty otherwise."""
    if not preview:
        return ""
    shown = " ".join(f"{name}={preview[name]}" for name in ("channel", "to", "type", "record") if preview.get(name))
    return f"  [{shown}]"
