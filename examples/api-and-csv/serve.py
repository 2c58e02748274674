"""A local stand-in for the posts API this example reads (JSONPlaceholder's ``/posts``), so the
example runs offline. It serves ``data/posts.json`` (JSONPlaceholder's posts, MIT licence) with
json-server's paging (``_page``, ``_limit``) and one addition: each post carries an
``updatedAt`` (2025-01-01T00:00:00Z plus ``id`` hours) and ``updated_since`` returns the posts
updated at or after it, so the pipeline's incremental parameter has something to filter.

    python examples/api-and-csv/serve.py --port 8765      # Ctrl-C stops it

Standard library only; it listens on 127.0.0.1 alone.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

START = datetime(2025, 1, 1, tzinfo=UTC)


def posts() -> list[dict[str, object]]:
    raw = json.loads((Path(__file__).parent / "data" / "posts.json").read_text(encoding="utf-8"))
    for post in raw:
        post["updatedAt"] = (START + timedelta(hours=int(post["id"]))).strftime("%Y-%m-%dT%H:%M:%SZ")
    return list(raw)


class Handler(BaseHTTPRequestHandler):
    data: list[dict[str, object]] = []

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        url = urlsplit(self.path)
        if url.path != "/posts":
            self._send(404, {"error": "not found"})
            return
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        found = self.data
        if "updated_since" in query:
            since = datetime.fromisoformat(query["updated_since"].replace("Z", "+00:00"))
            found = [p for p in found if datetime.fromisoformat(str(p["updatedAt"]).replace("Z", "+00:00")) >= since]
        page, limit = int(query.get("_page", "1")), int(query.get("_limit", "10"))
        self._send(200, found[(page - 1) * limit : page * limit])

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port (printed)")
    args = parser.parse_args()
    Handler.data = posts()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"serving http://127.0.0.1:{server.server_address[1]}/posts", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
