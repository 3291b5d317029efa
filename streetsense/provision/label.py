"""QR label for a provisioned node (segno): SVG with the human-readable lines, and PNG.

The QR text names the device and its asset, e.g. ``ss://leeds/bin-k3x9q2?asset=BIN-123``;
a council that runs the dashboard can print a URL instead (``base_url``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import escape

import segno

ERROR = "m"          # 15 % of the code may be lost to dirt and scratches
SCALE_SVG = 4
SCALE_PNG = 8
BORDER = 4


def qr_text(tenant: str, device_id: str, asset: str | None = None, base_url: str | None = None) -> str:
    """The text in the QR code.

    >>> qr_text("leeds", "bin-1", "BIN 12/A")
    'ss://leeds/bin-1?asset=BIN%2012%2FA'
    """
    head = (base_url.rstrip("/") + f"/devices/{tenant}/{device_id}") if base_url else f"ss://{tenant}/{device_id}"
    return head + (f"?asset={quote(asset, safe='')}" if asset else "")


def make_qr(text: str) -> segno.QRCode:
    """The QR code for ``text`` (fixed parameters, so a test can rebuild the same matrix)."""
    return segno.make_qr(text, error=ERROR, boost_error=False)


@dataclass(frozen=True)
class Label:
    text: str
    svg: Path
    png: Path


def render_svg(qr: segno.QRCode, lines: list[str]) -> str:
    """An SVG label: the QR code with text lines under it."""
    buf = io.BytesIO()
    qr.save(buf, kind="svg", scale=SCALE_SVG, border=BORDER, xmldecl=False, svgns=True, nl=False)
    inner = buf.getvalue().decode()
    w, h = qr.symbol_size(scale=SCALE_SVG, border=BORDER)
    line_h = 14
    total_h = h + line_h * len(lines) + 8
    parts = []
    for i, s in enumerate(lines):
        style = 'font-size="12" font-weight="bold"' if i == 0 else 'font-size="10"'
        parts.append(f'<text x="{w / 2:g}" y="{h + line_h * (i + 1):g}" text-anchor="middle" '
                     f'font-family="monospace" {style}>{escape(s)}</text>')
    text = "".join(parts)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{total_h}" '
            f'viewBox="0 0 {w} {total_h}"><rect width="{w}" height="{total_h}" fill="#fff"/>'
            f"{inner}{text}</svg>\n")


def write_label(out_dir: Path, tenant: str, device_id: str, asset: str | None = None, *,
                kind: str | None = None, base_url: str | None = None) -> Label:
    """Write ``<tenant>_<device_id>.svg`` and ``.png`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = qr_text(tenant, device_id, asset, base_url)
    qr = make_qr(text)
    lines = [device_id] + ([f"asset {asset}"] if asset else []) + [f"{tenant}" + (f" · {kind}" if kind else "")]
    svg = out_dir / f"{tenant}_{device_id}.svg"
    png = out_dir / f"{tenant}_{device_id}.png"
    svg.write_text(render_svg(qr, lines))
    qr.save(str(png), kind="png", scale=SCALE_PNG, border=BORDER)
    return Label(text, svg, png)
