"""Stream ids and Redis replies as text: the small conversions every stream command needs."""

from __future__ import annotations


def as_text(value: bytes | str) -> str:
    """Redis replies arrive as bytes; ids and names are wanted as text."""
    return value.decode() if isinstance(value, bytes) else value


def next_id(stream_id: str) -> str:
    """The smallest stream id after ``stream_id``."""
    ms, _, seq = stream_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


def id_key(stream_id: str) -> tuple[int, int]:
    """Sort key of a stream id (ids compare numerically, not as text)."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)
