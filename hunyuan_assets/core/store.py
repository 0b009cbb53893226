"""Where meshes, previews and the prediction log live: a local folder or an S3 prefix.

Both stores speak the same '/'-separated relative keys, so assets and the prediction log
run the same code path locally and in production. No Dagster here: the S3 store takes a
plain boto3 client, which in production comes from dagster-aws's ``S3Resource.get_client()``.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import mimetypes
import os
import re
import shutil
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

import pyarrow.fs as pafs

__all__ = [
    "InvalidKeyError",
    "LocalMeshStore",
    "MeshStore",
    "S3MeshStore",
    "mesh_key",
    "model_slug",
    "open_mesh_store",
    "preview_key",
]

logger = logging.getLogger("hunyuan_assets.core.store")

# In-flight temp files of LocalMeshStore: dot-prefixed so pyarrow/pandas dataset readers skip
# them, and recognisable so list_keys never reports them (a crashed writer can leave one).
_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# link(2) refusals that mean "this filesystem has no hard links", not "the key exists".
_NO_HARDLINK_ERRNOS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS})
_CONTENT_TYPES = {".glb": "model/gltf-binary", ".parquet": "application/vnd.apache.parquet"}
# Real S3 answers 409 ConditionalRequestConflict while another conditional write to the same
# key is in flight; AWS says retry, because only 412 proves the key exists.
_CONFLICT_RETRY_DELAYS = (0.05, 0.1, 0.2, 0.4)
S3_DELETE_BATCH = 1000  # the most keys one DeleteObjects request takes


class InvalidKeyError(ValueError):
    """A key that is absolute, escapes the store ('..') or is not a plain relative key."""


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not key:
        raise InvalidKeyError(f"store key must be a non-empty string, got {key!r}")
    if key.startswith("/") or "\\" in key or "\x00" in key:
        raise InvalidKeyError(f"store key must be a relative '/'-separated key, got {key!r}")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidKeyError(f"store key has an empty, '.' or '..' segment: {key!r}")
    if _TEMP_NAME.match(parts[-1]):
        raise InvalidKeyError(f"store key looks like a store temp file: {key!r}")
    return key


def _check_prefix(prefix: str) -> str:
    """A prefix is '' or a key, optionally ending in '/'; returned without the trailing '/'."""
    stripped = prefix[:-1] if prefix.endswith("/") else prefix
    return _check_key(stripped) if stripped else ""


def _content_type(key: str) -> str:
    suffix = os.path.splitext(key)[1].lower()
    return _CONTENT_TYPES.get(suffix) or mimetypes.guess_type(key)[0] or "application/octet-stream"


class MeshStore(ABC):
    """A flat key -> bytes store with atomic writes; keys are relative and '/'-separated."""

    @property
    @abstractmethod
    def root_uri(self) -> str:
        """``file:///abs/root`` or ``s3://bucket/prefix``."""

    @abstractmethod
    def uri_for(self, key: str) -> str:
        """The URI a person (or the asset metadata) can use to find ``key``."""

    @abstractmethod
    def put_file(self, key: str, src: Path) -> str:
        """Copy ``src`` to ``key``; readers see the old object or the whole new one."""

    def move_file(self, key: str, src: Path) -> str:
        """Publish ``src`` as ``key`` like `put_file`, and remove ``src``: a file the caller
        made only to store it (a download). Stores that can rename instead of copying do."""
        uri = self.put_file(key, src)
        Path(src).unlink(missing_ok=True)
        return uri

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> str:
        """Write ``data`` to ``key`` atomically, replacing any existing object. Returns the URI."""

    @abstractmethod
    def create_exclusive(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if absent, atomically, with its full content; False if it existed."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes | None:
        """The object's bytes, or None when it does not exist."""

    @abstractmethod
    def download_to(self, key: str, dest: Path) -> bool:
        """Copy ``key`` to the local path ``dest`` atomically; False when the key is missing."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list_keys(self, prefix: str = "") -> list[str]:
        """Sorted keys starting with ``prefix`` (a plain string prefix, as in S3)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error (recovery repeats deletes)."""

    def delete_many(self, keys: Sequence[str]) -> None:
        """Remove every key like `delete`; stores with a batch delete use it."""
        for key in keys:
            self.delete(key)

    @abstractmethod
    def arrow_location(self, prefix: str = "") -> tuple[pafs.FileSystem, str]:
        """A pyarrow filesystem and path for ``prefix``, for parquet/dataset readers."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.root_uri!r})"


class LocalMeshStore(MeshStore):
    """A folder. Writes go to a dot-prefixed temp file in the target directory, are fsynced and
    then renamed, so no reader ever sees a half-written file under its final name."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(os.path.abspath(os.path.expanduser(os.fspath(root))))

    @property
    def root_uri(self) -> str:
        return self.root.as_uri()

    def path_for(self, key: str) -> Path:
        return self.root.joinpath(*_check_key(key).split("/"))

    def uri_for(self, key: str) -> str:
        return self.path_for(key).as_uri()

    def _temp_beside(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")

    def _write_temp(self, path: Path, data: bytes | None = None, src: Path | None = None) -> Path:
        """Write the full content to a temp file beside ``path`` and fsync it."""
        tmp = self._temp_beside(path)
        try:
            with open(tmp, "xb") as out:
                if src is not None:
                    with open(src, "rb") as inp:
                        shutil.copyfileobj(inp, out, 1024 * 1024)
                else:
                    out.write(data or b"")
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    @staticmethod
    def _fsync_dir(directory: Path) -> None:
        # Makes the rename itself durable; some filesystems refuse directory fsync.
        try:
            fd = os.open(directory, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    def _publish(self, path: Path, data: bytes | None = None, src: Path | None = None) -> str:
        tmp = self._write_temp(path, data, src)
        try:
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._fsync_dir(path.parent)
        return path.as_uri()

    def put_file(self, key: str, src: Path) -> str:
        return self._publish(self.path_for(key), src=Path(src))

    def put_bytes(self, key: str, data: bytes) -> str:
        return self._publish(self.path_for(key), data=bytes(data))

    def move_file(self, key: str, src: Path) -> str:
        """A rename when ``src`` is on the store's filesystem: a mesh of several MB is then
        written once, not twice (the copy was ~4 CPU-s of kernel time per 384 realistic
        meshes, bench_vs_sdk.py). Otherwise (another filesystem) a copy, as `put_file`."""
        src, path = Path(src), self.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(src, "rb") as fh:  # durable before it is published (a no-op if it was)
            os.fsync(fh.fileno())
        try:
            os.replace(src, path)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            return super().move_file(key, src)  # copy, then remove the source
        self._fsync_dir(path.parent)
        return path.as_uri()

    def create_exclusive(self, key: str, data: bytes) -> bool:
        path = self.path_for(key)
        tmp = self._write_temp(path, bytes(data))
        try:
            # link(2) fails with EEXIST like O_CREAT|O_EXCL, but publishes a fully written file.
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in _NO_HARDLINK_ERRNOS:
                raise
            # Filesystems without hard links (some FUSE/SMB mounts): still exclusive, but a
            # reader may briefly see a partial file under the final name.
            logger.debug("hard links unsupported under %s (%s); using O_EXCL", path.parent, exc)
            return self._create_exclusive_direct(path, bytes(data))
        finally:
            tmp.unlink(missing_ok=True)
        self._fsync_dir(path.parent)
        return True

    def _create_exclusive_direct(self, path: Path, data: bytes) -> bool:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        return True

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return self.path_for(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def download_to(self, key: str, dest: Path) -> bool:
        src = self.path_for(key)
        if not src.is_file():
            return False
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(f"{dest.name}.{uuid.uuid4().hex}.part")
        try:
            shutil.copyfile(src, part)
            os.replace(part, dest)
        except FileNotFoundError:
            part.unlink(missing_ok=True)
            return False  # deleted between the check and the copy
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        return True

    def exists(self, key: str) -> bool:
        return self.path_for(key).is_file()

    def list_keys(self, prefix: str = "") -> list[str]:
        clean = _check_prefix(prefix)
        # Walk only the deepest directory the prefix fully names, then filter by string prefix.
        base_key = clean if prefix.endswith("/") else clean.rpartition("/")[0]
        base = self.root.joinpath(*base_key.split("/")) if base_key else self.root
        keys: list[str] = []
        for dirpath, _dirnames, filenames in os.walk(base):
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if _TEMP_NAME.match(name):
                    continue
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        try:
            self.path_for(key).unlink()
        except (FileNotFoundError, NotADirectoryError):
            pass

    def arrow_location(self, prefix: str = "") -> tuple[pafs.FileSystem, str]:
        clean = _check_prefix(prefix)
        path = self.root.joinpath(*clean.split("/")) if clean else self.root
        return pafs.LocalFileSystem(), str(path)


def _error_code(exc: Exception) -> tuple[str, int]:
    response: dict[str, Any] = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def _is_not_found(exc: Exception) -> bool:
    code, status = _error_code(exc)
    return code in ("NoSuchKey", "404", "NotFound") or (status == 404 and code != "NoSuchBucket")


class S3MeshStore(MeshStore):
    """An S3 bucket prefix. Single PUTs and completed multipart uploads are atomic in S3, and
    ``create_exclusive`` uses a conditional write (``If-None-Match: *``)."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
    ) -> None:
        if not bucket or "/" in bucket:
            raise ValueError(f"invalid S3 bucket name: {bucket!r}")
        self.client = client
        self.bucket = bucket
        clean = prefix.strip("/")
        self.prefix = _check_key(clean) if clean else ""
        self.endpoint_url = endpoint_url
        self.region = region

    @property
    def root_uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def _full(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._full(key)}"

    def put_file(self, key: str, src: Path) -> str:
        # upload_file switches to multipart for big meshes; S3 shows the object only once complete.
        self.client.upload_file(
            os.fspath(src),
            self.bucket,
            self._full(key),
            ExtraArgs={"ContentType": _content_type(key)},
        )
        return self.uri_for(key)

    def put_bytes(self, key: str, data: bytes) -> str:
        self.client.put_object(
            Bucket=self.bucket,
            Key=self._full(key),
            Body=bytes(data),
            ContentType=_content_type(key),
        )
        return self.uri_for(key)

    def create_exclusive(self, key: str, data: bytes) -> bool:
        full = self._full(key)
        for delay in (*_CONFLICT_RETRY_DELAYS, None):
            try:
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=full,
                    Body=bytes(data),
                    ContentType=_content_type(key),
                    IfNoneMatch="*",
                )
                return True
            except Exception as exc:
                code, status = _error_code(exc)
                if code == "PreconditionFailed" or status == 412:
                    return False
                if not (code == "ConditionalRequestConflict" or status == 409):
                    raise
                if delay is None:
                    # Still contended: someone else is creating this key right now.
                    return False
                time.sleep(delay)
        return False  # unreachable; keeps type checkers content

    def get_bytes(self, key: str) -> bytes | None:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._full(key))
        except Exception as exc:
            if _is_not_found(exc):
                return None
            raise
        body = response["Body"]
        try:
            return body.read()
        finally:
            body.close()

    def download_to(self, key: str, dest: Path) -> bool:
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(f"{dest.name}.{uuid.uuid4().hex}.part")
        try:
            self.client.download_file(self.bucket, self._full(key), os.fspath(part))
            os.replace(part, dest)
        except Exception as exc:
            part.unlink(missing_ok=True)
            if _is_not_found(exc):
                return False
            raise
        return True

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._full(key))
        except Exception as exc:
            if _is_not_found(exc):
                return False
            raise
        return True

    def list_keys(self, prefix: str = "") -> list[str]:
        _check_prefix(prefix)
        root = f"{self.prefix}/" if self.prefix else ""
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=root + prefix):
            for item in page.get("Contents", ()):
                # Skip "folder" marker objects (consoles, pyarrow's create_dir): not keys.
                if not item["Key"].endswith("/"):
                    keys.append(item["Key"][len(root) :])
        return sorted(keys)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._full(key))

    def delete_many(self, keys: Sequence[str]) -> None:
        """Up to 1,000 keys a request (DeleteObjects): a compaction of ~500 log files is
        one request, not 500 round trips."""
        for start in range(0, len(keys), S3_DELETE_BATCH):
            batch = [{"Key": self._full(key)} for key in keys[start : start + S3_DELETE_BATCH]]
            answer = self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
            )
            failed = answer.get("Errors") or []
            if failed:
                first = failed[0]
                raise OSError(
                    f"S3 refused to delete {len(failed)} of {len(batch)} objects, first "
                    f"{first.get('Key')}: {first.get('Code')} {first.get('Message')}"
                )

    def arrow_location(self, prefix: str = "") -> tuple[pafs.FileSystem, str]:
        clean = _check_prefix(prefix)
        path = "/".join(p for p in (self.bucket, self.prefix, clean) if p)
        return pafs.S3FileSystem(**self._arrow_options()), path

    def _arrow_options(self) -> dict[str, Any]:
        """pyarrow S3 settings mirroring the boto3 client: endpoint, region, credentials."""
        options: dict[str, Any] = {}
        meta = getattr(self.client, "meta", None)
        endpoint = self.endpoint_url or getattr(meta, "endpoint_url", None)
        if endpoint:
            parsed = urlparse(endpoint)
            # On AWS proper let pyarrow pick the regional endpoint; elsewhere (moto, MinIO,
            # R2...) point it at the same host:port as boto3, path-style.
            if self.endpoint_url or not (parsed.hostname or "").endswith("amazonaws.com"):
                options["endpoint_override"] = parsed.netloc
                options["scheme"] = parsed.scheme or "https"
        options["region"] = self.region or getattr(meta, "region_name", None) or "us-east-1"
        credentials = None
        get_credentials = getattr(self.client, "_get_credentials", None)  # botocore: no public API
        if callable(get_credentials):
            credentials = get_credentials()
        if credentials is not None:
            frozen = credentials.get_frozen_credentials()
            options["access_key"] = frozen.access_key
            options["secret_key"] = frozen.secret_key
            if frozen.token:
                options["session_token"] = frozen.token
        elif get_credentials is not None:
            options["anonymous"] = True  # the boto3 client is unsigned too
        return options


def open_mesh_store(
    uri: str | Path, *, s3_client: Any = None, endpoint_url: str | None = None
) -> MeshStore:
    """``s3://bucket/prefix`` -> S3MeshStore (a default boto3 client if none is given);
    ``file:///abs/path`` or a folder path -> LocalMeshStore."""
    text = os.fspath(uri)
    if text.startswith("s3://"):
        parsed = urlparse(text)
        if not parsed.netloc:
            raise ValueError(f"S3 URI without a bucket: {text!r}")
        if s3_client is None:
            import boto3

            s3_client = boto3.client("s3", endpoint_url=endpoint_url)
        return S3MeshStore(
            s3_client, parsed.netloc, parsed.path.strip("/"), endpoint_url=endpoint_url
        )
    if text.startswith("file://"):
        parsed = urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"file URI with a remote host is not supported: {text!r}")
        return LocalMeshStore(Path(url2pathname(unquote(parsed.path))))
    if "://" in text:
        raise ValueError(f"unsupported mesh store URI (use s3://... or a folder): {text!r}")
    return LocalMeshStore(Path(text))


def model_slug(model: str) -> str:
    """A path-safe, readable and collision-free directory name for a model id.

    The readable part loses characters ('/' and friends), so a short hash of the exact id
    keeps two ids that read alike from sharing a directory.
    """
    if not model or not model.strip():
        raise ValueError("model must be a non-empty string")
    readable = re.sub(r"[^a-z0-9.]+", "-", model.strip().lower()).strip("-.") or "model"
    digest = hashlib.sha256(model.encode("utf-8")).hexdigest()[:8]
    return f"{readable[:80]}-{digest}"


def _mesh_dir(sha256: str, model: str, quarantined: bool) -> str:
    sha = sha256.lower()
    if not _SHA256.match(sha):
        raise ValueError(f"expected a hex SHA-256 of the source image, got {sha256!r}")
    base = f"meshes/{sha[:2]}/{sha}/{model_slug(model)}"
    return f"quarantine/{base}" if quarantined else base


def mesh_key(sha256: str, model: str, *, quarantined: bool = False) -> str:
    """Content-addressed: ``[quarantine/]meshes/<sha[:2]>/<sha>/<model slug>/mesh.glb``."""
    return f"{_mesh_dir(sha256, model, quarantined)}/mesh.glb"


def preview_key(sha256: str, model: str, *, quarantined: bool = False) -> str:
    """The PNG preview beside the mesh."""
    return f"{_mesh_dir(sha256, model, quarantined)}/preview.png"
