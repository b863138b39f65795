"""Placeholder portraits drawn by the project itself (no downloads): initials on a coloured disc."""

from __future__ import annotations

import hashlib
from xml.sax.saxutils import escape

from .model import Photo

_PALETTE = ("#1f6feb", "#8250df", "#bf3989", "#cf222e", "#bc4c00", "#4d2d00", "#116329", "#0a3069")


def initials(name: str) -> str:
    parts = name.split()
    if not parts:
        return "?"
    if not parts[0].isascii():  # a Chinese name: its given-name characters read best
        return parts[0][-2:] if len(parts[0]) >= 3 else parts[0]
    return "".join(p[0] for p in parts[:2]).upper()


def avatar_svg(name: str, size: int = 128) -> Photo:
    """An SVG portrait whose colour is stable for a given name."""
    colour = _PALETTE[hashlib.sha256(name.encode()).digest()[0] % len(_PALETTE)]
    text = escape(initials(name))
    font = size * (0.36 if len(text) > 1 else 0.5)
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" viewBox="0 0 {size} {size}">'
        f'<circle cx="{size / 2}" cy="{size / 2}" r="{size / 2}" fill="{colour}"/>'
        f'<text x="50%" y="50%" dy=".35em" text-anchor="middle" fill="#fff" '
        f'font-family="sans-serif" font-size="{font:.0f}">{text}</text></svg>'
    )
    return Photo(svg.encode(), "image/svg+xml")
