"""A loopback, in-memory Hugging Face Hub for tests (stdlib only).

`hub_server()` starts a `ThreadingHTTPServer` on 127.0.0.1 (random port) in a daemon thread and yields a
`HubServer`; `hub_server_fixture` is the same as a pytest fixture (import it into a test module). The server
speaks the subset of the Hub HTTP API that the installed `huggingface_hub` (2.x, httpx) client uses for
`create_repo`, `repo_info`/`model_info`, `create_branch`/`create_tag`/`list_repo_refs`/`list_repo_commits`,
`upload_folder`/`create_commit` (preupload, LFS batch + basic PUT upload + verify, NDJSON commit),
`hf_hub_download`/`snapshot_download`/`from_pretrained` (HEAD/GET `resolve`, `tree`, `paths-info`) and
`/api/validate-yaml`. Any token is accepted and none is required (`enforce_private=True` hides private
repos from requests without an `Authorization` header). Everything lives in memory: one full file snapshot
per commit, branches/tags point at commits, new repos get an "initial commit" with `.gitattributes` like
the real Hub. Files matching `LFS_PATTERNS`, containing NUL bytes, or of `lfs_threshold` bytes or more
are uploaded through LFS (the server's preupload answer decides; the client follows it).

Pointing the client at the server
---------------------------------
`huggingface_hub` reads `HF_ENDPOINT`, `HF_HUB_DISABLE_XET`, `HF_HUB_OFFLINE`, `HF_HOME`/`HF_HUB_CACHE`
once, at import (`huggingface_hub.constants`), and transformers keeps a shared `HfApi` instance, so the
robust way is a fresh subprocess: `run_client(script, endpoint)` runs `python -c script` with
`client_env(endpoint, hf_home)`:

* `HF_ENDPOINT=<server>`;
* `HF_HUB_DISABLE_XET=1` -- required: `hf_xet` is installed and would otherwise take the Xet upload path
  (a xet-write-token endpoint this server does not have);
* `HF_HUB_OFFLINE`/`TRANSFORMERS_OFFLINE`/`HF_DATASETS_OFFLINE` and `HF_TOKEN` removed, a fresh `HF_HOME`
  (and `HF_HUB_CACHE` below it) so neither a real token nor a real cache is used;
* `NO_PROXY` for 127.0.0.1/localhost, progress bars and telemetry off.

`tests/conftest.py` sets `HF_HUB_OFFLINE=1` for the pytest process; `client_env` drops it for the child and
`inprocess_client` switches `constants.HF_HUB_OFFLINE` off while active.

In-process use is possible for plain `HfApi(endpoint=server.endpoint)` / `hf_hub_download(...,
endpoint=...)` calls, but uploads additionally need `huggingface_hub.constants.HF_HUB_DISABLE_XET = True`
and anything that does not take an `endpoint` argument (transformers) needs `constants.ENDPOINT` and
`constants.HUGGINGFACE_CO_URL_TEMPLATE` patched and `transformers.utils.hub._hf_api` reset;
`inprocess_client(server, cache_dir)` does exactly that (and restores it), but prefer `run_client`.
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

try:  # the module is also usable without pytest (e.g. from a script)
    import pytest
except ImportError:  # pragma: no cover
    pytest = None

__all__ = [
    "HubServer", "StoredFile", "Commit", "hub_server", "hub_server_fixture", "client_env", "run_client",
    "run_client_json", "inprocess_client", "LFS_PATTERNS",
]

USER = "hub-test-user"
LFS_PATTERNS = (
    "*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.onnx", "*.msgpack", "*.model", "*.npy",
    "*.npz", "*.pkl", "*.pickle", "*.zip", "*.gz", "*.tar", "*.tgz", "*.xz", "*.zst", "*.arrow", "*.parquet",
    "*.nii", "*.nrrd", "*.mha", "*.tflite", "*.ot", "*tfevents*",
)
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS).encode()
_REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_API_VERBS = {"revision", "tree", "paths-info", "refs", "commits", "branch", "tag", "preupload", "commit",
              "settings"}
_SHA1 = re.compile(r"^[0-9a-f]{40}$")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob (what the Hub uses as ETag for non-LFS files)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class StoredFile:
    """One file of a commit snapshot."""

    path: str
    content: bytes
    lfs: bool

    @property
    def size(self) -> int:
        return len(self.content)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def pointer(self) -> bytes:
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n".encode()

    @property
    def blob_id(self) -> str:
        """Git oid of what git stores (the pointer for LFS files)."""
        return git_blob_sha1(self.pointer if self.lfs else self.content)

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else git_blob_sha1(self.content)

    @property
    def oid(self) -> str:
        """The oid the preupload endpoint reports (sha256 for LFS, git sha1 otherwise)."""
        return self.etag

    def entry(self, last_commit: Commit | None = None) -> dict:
        d = {"type": "file", "oid": self.blob_id, "size": self.size, "path": self.path}
        if self.lfs:
            d["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": len(self.pointer)}
        if last_commit is not None:
            d["lastCommit"] = last_commit.summary()
        return d


@dataclass
class Commit:
    """A commit: full snapshot `files` plus what changed relative to its parent."""

    oid: str
    title: str
    description: str
    parents: list[str]
    date: str
    files: dict[str, StoredFile]
    added: list[str] = field(default_factory=list)  # added or modified paths, in payload order
    deleted: list[str] = field(default_factory=list)
    branch: str | None = None

    @property
    def message(self) -> str:
        return self.title + ("\n\n" + self.description if self.description else "")

    def contents(self) -> dict[str, bytes]:
        return {p: f.content for p, f in self.files.items()}

    def summary(self) -> dict:
        return {"id": self.oid, "title": self.title, "date": self.date}


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    private: bool
    created_at: str
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # commit oids in creation order
    gated: bool | str = False
    num_prs: int = 0

    def resolve(self, revision: str) -> str | None:
        if revision in self.branches:
            return self.branches[revision]
        if revision in self.tags:
            return self.tags[revision]
        if revision in self.commits:
            return revision
        return None


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None,
                 extra: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}
        self.extra = extra or {}  # more JSON fields of the error body


class HubServer:
    """In-memory Hub state + the HTTP server. Use `hub_server()` to run one."""

    def __init__(self, *, lfs_threshold: int = 10 * 1024 * 1024, enforce_private: bool = False,
                 user: str = USER, lfs_verify: bool = True):
        self.lfs_threshold = lfs_threshold
        self.enforce_private = enforce_private
        self.user = user
        self.lfs_verify = lfs_verify
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}  # sha256 -> content
        self.requests: list[tuple[str, str]] = []  # (method, path with query)
        self.authorizations: set[str] = set()  # Authorization headers seen (e.g. "Bearer hf_...")
        self.lock = threading.RLock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.endpoint = ""

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> HubServer:
        handler = type("_BoundHandler", (_Handler,), {"hub": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ assertions helpers
    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def has_repo(self, repo_id: str, repo_type: str = "model") -> bool:
        return (repo_type, repo_id) in self.repos

    def is_private(self, repo_id: str, repo_type: str = "model") -> bool:
        return self.repo(repo_id, repo_type).private

    def commits(self, repo_id: str, repo_type: str = "model", branch: str | None = None) -> list[Commit]:
        """Commits oldest first: all of the repo's, or the first-parent history of `branch`."""
        repo = self.repo(repo_id, repo_type)
        if branch is None:
            return [repo.commits[o] for o in repo.order]
        out, oid = [], repo.resolve(branch)
        while oid:
            out.append(repo.commits[oid])
            oid = repo.commits[oid].parents[0] if repo.commits[oid].parents else None
        return out[::-1]

    def branches(self, repo_id: str, repo_type: str = "model") -> dict[str, str]:
        return dict(self.repo(repo_id, repo_type).branches)

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, StoredFile]:
        repo = self.repo(repo_id, repo_type)
        oid = repo.resolve(revision)
        if oid is None:
            raise KeyError(f"{repo_id}: no revision {revision!r}")
        return dict(repo.commits[oid].files)

    def create_repo(self, repo_id: str, *, repo_type: str = "model", private: bool = False) -> Repo:
        """Create a repo directly (seed state without going through HTTP)."""
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                raise HubError(409, "You already created this repo", headers={})
            repo = Repo(repo_id, repo_type, bool(private), _now())
            init = Commit(self._new_oid(), "initial commit", "", [], repo.created_at,
                          {".gitattributes": StoredFile(".gitattributes", GITATTRIBUTES, False)},
                          added=[".gitattributes"], branch="main")
            repo.commits[init.oid] = init
            repo.order.append(init.oid)
            repo.branches["main"] = init.oid
            self.repos[(repo_type, repo_id)] = repo
            return repo

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _new_oid() -> str:
        return hashlib.sha1(uuid.uuid4().bytes + str(time.time_ns()).encode()).hexdigest()

    def url_of(self, repo: Repo) -> str:
        return f"{self.endpoint}/{_URL_PREFIX[repo.repo_type]}{repo.repo_id}"

    def is_lfs(self, path: str, size: int, sample: bytes) -> bool:
        if size == 0:
            return False
        name = path.rsplit("/", 1)[-1]
        return (size >= self.lfs_threshold or b"\x00" in sample
                or any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(path, p) for p in LFS_PATTERNS))

    def last_commit_touching(self, repo: Repo, head: str, path: str, is_dir: bool = False) -> Commit:
        def sig(c: Commit):
            if is_dir:
                return tuple(sorted((p, f.blob_id) for p, f in c.files.items() if p.startswith(path + "/")))
            f = c.files.get(path)
            return f.blob_id if f else None
        commit = repo.commits[head]
        target = sig(commit)
        while commit.parents:
            parent = repo.commits[commit.parents[0]]
            if sig(parent) != target:
                break
            commit = parent
        return commit


# ---------------------------------------------------------------------- HTTP layer
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: HubServer  # set on the bound subclass
    timeout = 60

    def log_message(self, format, *args):  # silence
        pass

    # -------------------------------------------------------------- plumbing
    def _body(self) -> bytes:
        if getattr(self, "_cached_body", None) is not None:
            return self._cached_body
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            data = b"".join(chunks)
        else:
            data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._cached_body = data
        return data

    def _json_body(self):
        raw = self._body()
        return json.loads(raw) if raw else {}

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, *, head: bool = False,
              content_length: int | None = None) -> None:
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Type", "application/json")
        for k, v in headers.items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(body) if content_length is None else content_length))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def _json(self, obj, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _dispatch(self, method: str) -> None:
        self._cached_body = None
        hub = self.hub
        with hub.lock:
            hub.requests.append((method, self.path))
            if self.headers.get("Authorization"):
                hub.authorizations.add(self.headers["Authorization"])
        try:
            if method in ("POST", "PUT", "DELETE", "PATCH"):
                self._body()  # always drain the request body (keep-alive)
            self._route(method)
        except HubError as err:
            headers = dict(err.headers)
            if err.code:
                headers["X-Error-Code"] = err.code
            headers["X-Error-Message"] = err.message.replace("\n", " ")
            if method == "HEAD":
                self._send(err.status, b"", headers, head=True, content_length=0)
            else:
                self._json({"error": err.message, **err.extra}, err.status, headers)
        except Exception as exc:  # pragma: no cover - surfaced to the client as a 500
            import traceback
            traceback.print_exc()
            self._json({"error": f"{type(exc).__name__}: {exc}"}, 500)

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    # -------------------------------------------------------------- routing
    def _route(self, method: str) -> None:
        parts = urlsplit(self.path)
        raw_path, query = parts.path, parse_qs(parts.query, keep_blank_values=True)
        segs = [s for s in raw_path.split("/") if s != ""]
        hub = self.hub

        if raw_path.startswith("/__lfs__/"):
            return self._lfs_object(method, segs)
        if raw_path.endswith(".git/info/lfs/objects/batch") and method == "POST":
            repo_part = raw_path[1:-len(".git/info/lfs/objects/batch")]
            repo_type = "model"
            for prefix, rtype in (("datasets/", "dataset"), ("spaces/", "space")):
                if repo_part.startswith(prefix):
                    repo_part, repo_type = repo_part[len(prefix):], rtype
            return self._lfs_batch(self._get_repo(repo_type, unquote(repo_part)))
        if segs[:1] == ["api"]:
            if segs[1:3] == ["repos", "create"] and method == "POST":
                return self._create_repo()
            if segs[1:3] == ["repos", "delete"] and method == "DELETE":
                return self._delete_repo()
            if segs[1:] == ["whoami-v2"]:
                return self._json({"type": "user", "id": "0" * 24, "name": hub.user, "fullname": "Hub Test User",
                                   "orgs": [], "auth": {"type": "access_token",
                                                        "accessToken": {"displayName": "test", "role": "write"}}})
            if segs[1:] == ["validate-yaml"] and method == "POST":
                return self._validate_yaml()
            if len(segs) >= 3 and segs[1] in _REPO_TYPES:
                repo_type = _REPO_TYPES[segs[1]]
                repo, rest = self._split_repo(repo_type, segs[2:])
                return self._repo_api(method, repo, rest, query)
            raise HubError(404, f"Unknown API route {raw_path}")
        # /{repo_id}/resolve/{rev}/{path} (datasets/ and spaces/ prefixed)
        repo_type = "model"
        if segs and segs[0] in _REPO_TYPES and segs[0] != "models":
            repo_type, segs = _REPO_TYPES[segs[0]], segs[1:]
        if "resolve" in segs[1:3] and method in ("GET", "HEAD"):
            i = segs.index("resolve", 1)
            if len(segs) < i + 3:
                raise HubError(400, "Bad resolve URL")
            repo = self._get_repo(repo_type, "/".join(unquote(s) for s in segs[:i]))
            return self._resolve(method, repo, unquote(segs[i + 1]), "/".join(unquote(s) for s in segs[i + 2:]))
        raise HubError(404, f"Not found: {raw_path}")

    def _split_repo(self, repo_type: str, segs: list[str]) -> tuple[Repo, list[str]]:
        segs_u = [unquote(s) for s in segs]
        with self.hub.lock:
            if len(segs_u) >= 2 and (repo_type, "/".join(segs_u[:2])) in self.hub.repos:
                n = 2
            elif (repo_type, segs_u[0]) in self.hub.repos:
                n = 1
            else:
                n = 2 if len(segs_u) >= 2 and (len(segs_u) == 2 or segs_u[2] in _API_VERBS) else 1
        return self._get_repo(repo_type, "/".join(segs_u[:n])), segs[n:]

    def _get_repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.hub.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and self.hub.enforce_private and not self.headers.get("Authorization")):
            raise HubError(404 if repo is None else 401, f"Repository Not Found for {repo_type} {repo_id}",
                           "RepoNotFound")
        return repo

    def _commit_for(self, repo: Repo, revision: str) -> Commit:
        oid = repo.resolve(revision)
        if oid is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo.commits[oid]

    def _repo_api(self, method: str, repo: Repo, rest: list[str], query: dict) -> None:
        verb = rest[0] if rest else ""
        arg = unquote(rest[1]) if len(rest) > 1 else "main"
        tail = "/".join(unquote(s) for s in rest[2:])
        if not rest and method == "GET":
            return self._info(repo, "main", query)
        if verb == "revision" and method == "GET":
            return self._info(repo, unquote("/".join(rest[1:])), query)
        if verb == "tree" and method == "GET":
            return self._tree(repo, arg, tail, query)
        if verb == "paths-info" and method == "POST":
            return self._paths_info(repo, arg)
        if verb == "refs" and method == "GET":
            return self._refs(repo, query)
        if verb == "commits" and method == "GET":
            return self._list_commits(repo, arg)
        if verb == "branch":
            return self._branch(method, repo, unquote("/".join(rest[1:])))
        if verb == "tag":
            return self._tag(method, repo, unquote("/".join(rest[1:])))
        if verb == "preupload" and method == "POST":
            return self._preupload(repo, arg)
        if verb == "commit" and method == "POST":
            return self._commit(repo, unquote("/".join(rest[1:])), query)
        if verb == "settings" and method == "PUT":
            body = self._json_body()
            with self.hub.lock:
                if "visibility" in body:
                    repo.private = body["visibility"] == "private"
                if "private" in body:
                    repo.private = bool(body["private"])
                if "gated" in body:
                    repo.gated = body["gated"]
            return self._json({})
        raise HubError(404, f"Unknown repo API route {method} {'/'.join(rest)}")

    # -------------------------------------------------------------- repos
    def _create_repo(self) -> None:
        body = self._json_body()
        name, org = body.get("name"), body.get("organization")
        repo_type = body.get("type") or "model"
        if not name or repo_type not in _URL_PREFIX:
            raise HubError(400, "Invalid repo name or type")
        repo_id = f"{org or self.hub.user}/{name}"
        private = body.get("visibility") == "private" or bool(body.get("private"))
        if (repo_type, repo_id) in self.hub.repos:  # the client reads `url` from the 409 body (exist_ok)
            raise HubError(409, f"You already created this {repo_type} repo",
                           extra={"url": self.hub.url_of(self.hub.repos[(repo_type, repo_id)])})
        repo = self.hub.create_repo(repo_id, repo_type=repo_type, private=private)
        self._json({"url": self.hub.url_of(repo), "name": repo_id, "id": "0" * 24})

    def _delete_repo(self) -> None:
        body = self._json_body()
        repo_id = f"{body.get('organization') or self.hub.user}/{body.get('name')}"
        with self.hub.lock:
            if self.hub.repos.pop((body.get("type") or "model", repo_id), None) is None:
                raise HubError(404, "Repository Not Found", "RepoNotFound")
        self._json({})

    def _info(self, repo: Repo, revision: str, query: dict) -> None:
        commit = self._commit_for(repo, revision)
        blobs = query.get("blobs", [""])[0].lower() in ("1", "true")
        siblings = []
        for path in sorted(commit.files):
            f = commit.files[path]
            s = {"rfilename": path}
            if blobs:
                s.update(size=f.size, blobId=f.blob_id)
                if f.lfs:
                    s["lfs"] = {"size": f.size, "sha256": f.sha256, "pointerSize": len(f.pointer)}
            siblings.append(s)
        card = _front_matter(commit.files.get("README.md"))
        info = {
            "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0] if "/" in repo.repo_id else self.hub.user,
            "sha": commit.oid, "lastModified": commit.date, "createdAt": repo.created_at, "private": repo.private,
            "gated": repo.gated, "disabled": False, "downloads": 0, "likes": 0, "tags": list(card.get("tags") or []),
            "siblings": siblings, "usedStorage": sum(f.size for f in commit.files.values()),
        }
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
            info["library_name"] = card.get("library_name")
            info["pipeline_tag"] = card.get("pipeline_tag")
            config = _json_or_none(commit.files.get("config.json"))
            if isinstance(config, dict):
                info["config"] = {k: config[k] for k in ("architectures", "model_type", "auto_map") if k in config}
        if card:
            info["cardData"] = card
        self._json(info)

    def _entries(self, repo: Repo, commit: Commit, expand: bool) -> dict[str, dict]:
        """path -> tree entry for every file and directory of the snapshot."""
        out: dict[str, dict] = {}
        for path, f in commit.files.items():
            last = self.hub.last_commit_touching(repo, commit.oid, path) if expand else None
            out[path] = f.entry(last)
            parts = path.split("/")
            for k in range(1, len(parts)):
                d = "/".join(parts[:k])
                if d not in out:
                    out[d] = {"type": "directory", "path": d,
                              "oid": hashlib.sha1(f"{commit.oid}:{d}".encode()).hexdigest(), "size": 0}
                    if expand:
                        out[d]["lastCommit"] = self.hub.last_commit_touching(repo, commit.oid, d, True).summary()
        return out

    def _tree(self, repo: Repo, revision: str, path: str, query: dict) -> None:
        commit = self._commit_for(repo, revision)
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        expand = query.get("expand", ["false"])[0].lower() in ("1", "true")
        entries = self._entries(repo, commit, expand)
        path = path.strip("/")
        if path and (path not in entries or entries[path]["type"] != "directory"):
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound",
                           {"X-Repo-Commit": commit.oid})
        prefix = path + "/" if path else ""
        out = []
        for p in sorted(entries):
            if not p.startswith(prefix):
                continue
            if not recursive and "/" in p[len(prefix):]:
                continue
            out.append(entries[p])
        out.sort(key=lambda e: (e["type"] != "directory", e["path"]))
        self._json(out, headers={"X-Repo-Commit": commit.oid})

    def _paths_info(self, repo: Repo, revision: str) -> None:
        commit = self._commit_for(repo, revision)
        ctype = self.headers.get("Content-Type", "")
        if "json" in ctype:
            body = self._json_body()
            paths, expand = body.get("paths", []), bool(body.get("expand"))
        else:
            form = parse_qs(self._body().decode(), keep_blank_values=True)
            paths = form.get("paths", [])
            expand = form.get("expand", ["false"])[0].lower() in ("1", "true")
        entries = self._entries(repo, commit, expand)
        self._json([entries[p.strip("/")] for p in paths if p.strip("/") in entries])

    def _refs(self, repo: Repo, query: dict) -> None:
        def ref(name, kind, oid):
            return {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": oid}
        out = {"branches": [ref(n, "heads", o) for n, o in repo.branches.items() if not n.startswith("refs/pr/")],
               "tags": [ref(n, "tags", o) for n, o in repo.tags.items()], "converts": []}
        if query.get("include_prs"):
            out["pullRequests"] = [{"name": n, "ref": n, "targetCommit": o}
                                   for n, o in repo.branches.items() if n.startswith("refs/pr/")]
        self._json(out)

    def _list_commits(self, repo: Repo, revision: str) -> None:
        commit = self._commit_for(repo, revision)
        out = []
        while True:
            out.append({"id": commit.oid, "title": commit.title, "message": commit.description,
                        "authors": [{"user": self.hub.user, "avatar": None}], "date": commit.date})
            if not commit.parents:
                break
            commit = repo.commits[commit.parents[0]]
        self._json(out)

    def _branch(self, method: str, repo: Repo, branch: str) -> None:
        with self.hub.lock:
            if method == "POST":
                body = self._json_body()
                if branch in repo.branches:
                    raise HubError(409, f"Reference already exists: refs/heads/{branch}")
                start = body.get("startingPoint") or "main"
                repo.branches[branch] = self._commit_for(repo, start).oid
                return self._json({})
            if method == "DELETE":
                if branch not in repo.branches or branch == "main":
                    raise HubError(404 if branch not in repo.branches else 403, f"Cannot delete branch {branch}",
                                   "RevisionNotFound" if branch not in repo.branches else None)
                del repo.branches[branch]
                return self._json({})
        raise HubError(405, "Method not allowed")

    def _tag(self, method: str, repo: Repo, name: str) -> None:
        with self.hub.lock:
            if method == "POST":  # name is the revision; body carries the tag
                body = self._json_body()
                tag = body.get("tag")
                if not tag:
                    raise HubError(400, "Missing tag")
                if tag in repo.tags:
                    raise HubError(409, f"Tag {tag} already exists")
                repo.tags[tag] = self._commit_for(repo, name).oid
                return self._json({})
            if method == "DELETE":
                if repo.tags.pop(name, None) is None:
                    raise HubError(404, f"Tag {name} not found", "RevisionNotFound")
                return self._json({})
        raise HubError(405, "Method not allowed")

    # -------------------------------------------------------------- upload
    def _preupload(self, repo: Repo, revision: str) -> None:
        try:
            existing = self._commit_for(repo, revision).files
        except HubError:
            existing = {}  # committing to a branch that will be created (create_pr) -> nothing to compare
        out = []
        for f in self._json_body().get("files", []):
            sample = base64.b64decode(f.get("sample") or "")
            mode = "lfs" if self.hub.is_lfs(f["path"], int(f["size"]), sample) else "regular"
            stored = existing.get(f["path"])
            out.append({"path": f["path"], "uploadMode": mode, "shouldIgnore": False,
                        "oid": stored.oid if stored is not None else None})
        self._json({"files": out, "commitOid": None})

    def _lfs_batch(self, repo: Repo) -> None:
        body = self._json_body()
        if body.get("operation") != "upload":
            raise HubError(400, "Only the upload operation is supported")
        ep, objects = self.hub.endpoint, []
        for obj in body.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            entry = {"oid": oid, "size": size, "authenticated": True}
            if oid not in self.hub.lfs_objects:
                entry["actions"] = {"upload": {"href": f"{ep}/__lfs__/upload/{oid}/{size}", "header": {}}}
                if self.hub.lfs_verify:
                    entry["actions"]["verify"] = {"href": f"{ep}/__lfs__/verify", "header": {}}
            objects.append(entry)
        self._json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                   headers={"Content-Type": "application/vnd.git-lfs+json"})

    def _lfs_object(self, method: str, segs: list[str]) -> None:
        if segs[1:2] == ["upload"] and method == "PUT" and len(segs) == 4:
            oid, size, data = segs[2], int(segs[3]), self._body()
            if len(data) != size or hashlib.sha256(data).hexdigest() != oid:
                raise HubError(400, f"LFS upload does not match oid/size ({len(data)} bytes received)")
            with self.hub.lock:
                self.hub.lfs_objects[oid] = data
            return self._send(200, b"", {"ETag": f'"{hashlib.md5(data).hexdigest()}"'})
        if segs[1:2] == ["verify"] and method == "POST":
            body = self._json_body()
            data = self.hub.lfs_objects.get(body.get("oid"))
            if data is None or len(data) != int(body.get("size", -1)):
                raise HubError(404, "LFS object not found")
            return self._json({"success": True})
        raise HubError(404, "Unknown LFS route")

    def _commit(self, repo: Repo, revision: str, query: dict) -> None:
        lines = [json.loads(line) for line in self._body().decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "Commit payload must start with a header line")
        header = lines[0]["value"]
        create_pr = query.get("create_pr", ["0"])[0] in ("1", "true")
        hub = self.hub
        with hub.lock:
            if _SHA1.match(revision) and revision in repo.commits and revision not in repo.branches:
                raise HubError(400, f"Cannot commit to a commit sha ({revision}); use a branch", "RevisionNotFound")
            if revision not in repo.branches:
                raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            head = repo.branches[revision]
            if header.get("parentCommit") and header["parentCommit"] != head:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            target = revision
            if create_pr:
                repo.num_prs += 1
                target = f"refs/pr/{repo.num_prs}"
            files = dict(repo.commits[head].files)
            added, deleted = [], []
            for item in lines[1:]:
                key, value = item.get("key"), item.get("value", {})
                path = value.get("path", "").strip("/")
                if key == "file":
                    if value.get("encoding", "base64") != "base64":
                        raise HubError(400, "Only base64 encoded files are supported")
                    content = base64.b64decode(value["content"])
                    files[path] = StoredFile(path, content, False)
                    added.append(path)
                elif key == "lfsFile":
                    data = hub.lfs_objects.get(value.get("oid"))
                    if data is None:
                        raise HubError(400, f"Your push was rejected because an LFS pointer pointed to a file that "
                                            f"does not exist ({path})")
                    files[path] = StoredFile(path, data, True)
                    added.append(path)
                elif key == "deletedFile":
                    if files.pop(path, None) is None:
                        raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                    deleted.append(path)
                elif key == "deletedFolder":
                    gone = [p for p in files if p.startswith(path + "/")]
                    if not gone:
                        raise HubError(404, "A folder with this name doesn't exist", "EntryNotFound")
                    for p in gone:
                        del files[p]
                    deleted.extend(gone)
                else:
                    raise HubError(400, f"Unsupported commit operation {key!r}")
            commit = Commit(hub._new_oid(), header.get("summary") or "", header.get("description") or "", [head],
                            _now(), files, added, deleted, target)
            repo.commits[commit.oid] = commit
            repo.order.append(commit.oid)
            repo.branches[target] = commit.oid
        base = hub.url_of(repo)
        self._json({"success": True, "commitOid": commit.oid, "commitUrl": f"{base}/commit/{commit.oid}",
                    "hookOutput": "", "pullRequestUrl": f"{base}/discussions/{repo.num_prs}" if create_pr else None})

    def _validate_yaml(self) -> None:
        body = self._json_body()
        content = body.get("content", "")
        try:
            _front_matter(StoredFile("README.md", content.encode(), False), strict=True)
        except Exception as exc:
            raise HubError(400, f"Invalid YAML metadata: {exc}", headers={}) from None
        self._json({"errors": [], "warnings": []})

    # -------------------------------------------------------------- download
    def _resolve(self, method: str, repo: Repo, revision: str, path: str) -> None:
        commit = self._commit_for(repo, revision)
        stored = commit.files.get(path)
        if stored is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{stored.etag}"', "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream",
                   "Content-Disposition": f'inline; filename="{quote(path.rsplit("/", 1)[-1])}"'}
        if stored.lfs:
            headers.update({"X-Linked-Etag": f'"{stored.sha256}"', "X-Linked-Size": stored.size})
        data, status = stored.content, 200
        rng = self.headers.get("Range")
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip()) if rng else None
        if m and (m.group(1) or m.group(2)):
            size = len(data)
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            else:
                start, end = max(size - int(m.group(2)), 0), size - 1
            if start >= size:
                raise HubError(416, "Requested range not satisfiable", headers={"Content-Range": f"bytes */{size}"})
            data, status = data[start:end + 1], 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        self._send(status, data, headers, head=method == "HEAD")


def _json_or_none(stored: StoredFile | None):
    if stored is None:
        return None
    try:
        return json.loads(stored.content)
    except ValueError:
        return None


def _front_matter(stored: StoredFile | None, strict: bool = False) -> dict:
    """YAML front matter of a README (empty dict when absent; `strict` raises on invalid YAML)."""
    if stored is None:
        return {}
    text = stored.content.decode("utf-8", errors="replace")
    m = re.match(r"^\s*---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(\r?\n|$)", text, re.S)
    if not m:
        return {}
    try:
        import yaml
    except ImportError:  # pragma: no cover
        return {}
    try:
        data = yaml.safe_load(m.group(1))
    except yaml.YAMLError:
        if strict:
            raise
        return {}
    if data is not None and not isinstance(data, dict):
        if strict:
            raise ValueError("metadata block must be a mapping")
        return {}
    return data or {}


# ---------------------------------------------------------------------- context manager / fixture
@contextlib.contextmanager
def hub_server(**kwargs) -> Iterator[HubServer]:
    """Run a `HubServer` for the duration of the block (kwargs go to `HubServer`)."""
    server = HubServer(**kwargs).start()
    try:
        yield server
    finally:
        server.stop()


if pytest is not None:
    @pytest.fixture
    def hub_server_fixture() -> Iterator[HubServer]:
        """A fresh, empty `HubServer` per test."""
        with hub_server() as server:
            yield server


# ---------------------------------------------------------------------- client helpers
_DROP_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
             "HF_HUB_ENABLE_HF_TRANSFER", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE",
             "HF_DATASETS_CACHE", "HF_XET_CACHE", "HF_TOKEN_PATH", "HF_ENDPOINT", "HF_HOME")


def client_env(endpoint: str, hf_home: str | os.PathLike, env_extra: dict | None = None) -> dict[str, str]:
    """Environment for a `huggingface_hub` client process talking to `endpoint` with a private cache."""
    env = {k: v for k, v in os.environ.items() if k not in _DROP_ENV}
    hf_home = os.fspath(hf_home)
    no_proxy = ",".join(filter(None, [env.get("NO_PROXY", ""), "127.0.0.1,localhost"]))
    env.update({
        "HF_ENDPOINT": endpoint, "HF_HUB_DISABLE_XET": "1", "HF_HOME": hf_home,
        "HF_HUB_CACHE": os.path.join(hf_home, "hub"), "HF_XET_CACHE": os.path.join(hf_home, "xet"),
        "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "DISABLE_TELEMETRY": "1",
        "HF_HUB_ETAG_TIMEOUT": "30", "NO_PROXY": no_proxy, "no_proxy": no_proxy, "PYTHONUNBUFFERED": "1",
        "TOKENIZERS_PARALLELISM": "false",
    })
    env.update({k: str(v) for k, v in (env_extra or {}).items()})
    return env


def run_client(script: str, endpoint: str, env_extra: dict | None = None, timeout: float = 120, *,
               hf_home: str | os.PathLike | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run `script` (dedented) in a fresh Python process configured by `client_env`.

    `hf_home` defaults to a throw-away temporary folder. With `check`, a non-zero exit raises
    `AssertionError` carrying stdout/stderr.
    """
    tmp = None
    if hf_home is None:
        tmp = hf_home = tempfile.mkdtemp(prefix="hf-home-")
    try:
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                              env=client_env(endpoint, hf_home, env_extra), timeout=timeout)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"client script failed (rc={proc.returncode})\n--- stdout\n{proc.stdout}\n"
                             f"--- stderr\n{proc.stderr}")
    return proc


def run_client_json(script: str, endpoint: str, env_extra: dict | None = None, timeout: float = 120, **kwargs):
    """`run_client`, then parse the last stdout line as JSON (print `json.dumps(result)` last)."""
    proc = run_client(script, endpoint, env_extra, timeout, **kwargs)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if not lines:
        raise AssertionError(f"client printed nothing\n--- stderr\n{proc.stderr}")
    return json.loads(lines[-1])


@contextlib.contextmanager
def inprocess_client(server: HubServer, cache_dir: str | os.PathLike) -> Iterator[None]:
    """Point the already-imported `huggingface_hub` (and transformers' shared HfApi) at `server`.

    Patches `constants.ENDPOINT`, `HUGGINGFACE_CO_URL_TEMPLATE`, `HF_HUB_DISABLE_XET`, `HF_HUB_OFFLINE`,
    `HF_HUB_CACHE` and restores them afterwards. Objects created before entering keep their old endpoint.
    """
    from huggingface_hub import constants

    names = ("ENDPOINT", "HUGGINGFACE_CO_URL_TEMPLATE", "HF_HUB_DISABLE_XET", "HF_HUB_OFFLINE", "HF_HUB_CACHE")
    saved = {n: getattr(constants, n) for n in names}
    saved_env = {k: os.environ.get(k) for k in ("HF_ENDPOINT", "HF_HUB_DISABLE_XET", "HF_HUB_OFFLINE")}
    tf_hub = sys.modules.get("transformers.utils.hub")
    saved_api = getattr(tf_hub, "_hf_api", None) if tf_hub else None
    try:
        constants.ENDPOINT = server.endpoint
        constants.HUGGINGFACE_CO_URL_TEMPLATE = server.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
        constants.HF_HUB_DISABLE_XET = True
        constants.HF_HUB_OFFLINE = False
        constants.HF_HUB_CACHE = os.fspath(cache_dir)
        os.environ.update(HF_ENDPOINT=server.endpoint, HF_HUB_DISABLE_XET="1")
        os.environ.pop("HF_HUB_OFFLINE", None)
        if tf_hub is not None and hasattr(tf_hub, "_hf_api"):
            tf_hub._hf_api = None
        yield
    finally:
        for n, v in saved.items():
            setattr(constants, n, v)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if tf_hub is not None and hasattr(tf_hub, "_hf_api"):
            tf_hub._hf_api = saved_api
