"""A local stand-in for the Hugging Face Hub, enough for ``huggingface_hub`` / ``datasets`` push and load.

Stdlib only (``http.server`` in a thread on 127.0.0.1, a free port). It answers what ``create_repo``,
``upload_file``, ``DatasetDict.push_to_hub`` and ``load_dataset`` call: repo info, preupload, the LFS batch API with
basic PUT transfers and verify, NDJSON commits, tree listing, paths-info and ``resolve`` (HEAD, GET, byte ranges).
Commits are kept, so a file can be resolved at any commit sha.

Branches other than main can be created and committed to (``create_branch``, ``upload_folder(revision=...)``).

The client must be configured *before* ``huggingface_hub`` is imported: ``HF_ENDPOINT=<hub.endpoint>`` and
``HF_HUB_DISABLE_XET=1`` (the Xet protocol is not implemented), so run it in a subprocess with :meth:`FakeHub.env`.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".parquet", ".arrow", ".bin", ".safetensors", ".pt", ".zip", ".npy")
LFS_MIN_SIZE = 10 * 1024 * 1024
_PREFIX = {"datasets": "datasets/", "spaces": "spaces/", "models": ""}


@dataclass
class _File:
    content: bytes
    lfs: bool

    @property
    def blob_id(self) -> str:  # git's blob hash, as the Hub reports for regular files
        return hashlib.sha1(b"blob %d\0" % len(self.content) + self.content).hexdigest()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.blob_id


@dataclass
class _Repo:
    repo_id: str
    kind: str  # "datasets", "models", "spaces"
    private: bool
    commits: dict[str, dict[str, _File]] = field(default_factory=dict)
    head: str = ""
    branches: dict[str, str] = field(default_factory=dict)  # other than main: name -> commit sha

    def sha(self, revision: str) -> str:
        """The commit a revision names: main, another branch, or a commit sha."""
        return self.head if revision == "main" else self.branches.get(revision, revision)

    def snapshot(self, revision: str) -> dict[str, _File] | None:
        return self.commits.get(self.sha(revision))


class _HubError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class FakeHub:
    """``with FakeHub() as hub: subprocess.run(..., env=hub.env())``; ``hub.requests`` logs every call."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], _Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        self._counter = itertools.count()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for a client process: this endpoint, no Xet, a dummy token, online mode."""
        env = dict(base or {})
        for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
            env.pop(key, None)
        env.update(HF_ENDPOINT=self.endpoint, HF_HUB_DISABLE_XET="1", HF_TOKEN="hf_fake_token_for_tests")
        env.update(HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
        return env

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def files(self, kind: str, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """Content of a repo at ``revision``, for assertions."""
        return {path: f.content for path, f in self.repos[(kind, repo_id)].snapshot(revision).items()}

    # ---------------------------------------------------------------------------------------------------------------
    # Repository state

    def _new_sha(self) -> str:
        return hashlib.sha1(f"commit-{next(self._counter)}".encode()).hexdigest()

    def _repo(self, kind: str, repo_id: str) -> _Repo:
        repo = self.repos.get((kind, repo_id))
        if repo is None:
            raise _HubError(404, "RepoNotFound", f"Repository {kind}/{repo_id} not found")
        return repo

    def _snapshot(self, repo: _Repo, revision: str) -> dict[str, _File]:
        files = repo.snapshot(unquote(revision))
        if files is None:
            raise _HubError(404, "RevisionNotFound", f"Revision {revision} not found in {repo.repo_id}")
        return files

    def create_repo(self, body: dict) -> tuple[int, dict]:
        kind = (body.get("type") or "model") + "s"
        repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
        url = f"{self.endpoint}/{_PREFIX[kind]}{repo_id}"
        with self._lock:
            if (kind, repo_id) in self.repos:
                return 409, {"error": "You already created this repo", "url": url}
            repo = _Repo(repo_id, kind, bool(body.get("private")) or body.get("visibility") == "private")
            repo.head = self._new_sha()
            repo.commits[repo.head] = {
                ".gitattributes": _File(b"*.parquet filter=lfs diff=lfs merge=lfs -text\n", False)
            }
            self.repos[(kind, repo_id)] = repo
        return 200, {"url": url, "name": repo_id}

    def create_branch(self, repo: _Repo, branch: str, body: dict) -> dict:
        with self._lock:
            if branch == "main" or branch in repo.branches:
                raise _HubError(409, "Conflict", f"Reference refs/heads/{branch} already exists")
            start = body.get("startingPoint") or "main"
            if repo.snapshot(start) is None:
                raise _HubError(404, "RevisionNotFound", f"Revision {start} not found in {repo.repo_id}")
            repo.branches[branch] = repo.sha(start)
        return {}

    def commit(self, repo: _Repo, revision: str, lines: list[dict]) -> dict:
        with self._lock:
            branch = unquote(revision)
            if branch != "main" and branch not in repo.branches:
                raise _HubError(400, "BadRequest", f"the fake hub commits to branches only; {branch} is none")
            files = dict(repo.commits[repo.sha(branch)])
            for line in lines:
                key, value = line["key"], line["value"]
                if key == "header":
                    parent = value.get("parentCommit")
                    if parent and parent != repo.head:
                        raise _HubError(412, "PreconditionFailed", f"parent commit {parent} is not the head")
                elif key == "file":
                    files[value["path"]] = _File(base64.b64decode(value["content"]), False)
                elif key == "lfsFile":
                    if value["oid"] not in self.lfs:
                        raise _HubError(400, "BadRequest", f"LFS object {value['oid']} was never uploaded")
                    files[value["path"]] = _File(self.lfs[value["oid"]], True)
                elif key == "deletedFile":
                    files.pop(value["path"], None)
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {path: f for path, f in files.items() if not path.startswith(prefix)}
                else:
                    raise _HubError(400, "BadRequest", f"unsupported commit operation {key}")
            sha = self._new_sha()
            repo.commits[sha] = files
            if branch == "main":
                repo.head = sha
            else:
                repo.branches[branch] = sha
        url = f"{self.endpoint}/{_PREFIX[repo.kind]}{repo.repo_id}/commit/{sha}"
        return {"commitUrl": url, "commitOid": sha, "pullRequestUrl": None, "success": True}

    def repo_info(self, repo: _Repo, revision: str) -> dict:
        files = self._snapshot(repo, revision)
        sha = repo.sha(unquote(revision))
        return {
            "id": repo.repo_id,
            "_id": repo.repo_id,
            "sha": sha,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "lastModified": "2025-01-01T00:00:00.000Z",
            "createdAt": "2025-01-01T00:00:00.000Z",
            "siblings": [{"rfilename": path} for path in sorted(files)],
        }

    @staticmethod
    def entries(files: dict[str, _File], path: str, recursive: bool) -> list[dict]:
        """Tree entries below ``path`` (one level, or all with ``recursive``), folders included."""
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        out: dict[str, dict] = {}
        for name, f in sorted(files.items()):
            if not name.startswith(prefix):
                continue
            parts = name[len(prefix) :].split("/")
            for depth in range(1, len(parts)):
                folder = prefix + "/".join(parts[:depth])
                if recursive or depth == 1:
                    out.setdefault(folder, {"type": "directory", "oid": hashlib.sha1(folder.encode()).hexdigest()})
            if recursive or len(parts) == 1:
                out[name] = _file_entry(f)
        return [{**entry, "path": name} for name, entry in out.items()]

    @staticmethod
    def path_info(files: dict[str, _File], path: str) -> dict | None:
        path = path.strip("/")
        if path in files:
            return {**_file_entry(files[path]), "path": path}
        if any(name.startswith(path + "/") for name in files):
            return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "path": path}
        return None


def _file_entry(f: _File) -> dict:
    entry = {"type": "file", "oid": f.blob_id, "size": len(f.content)}
    if f.lfs:
        entry["lfs"] = {"oid": f.sha256, "size": len(f.content), "pointerSize": 134}
    return entry


_REPO = r"(?P<kind>datasets|models|spaces)/(?P<repo>[^/]+/[^/]+|[^/]+)"
_ROUTES = [
    ("POST", re.compile(r"^/api/repos/create$"), "create"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate_yaml"),
    ("GET", re.compile(rf"^/api/{_REPO}(?:/revision/(?P<rev>[^/]+))?$"), "info"),
    ("POST", re.compile(rf"^/api/{_REPO}/preupload/(?P<rev>[^/]+)$"), "preupload"),
    ("POST", re.compile(rf"^/api/{_REPO}/commit/(?P<rev>[^/]+)$"), "commit"),
    ("POST", re.compile(rf"^/api/{_REPO}/branch/(?P<branch>[^/]+)$"), "branch"),
    ("GET", re.compile(rf"^/api/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$"), "tree"),
    ("POST", re.compile(rf"^/api/{_REPO}/paths-info/(?P<rev>[^/]+)$"), "paths_info"),
    (
        "POST",
        re.compile(r"^/(?:(?P<kind>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch$"),
        "batch",
    ),
    ("PUT", re.compile(r"^/_lfs/(?P<oid>[0-9a-f]{64})$"), "lfs_put"),
    ("POST", re.compile(r"^/_lfs/(?P<oid>[0-9a-f]{64})/verify$"), "lfs_verify"),
    (
        "GET",
        re.compile(r"^/(?:(?P<kind>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"),
        "resolve",
    ),
]


def _make_handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_HEAD(self) -> None:
            self._dispatch("HEAD")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def do_PUT(self) -> None:
            self._dispatch("PUT")

        # -----------------------------------------------------------------------------------------------------------

        def _dispatch(self, method: str) -> None:
            url = urlsplit(self.path)
            self.query = parse_qs(url.query)
            self.body = self._read_body()
            status = 404
            try:
                for route_method, pattern, name in _ROUTES:
                    match = pattern.match(url.path)
                    if match and (route_method == method or (route_method == "GET" and method == "HEAD")):
                        groups = {k: v for k, v in match.groupdict().items()}
                        if groups.get("kind") is None and "repo" in groups:
                            groups["kind"] = "models"
                        status = getattr(self, f"_{name}")(method, **groups)
                        return
                raise _HubError(404, "EntryNotFound", f"no route for {method} {url.path}")
            except _HubError as err:
                status = err.status
                self._json(
                    err.status, {"error": err.message}, {"X-Error-Code": err.code, "X-Error-Message": err.message}
                )
            finally:
                hub.requests.append((method, self.path, status))

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _json(self, status: int, payload, headers: dict[str, str] | None = None) -> int:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            return status

        # -- routes ----------------------------------------------------------------------------------------------------

        def _create(self, method: str) -> int:
            status, payload = hub.create_repo(json.loads(self.body))
            return self._json(status, payload)

        def _branch(self, method: str, kind: str, repo: str, branch: str) -> int:
            body = json.loads(self.body) if self.body else {}
            return self._json(200, hub.create_branch(hub._repo(kind, repo), unquote(branch), body))

        def _validate_yaml(self, method: str) -> int:
            content = json.loads(self.body)["content"]
            if content.startswith("---") and "\n---" not in content[3:]:
                return self._json(400, {"error": "README.md metadata block is not closed by '---'"})
            return self._json(200, {"warnings": []})

        def _info(self, method: str, kind: str, repo: str, rev: str | None = None) -> int:
            return self._json(200, hub.repo_info(hub._repo(kind, repo), rev or "main"))

        def _preupload(self, method: str, kind: str, repo: str, rev: str) -> int:
            files = hub._snapshot(hub._repo(kind, repo), rev)
            answer = []
            for item in json.loads(self.body)["files"]:
                path, size = item["path"], item["size"]
                lfs = path.endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE
                existing = files.get(path)
                oid = (existing.sha256 if existing.lfs else existing.blob_id) if existing else None
                answer.append(
                    {"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid}
                )
            return self._json(200, {"files": answer, "commitOid": hub._repo(kind, repo).head})

        def _commit(self, method: str, kind: str, repo: str, rev: str) -> int:
            lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
            return self._json(200, hub.commit(hub._repo(kind, repo), rev, lines))

        def _tree(self, method: str, kind: str, repo: str, rev: str, path: str | None = None) -> int:
            files = hub._snapshot(hub._repo(kind, repo), rev)
            path = unquote(path or "")
            if path and hub.path_info(files, path) is None:
                raise _HubError(404, "EntryNotFound", f"{path} does not exist at {rev}")
            recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
            return self._json(200, hub.entries(files, path, recursive))

        def _paths_info(self, method: str, kind: str, repo: str, rev: str) -> int:
            files = hub._snapshot(hub._repo(kind, repo), rev)
            form = parse_qs(self.body.decode())
            infos = [hub.path_info(files, path) for path in form.get("paths", [])]
            return self._json(200, [info for info in infos if info is not None])

        def _batch(self, method: str, kind: str, repo: str) -> int:
            hub._repo(kind, repo)
            objects = []
            for item in json.loads(self.body)["objects"]:
                obj = {"oid": item["oid"], "size": item["size"]}
                if item["oid"] not in hub.lfs:
                    href = f"{hub.endpoint}/_lfs/{item['oid']}"
                    obj["actions"] = {"upload": {"href": href}, "verify": {"href": href + "/verify"}}
                objects.append(obj)
            return self._json(200, {"transfer": "basic", "objects": objects})

        def _lfs_put(self, method: str, oid: str) -> int:
            if hashlib.sha256(self.body).hexdigest() != oid:
                raise _HubError(400, "BadRequest", f"uploaded content does not hash to {oid}")
            hub.lfs[oid] = self.body
            return self._json(200, {})

        def _lfs_verify(self, method: str, oid: str) -> int:
            if oid not in hub.lfs:
                raise _HubError(404, "EntryNotFound", f"LFS object {oid} not uploaded")
            return self._json(200, {"success": True})

        def _resolve(self, method: str, kind: str, repo: str, rev: str, path: str) -> int:
            the_repo = hub._repo(kind, repo)
            files = hub._snapshot(the_repo, rev)
            f = files.get(unquote(path))
            if f is None:
                raise _HubError(404, "EntryNotFound", f"{path} does not exist at {rev}")
            data, status = f.content, 200
            byte_range = re.match(r"bytes=(\d*)-(\d*)$", self.headers.get("Range", ""))
            if byte_range:
                start = int(byte_range.group(1) or 0)
                end = int(byte_range.group(2)) if byte_range.group(2) else len(data) - 1
                if start >= len(data):
                    raise _HubError(416, "RangeNotSatisfiable", f"range starts at {start}, size {len(data)}")
                data, status = data[start : end + 1], 206
            commit = the_repo.sha(unquote(rev))
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", f'"{f.etag}"')
            self.send_header("X-Repo-Commit", commit)
            if f.lfs:
                self.send_header("X-Linked-Etag", f'"{f.sha256}"')
                self.send_header("X-Linked-Size", str(len(f.content)))
            if byte_range:
                self.send_header("Content-Range", f"bytes {start}-{start + len(data) - 1}/{len(f.content)}")
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(data)
            return status

    return Handler
