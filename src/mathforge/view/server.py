"""``mathforge view``: a local web page over a run's samples, verdicts and rejects (stdlib HTTP, 127.0.0.1 only).

Pages are rendered on the server from the URL's query (``?status=incorrect&teacher=x&q=apples``), so every view
has a link, nothing is fetched from the internet, and the page works with JavaScript off (the script only submits
the filter form when a menu changes).
"""

from __future__ import annotations

import importlib.resources
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jinja2

from mathforge.view.data import Item, Query, facets, load_items

PAGE_SIZE = 50
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


class Viewer:
    """A run's items in memory and the page renderer."""

    def __init__(self, run: str | Path):
        self.run = Path(run)
        self.items = load_items(self.run)
        self.facets = facets(self.items)
        env = jinja2.Environment(loader=jinja2.PackageLoader("mathforge.view", "static"), autoescape=True)
        self.template = env.get_template("page.html.j2")

    def render(self, query: Query) -> str:
        matched = [i for i in self.items if query.matches(i)]
        pages = max(1, -(-len(matched) // PAGE_SIZE))
        page = min(query.page, pages)
        shown = matched[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
        groups: dict[str, list[Item]] = {}
        for item in shown:
            groups.setdefault(item.problem_id, []).append(item)
        base = {k: v for k, v in vars(query).items() if v and k != "page"}
        link = lambda p: "?" + urlencode({**base, "page": p})
        return self.template.render(
            run=self.run.resolve().name, query=query, facets=self.facets, groups=groups, total=len(self.items),
            matched=len(matched), page=page, pages=pages,
            prev=link(page - 1) if page > 1 else None, next=link(page + 1) if page < pages else None,
        )


def _static(name: str) -> bytes | None:
    if "/" in name or Path(name).suffix not in STATIC_TYPES:
        return None
    res = importlib.resources.files("mathforge.view") / "static" / name
    return res.read_bytes() if res.is_file() else None


def make_handler(viewer: Viewer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            url = urlsplit(self.path)
            if url.path == "/":
                self._send(200, "text/html; charset=utf-8", viewer.render(Query.from_params(parse_qs(url.query))).encode())
            elif url.path.startswith("/static/") and (body := _static(url.path[len("/static/"):])) is not None:
                self._send(200, STATIC_TYPES[Path(url.path).suffix], body)
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found")

        def _send(self, code: int, ctype: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    Handler.viewer = viewer  # type: ignore[attr-defined]
    return Handler


def make_server(run: str | Path, port: int = 8765) -> ThreadingHTTPServer:
    """The viewer of ``run`` bound to 127.0.0.1:``port`` (0 = any free port); call ``serve_forever`` on it."""
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(Viewer(run)))
    server.daemon_threads = True
    return server
