"""LibriSpeech: download (openslr.org resource 12) and preparation of every split present.

No network is needed when the corpus is already under ``<root>/LibriSpeech``; the preparation
is the same for the real corpus and for anything in its layout (the synthetic corpus, tests).

Downloads resume: a part's bytes go to ``<root>/<part>.tar.gz.part``, and a rerun asks the server
for the rest (HTTP ``Range``; a server that ignores it sends the whole file again, which replaces
the partial one). A complete archive is checked against openslr's published md5 (or, with
``verify_md5=False``, for a mirror or test server serving other bytes, only for being a readable
tar.gz) before it is extracted; a mismatching one is deleted, so the rerun downloads it afresh.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from .prepare import PreparedData

__all__ = ["LIBRISPEECH_PARTS", "LIBRISPEECH_MD5", "LIBRISPEECH_URL", "ArchiveError", "download_librispeech",
           "safe_extract", "prepare_librispeech"]

# The base URL; ASR_ZOO_LIBRISPEECH_URL or `asr-zoo prepare librispeech --base-url` point elsewhere.
LIBRISPEECH_URL = "https://www.openslr.org/resources/12"
LIBRISPEECH_PARTS = ["dev-clean", "dev-other", "test-clean", "test-other",
                     "train-clean-100", "train-clean-360", "train-other-500"]
# https://www.openslr.org/resources/12/md5sum.txt
LIBRISPEECH_MD5 = {
    "dev-clean": "42e2234ba48799c1f50f24a7926300a1",
    "dev-other": "c8d0bcc9cca99d4f8b62fcc847357931",
    "test-clean": "32fa31d27d2e1cad72775fee3f4849a9",
    "test-other": "fb5a50374b501bb3bac4815ee91d3135",
    "train-clean-100": "2a93770f6d5c6c964bc36631d331a522",
    "train-clean-360": "c0e676e450a7ff2f54aeade5171606fa",
    "train-other-500": "d1a0fd59409feb2c614ce4d30c387708",
}
_CHUNK = 1 << 20  # bytes per read


class ArchiveError(ValueError):
    """A downloaded archive is corrupt (checksum, truncated gzip) or unsafe to extract."""


def download_librispeech(root: Path, parts: list[str] | None = None, base_url: str | None = None,
                         verify_md5: bool = True, checksums: dict[str, str] | None = None) -> list[str]:
    """Download, check and extract ``parts`` (default: all seven) into ``<root>/LibriSpeech``.

    Finished parts (``<root>/LibriSpeech/<part>/.extracted``) are skipped; a partial download
    resumes. Returns the parts now present.

    Args:
        base_url: where ``<part>.tar.gz`` lives (default ``$ASR_ZOO_LIBRISPEECH_URL`` or openslr.org).
        verify_md5: compare with ``checksums`` (default: openslr's published md5 list).
    """
    root = Path(root)
    parts = list(parts) if parts else list(LIBRISPEECH_PARTS)
    unknown = [p for p in parts if p not in LIBRISPEECH_PARTS]
    if unknown:
        raise ValueError(f"unknown LibriSpeech part(s) {', '.join(unknown)}; valid: {', '.join(LIBRISPEECH_PARTS)}")
    base_url = (base_url or os.environ.get("ASR_ZOO_LIBRISPEECH_URL") or LIBRISPEECH_URL).rstrip("/")
    checksums = LIBRISPEECH_MD5 if checksums is None else checksums
    root.mkdir(parents=True, exist_ok=True)
    for part in parts:
        marker = root / "LibriSpeech" / part / ".extracted"
        if marker.exists():
            continue
        archive = root / f"{part}.tar.gz"
        if not archive.exists():
            _fetch(f"{base_url}/{part}.tar.gz", archive)
        try:
            _check_archive(archive, checksums.get(part) if verify_md5 else None)
            with tarfile.open(archive, "r:gz") as tar:
                safe_extract(tar, root)
        except ArchiveError:
            archive.unlink(missing_ok=True)  # the rerun downloads it again
            raise
        marker.touch()
        archive.unlink()  # the extracted tree is what is kept
    return parts


def _fetch(url: str, archive: Path) -> None:
    """Download ``url`` to ``archive`` through ``archive.part``, resuming that file if present."""
    partial = archive.with_name(archive.name + ".part")
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to send: the partial file is the whole archive
            partial.rename(archive)
            return
        raise
    with response:
        resumed = have and response.status == 206
        if have and not resumed:
            print(f"{url}: the server ignores Range requests; downloading from the start")
        length = int(response.headers.get("Content-Length", 0))
        with open(partial, "ab" if resumed else "wb") as f, \
                tqdm(total=(length + (have if resumed else 0)) or None, initial=have if resumed else 0,
                     unit="B", unit_scale=True, desc=f"download {archive.name}") as bar:
            while chunk := response.read(_CHUNK):
                f.write(chunk)
                bar.update(len(chunk))
    partial.rename(archive)


def _check_archive(archive: Path, md5: str | None) -> None:
    """Raise :class:`ArchiveError` unless ``archive`` matches ``md5`` (when given) and reads to the
    end as a gzip-compressed tar (a truncated or corrupt download fails here, not half-extracted)."""
    if md5:
        digest = hashlib.md5()  # noqa: S324  (the publisher's checksum, not a security boundary)
        with open(archive, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != md5:
            raise ArchiveError(f"{archive}: md5 {digest.hexdigest()} != published {md5} (corrupt download; "
                               "deleted, rerun to download it again)")
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for _ in tar:
                pass
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ArchiveError(f"{archive}: not a complete tar.gz ({e}); deleted, rerun to download it again") from e


def safe_extract(tar: tarfile.TarFile, dest: Path, use_filter: bool | None = None) -> None:
    """Extract ``tar`` under ``dest``, refusing members that would land outside it.

    Uses tarfile's ``data`` filter where this Python has it (3.10.12+, 3.11.4+); older versions
    get the same guarantees checked by hand: only regular files and directories, relative paths
    that stay inside ``dest`` (no absolute paths, ``..``, links or device files).
    """
    dest = Path(dest).resolve()
    if use_filter is None:
        use_filter = hasattr(tarfile, "data_filter")
    if use_filter:
        try:
            tar.extractall(dest, filter="data")
        except tarfile.FilterError as e:
            raise ArchiveError(f"{tar.name}: unsafe member refused ({e})") from e
        return
    members = tar.getmembers()
    for m in members:
        target = (dest / m.name).resolve()
        if not (m.isfile() or m.isdir()):
            raise ArchiveError(f"{tar.name}: unsafe member {m.name!r} (only files and directories are extracted)")
        if Path(m.name).is_absolute() or (target != dest and dest not in target.parents):
            raise ArchiveError(f"{tar.name}: unsafe member {m.name!r} (outside {dest})")
    for m in members:
        target = dest / m.name
        if m.isdir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with tar.extractfile(m) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out)


def prepare_librispeech(root: Path, splits: list[str] | None = None, on_bad: str = "drop") -> list[str]:
    """Build the checked manifests of every split under ``<root>/LibriSpeech`` (or ``splits``)."""
    from ..schemas import DataConfig

    corpus = Path(root) / "LibriSpeech"
    if not corpus.is_dir():
        raise FileNotFoundError(f"{corpus} does not exist: download with --download or place the corpus there")
    splits = splits or sorted(p.name for p in corpus.iterdir() if p.is_dir() and any(p.glob("*/*/*.trans.txt")))
    if not splits:
        raise FileNotFoundError(f"{corpus}: no split directories in LibriSpeech layout")
    data = PreparedData(DataConfig(root=str(root), on_bad_utterance=on_bad))
    for split in splits:
        data.manifest(split)
    return splits
