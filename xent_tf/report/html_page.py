"""The self-contained HTML page shared by the study reports and the claims ledger.

Both are opened from disk or inline in the MLflow UI's artifact view, so everything (style,
plots) lives in the one file.
"""

from __future__ import annotations

import html

# Verdict cells are styled by class: <td class="holds|contradicted|inconclusive|...">, the
# verdict with spaces as hyphens ("not applicable" -> not-applicable).
_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 1400px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.holds { background: #d9f2d9; font-weight: bold; }
td.contradicted { background: #f8d0d0; font-weight: bold; }
td.inconclusive { background: #fff1c1; font-weight: bold; }
td.unstable { background: #f3dcf3; font-weight: bold; }
td.not-measured, td.not-applicable { background: #ececec; color: #555; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
blockquote { border-left: 4px solid #c33; margin: 0.5em 0; padding: 0.2em 1em;
  background: #fbf3f3; }
"""


def html_page(title: str, body: str) -> str:
    """A complete HTML document with the suite's inline style.

    Args:
        title: the page title (escaped here).
        body: the page's body, already HTML.

    Returns:
        The document, ending with a newline.
    """
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
        f"<body>{body}</body></html>\n"
    )
