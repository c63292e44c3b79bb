"""HTML of received mail: sanitizing it for display, and text for indexing.

:func:`sanitize_html` is the only way HTML from a mailbox reaches a page. It
runs ``nh3`` (Rust's ammonia, an HTML5 parser, not regular expressions) with
an allow-list written for email:

* Kept: text structure (paragraphs, headings, lists, quotes, ``pre``), inline
  formatting, tables with their presentational attributes (``width``,
  ``bgcolor``, ``cellpadding``…), ``font``, links and images.
* Removed with their content: ``script``, ``style``, ``title``, ``template``,
  ``iframe``, ``object``, ``embed``, ``svg``, ``math``, form controls.
  Removed, content kept: every other tag (``form``, ``meta``, ``base``,
  ``link``, unknown tags…). No ``on*`` attribute, ``id``, ``class`` or
  ``name`` survives (no script, no clobbering of the page's DOM or CSS).
* URLs: links may be ``http``, ``https``, ``mailto`` or ``tel``; relative
  URLs are dropped (they would resolve against the CRM itself). Images may
  be ``cid:`` (rewritten by ``cid_url``), ``http(s)`` (blocked unless
  ``allow_remote_images``), or inline ``data:image/png|gif|jpeg|webp`` in
  base64. ``javascript:``, ``vbscript:``, ``data:text/html`` and friends are
  dropped, also when hidden with entities or tabs (``jav&#x09;ascript:``):
  nh3 decodes the HTML first and parses the URL like a browser does.
* Links get ``target="_blank"`` and ``rel="noopener noreferrer"``.
* CSS: ``<style>`` elements are dropped (they would restyle the whole page).
  The ``style`` attribute is kept because most mail is laid out with it, but
  only declarations of :data:`ALLOWED_CSS_PROPERTIES` survive, and only when
  their value holds no ``url(``, no escape (``\\``), no comment and no
  function other than ``rgb()``/``rgba()``/``hsl()``/``hsla()``/``calc()``.
  The allow-list has no property that can load a resource (``background``,
  ``background-image``, ``list-style-image``, ``border-image``…) or move
  content out of the message's box (``position``, ``top``, ``z-index``,
  ``transform``…). nh3's own ``filter_style_properties`` then filters the
  result again.

Remote images are how senders learn that (and when, and where) a message was
opened. They are blocked by default: the ``src`` is dropped and
:attr:`SanitizedHtml.blocked_images` counts them, so the page can offer
"Show images", which sanitizes again with ``allow_remote_images=True``.

The page should still show the result in a sandboxed frame with a strict
Content-Security-Policy; sanitizing is one layer, not the only one.
"""

from __future__ import annotations

import html.parser
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

import nh3

__all__ = [
    "ALLOWED_CSS_PROPERTIES",
    "SanitizedHtml",
    "html_to_text",
    "plain_text",
    "sanitize_html",
    "snippet",
]

_TAGS = frozenset(
    {
        "a", "abbr", "address", "b", "bdi", "bdo", "big", "blockquote", "br",
        "caption", "center", "cite", "code", "col", "colgroup", "dd", "del",
        "dfn", "div", "dl", "dt", "em", "figcaption", "figure", "font", "h1",
        "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li",
        "mark", "ol", "p", "pre", "q", "s", "samp", "small", "span", "strike",
        "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th",
        "thead", "tr", "tt", "u", "ul", "var", "wbr",
    }
)  # fmt: skip

#: dropped together with everything inside them
_CLEAN_CONTENT_TAGS = frozenset(
    {
        "script", "style", "title", "template", "iframe", "frame", "frameset",
        "object", "embed", "applet", "svg", "math", "noscript", "noembed",
        "noframes", "textarea", "select", "button", "xmp", "plaintext",
    }
)  # fmt: skip

_TABLE_CELL = {
    "align", "valign", "width", "height", "bgcolor", "colspan", "rowspan",
    "nowrap", "scope", "abbr",
}  # fmt: skip

_ATTRIBUTES: dict[str, set[str]] = {
    "*": {"dir", "lang", "title", "align", "style"},
    "a": {"href"},
    "img": {"src", "alt", "width", "height", "border", "hspace", "vspace"},
    "table": {
        "width",
        "height",
        "border",
        "bgcolor",
        "cellpadding",
        "cellspacing",
        "summary",
        "frame",
        "rules",
    },
    "td": _TABLE_CELL,
    "th": _TABLE_CELL,
    "tr": {"valign", "bgcolor", "height"},
    "tbody": {"valign"},
    "thead": {"valign"},
    "tfoot": {"valign"},
    "col": {"span", "width", "valign"},
    "colgroup": {"span", "width", "valign"},
    "font": {"color", "face", "size"},
    "ol": {"start", "type", "reversed"},
    "ul": {"type"},
    "li": {"value", "type"},
    "hr": {"width", "size", "noshade", "color"},
    "div": {"valign"},
    "p": {"valign"},
}

#: CSS properties kept in ``style`` attributes: none loads a resource or
#: places content outside the message's box
ALLOWED_CSS_PROPERTIES = frozenset(
    {
        "background-color", "border", "border-bottom", "border-bottom-color",
        "border-bottom-style", "border-bottom-width", "border-collapse",
        "border-color", "border-left", "border-left-color",
        "border-left-style", "border-left-width", "border-radius",
        "border-right", "border-right-color", "border-right-style",
        "border-right-width", "border-spacing", "border-style", "border-top",
        "border-top-color", "border-top-style", "border-top-width",
        "border-width", "caption-side", "color", "direction", "display",
        "empty-cells", "float", "font", "font-family", "font-size",
        "font-style", "font-variant", "font-weight", "height", "letter-spacing",
        "line-height", "list-style-position", "list-style-type", "margin",
        "margin-bottom", "margin-left", "margin-right", "margin-top",
        "max-height", "max-width", "min-height", "min-width", "overflow",
        "padding", "padding-bottom", "padding-left", "padding-right",
        "padding-top", "table-layout", "text-align", "text-decoration",
        "text-indent", "text-transform", "vertical-align", "white-space",
        "width", "word-break", "word-spacing", "word-wrap", "overflow-wrap",
    }
)  # fmt: skip

_CSS_FUNCTIONS = frozenset({"rgb", "rgba", "hsl", "hsla", "calc"})
_CSS_FUNCTION = re.compile(r"([a-z0-9_-]*)\s*\(")
_CSS_FORBIDDEN = ("\\", "/*", "*/", "@", "url", "expression", "<", ">", "{", "}")

_LINK_SCHEMES = frozenset({"http", "https", "mailto", "tel"})
_REMOTE_SCHEMES = frozenset({"http", "https"})
_DATA_IMAGE = re.compile(
    r"data:image/(?:png|gif|jpeg|jpg|pjpeg|webp);base64,[a-z0-9+/=\s]*",
    re.IGNORECASE,
)
_SCHEME = re.compile(r"([a-z][a-z0-9+.-]*):", re.IGNORECASE)
# browsers drop ASCII tab and newlines anywhere in a URL, and C0 controls and
# spaces around it
_URL_IGNORED = re.compile(r"[\t\n\r]")
_C0_AND_SPACE = "".join(map(chr, range(0x21)))


@dataclass(frozen=True, slots=True)
class SanitizedHtml:
    """HTML that is safe to put into a page, and what was held back."""

    html: str
    #: remote images whose ``src`` was dropped (offer "Show images" when > 0)
    blocked_images: int = 0
    #: the Content-IDs of the ``cid:`` images rewritten by ``cid_url``, in
    #: order of appearance (the page need not list those attachments again)
    content_ids: tuple[str, ...] = ()


def _url(value: str) -> tuple[str, str | None]:
    """``value`` cleaned the way a browser reads it, and its lower-case scheme."""
    url = _URL_IGNORED.sub("", value).strip(_C0_AND_SPACE)
    match = _SCHEME.match(url)
    return url, match.group(1).lower() if match else None


def _clean_style(value: str) -> str | None:
    kept: list[str] = []
    for declaration in value.split(";"):
        name, colon, css = declaration.partition(":")
        name = name.strip().lower()
        css = css.strip()
        if not colon or name not in ALLOWED_CSS_PROPERTIES or not css:
            continue
        lowered = css.lower()
        if any(token in lowered for token in _CSS_FORBIDDEN):
            continue
        if lowered.count('"') % 2 or lowered.count("'") % 2:
            continue
        functions = _CSS_FUNCTION.findall(lowered)
        if any(function not in _CSS_FUNCTIONS for function in functions):
            continue
        kept.append(f"{name}: {css}")
    return "; ".join(kept) or None


def sanitize_html(
    html: str,
    *,
    allow_remote_images: bool = False,
    cid_url: Callable[[str], str | None] | None = None,
) -> SanitizedHtml:
    """Make a received message's HTML safe to show (rules: module docstring).

    ``cid_url(content_id)`` gives the URL that serves the attachment with
    that Content-ID (without ``<>``), or None when there is none; ``cid:``
    images are dropped without it. The URL it returns may be relative.
    """
    blocked = 0
    content_ids: list[str] = []
    rewritten: set[str] = set()

    def image_src(value: str) -> str | None:
        nonlocal blocked
        url, scheme = _url(value)
        if scheme == "cid":
            content_id = urllib.parse.unquote(url[4:]).strip().strip("<>")
            target = cid_url(content_id) if cid_url and content_id else None
            if target is None:
                return None
            content_ids.append(content_id)
            rewritten.add(target)
            return target
        if scheme in _REMOTE_SCHEMES or url.startswith("//"):
            if allow_remote_images:
                return url if scheme else "https:" + url
            blocked += 1
            return None
        if scheme == "data" and _DATA_IMAGE.fullmatch(url):
            return url
        return None

    def attribute_filter(tag: str, attribute: str, value: str) -> str | None:
        if attribute == "style":
            return _clean_style(value)
        if tag == "img" and attribute == "src":
            return image_src(value)
        if attribute == "href":
            url, scheme = _url(value)
            return url if scheme in _LINK_SCHEMES else None
        return value

    def relative_url(url: str) -> str | None:
        # relative URLs would point into the CRM; only ``cid_url``'s own pass
        # (protocol-relative ``//host/x`` images are resolved in the filter)
        if url in rewritten:
            return url
        if url.startswith("//"):
            return url
        return None

    cleaned = nh3.clean(
        html,
        tags=set(_TAGS),
        clean_content_tags=set(_CLEAN_CONTENT_TAGS),
        attributes=_ATTRIBUTES,
        attribute_filter=attribute_filter,
        strip_comments=True,
        link_rel="noopener noreferrer",
        url_schemes=set(_LINK_SCHEMES | {"cid", "data"}),
        url_relative=relative_url,
        set_tag_attribute_values={"a": {"target": "_blank"}},
        filter_style_properties=set(ALLOWED_CSS_PROPERTIES),
    )
    return SanitizedHtml(
        html=cleaned, blocked_images=blocked, content_ids=tuple(content_ids)
    )


# -- text ---------------------------------------------------------------------

#: elements whose content is not text a reader sees
_SKIPPED = frozenset(
    {"script", "style", "head", "title", "template", "noscript", "svg", "math"}
)
#: elements that start and end on a line of their own
_BLOCKS = frozenset(
    {
        "address", "article", "aside", "blockquote", "body", "caption",
        "center", "dd", "details", "dialog", "div", "dl", "dt", "fieldset",
        "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4",
        "h5", "h6", "header", "hr", "html", "li", "main", "nav", "ol", "p",
        "pre", "section", "summary", "table", "tbody", "tfoot", "thead", "tr",
        "ul",
    }
)  # fmt: skip
_CELLS = frozenset({"td", "th"})
_SPACES = re.compile(r"[^\S\n]+")
_BLANK_LINES = re.compile(r"\n{3,}")


_PARAGRAPHS = frozenset(
    {"p", "table", "blockquote", "pre", "h1", "h2", "h3", "h4", "h5", "h6"}
)


class _TextExtractor(html.parser.HTMLParser):
    """Text with line breaks; a block boundary is written once, before text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self._skip: list[str] = []
        self._pre = 0
        self._breaks = 0  # line breaks owed before the next text

    def _block(self, tag: str) -> None:
        self._breaks = max(self._breaks, 2 if tag in _PARAGRAPHS else 1)

    def _write(self, text: str) -> None:
        if self._breaks and self.chunks:
            self.chunks.append("\n" * self._breaks)
        self._breaks = 0
        self.chunks.append(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body" and "head" in self._skip:  # ``</head>`` is optional
            del self._skip[self._skip.index("head") :]
        if tag in _SKIPPED:
            self._skip.append(tag)
            return
        if self._skip:
            return
        if tag == "br":
            self._write("\n")
        elif tag in _BLOCKS:
            self._block(tag)
            if tag == "pre":
                self._pre += 1
        elif tag in _CELLS:
            self._write(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _SKIPPED:
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if self._skip:
            if tag == self._skip[-1]:
                self._skip.pop()
            elif tag in self._skip:  # unclosed elements inside a skipped one
                del self._skip[self._skip.index(tag) :]
            return
        if tag in _BLOCKS:
            self._block(tag)
            if tag == "pre" and self._pre:
                self._pre -= 1

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._pre:
            # keep line breaks and indentation; a marker survives collapsing
            self._write(data.replace(" ", "\x00").replace("\t", "\x00" * 4))
        elif data.strip():  # spaces around the data separate it from its neighbours
            lead = " " if data[:1].isspace() else ""
            trail = " " if data[-1:].isspace() else ""
            self._write(lead + " ".join(data.split()) + trail)
        elif not self._breaks:
            self._write(" ")


def html_to_text(html: str) -> str:
    """The text a reader of ``html`` sees, for the full-text index and snippets.

    Scripts, styles and the ``head`` are skipped; block elements and ``<br>``
    become line breaks, table cells are separated by spaces; runs of spaces
    collapse (except in ``pre``) and at most one blank line separates blocks.
    """
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    text = "".join(parser.chunks)
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    text = "\n".join(line.replace("\x00", " ").rstrip() for line in lines)
    return _BLANK_LINES.sub("\n\n", text).strip()


def plain_text(text: str | None, html: str | None) -> str:
    """The text of a message body: its ``text/plain`` part, else its HTML's text.

    :func:`crmflow.mail.parse.parse_message` keeps ``text`` None when a
    message has only HTML; index and show snippets through this function so
    every caller treats HTML-only mail the same way.
    """
    if text is not None and text.strip():
        return text
    if html:
        return html_to_text(html)
    return text or ""


def snippet(text: str, length: int = 160) -> str:
    """The start of ``text`` on one line, at most ``length`` characters.

    Whitespace collapses to single spaces; a cut ends at a word boundary when
    there is one in the last third, followed by ``…``.
    """
    flat = " ".join(text.split())
    if len(flat) <= length:
        return flat
    if length <= 1:
        return "…"[:length]
    cut = flat[: length - 1]
    space = cut.rfind(" ")
    if space >= (length * 2) // 3:
        cut = cut[:space]
    return cut.rstrip() + "…"
