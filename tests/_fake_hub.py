"""A loopback stand-in for the Hugging Face Hub's HTTP API, enough for ``hf_hub_download`` and
``snapshot_download`` pointed at it through ``HF_ENDPOINT``.

It serves what huggingface_hub asks for (read from huggingface_hub 2.x's ``file_download``, ``_snapshot_download``
and ``hf_api``):

- ``GET  /api/datasets/{repo}/revision/{rev}``: repo info with ``sha`` (the commit) and ``siblings``;
- ``GET  /api/datasets/{repo}/tree/{rev}?recursive=True``: the file list (``type``, ``path``, ``size``, ``oid``);
- ``HEAD|GET /datasets/{repo}/resolve/{rev}/{path}``: the file, with ``X-Repo-Commit``, ``ETag`` and
  ``Content-Length`` (hf_hub_download refuses a response without the first two);
- errors as the Hub signals them: 404 + ``X-Error-Code: RepoNotFound | RevisionNotFound | EntryNotFound``;
  a private repo answers 401 RepoNotFound unless ``Authorization: Bearer <its token>`` is sent.

Every request is recorded in ``FakeHub.requests`` (method, path, authorization header) so tests can assert what
went over the wire (and that nothing did when offline).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit


@dataclass
class Repo:
    files: dict[str, bytes]
    commit: str = ""
    token: str | None = None  # private: requests must carry this bearer token
    refs: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.commit:
            h = hashlib.sha1()
            for name in sorted(self.files):
                h.update(name.encode() + b"\0" + self.files[name])
            self.commit = h.hexdigest()
        self.refs.setdefault("main", self.commit)

    def resolve(self, rev: str) -> str | None:
        return rev if rev == self.commit else self.refs.get(rev)


class FakeHub:
    """``with FakeHub({"owner/name": Repo(...)}) as hub: hub.url``."""

    def __init__(self, repos: dict[str, Repo]) -> None:
        self.repos = repos
        self.requests: list[tuple[str, str, str | None]] = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_HEAD(self) -> None:  # noqa: N802
                hub._handle(self, body=False)

            def do_GET(self) -> None:  # noqa: N802
                hub._handle(self, body=True)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "FakeHub":
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------------------------------- routing

    def _handle(self, h: http.server.BaseHTTPRequestHandler, body: bool) -> None:
        path = urlsplit(h.path).path
        self.requests.append((h.command, path, h.headers.get("Authorization")))
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "datasets"] and len(parts) >= 6 and parts[4] in ("revision", "tree"):
            repo_id, kind, rev = "/".join(parts[2:4]), parts[4], unquote("/".join(parts[5:]))
            self._api(h, repo_id, kind, rev, body)
        elif parts[:1] == ["datasets"] and len(parts) >= 6 and parts[3] == "resolve":
            repo_id, rev, fname = "/".join(parts[1:3]), unquote(parts[4]), unquote("/".join(parts[5:]))
            self._resolve(h, repo_id, rev, fname, body)
        else:
            self._send(h, 404, b"not found", body, {"X-Error-Code": "RepoNotFound"})

    def _repo(self, h: http.server.BaseHTTPRequestHandler, repo_id: str, body: bool) -> Repo | None:
        repo = self.repos.get(repo_id)
        if repo is None:
            self._send(h, 404, b'{"error": "Repository not found"}', body, {"X-Error-Code": "RepoNotFound"})
            return None
        if repo.token is not None and h.headers.get("Authorization") != f"Bearer {repo.token}":
            self._send(h, 401, b'{"error": "Invalid username or password."}', body, {"X-Error-Code": "RepoNotFound"})
            return None
        return repo

    def _api(self, h: http.server.BaseHTTPRequestHandler, repo_id: str, kind: str, rev: str, body: bool) -> None:
        repo = self._repo(h, repo_id, body)
        if repo is None:
            return
        commit = repo.resolve(rev)
        if commit is None:
            self._send(h, 404, b'{"error": "Invalid rev id"}', body, {"X-Error-Code": "RevisionNotFound"})
            return
        if kind == "revision":
            doc: object = {"id": repo_id, "sha": commit, "private": repo.token is not None,
                           "siblings": [{"rfilename": name} for name in sorted(repo.files)]}
        else:
            doc = [{"type": "file", "path": name, "size": len(data),
                    "oid": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()}
                   for name, data in sorted(repo.files.items())]
        self._send(h, 200, json.dumps(doc).encode(), body, {"Content-Type": "application/json"})

    def _resolve(self, h: http.server.BaseHTTPRequestHandler, repo_id: str, rev: str, fname: str,
                 body: bool) -> None:
        repo = self._repo(h, repo_id, body)
        if repo is None:
            return
        commit = repo.resolve(rev)
        if commit is None:
            self._send(h, 404, b"Invalid rev id", body, {"X-Error-Code": "RevisionNotFound"})
            return
        data = repo.files.get(fname)
        if data is None:
            self._send(h, 404, b"Entry not found", body, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit})
            return
        self._send(h, 200, data, body, {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                                        "Content-Type": "application/octet-stream"})

    @staticmethod
    def _send(h: http.server.BaseHTTPRequestHandler, status: int, data: bytes, body: bool,
              headers: dict[str, str]) -> None:
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if body:
            h.wfile.write(data)
