"""The packages the default corpus is made from: Debian packages fetched with ``apt-get download``
and unpacked with ``dpkg -x`` into a cache, once. Nothing is installed on the system."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from ..weights import download_allowed

UNPACKED_MARKER = ".earmark-unpacked"  # holds the package version; written last


class PackageError(RuntimeError):
    """A package that could not be downloaded or unpacked."""


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    root: Path  # the unpacked file tree (usr/share/...)

    @property
    def copyright_file(self) -> Path:
        return self.root / "usr" / "share" / "doc" / self.name / "copyright"


def default_cache() -> Path:
    return Path(platformdirs.user_cache_dir("earmark")) / "corpus"


def _run(command: list[str], cwd: Path) -> str:
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False, timeout=1800)
    except FileNotFoundError:
        raise PackageError(f"{command[0]} was not found: the corpus is built from Debian packages, "
                           "which needs apt-get and dpkg (Debian or Ubuntu)") from None
    if done.returncode != 0:
        raise PackageError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout


def fetch_debian(name: str, cache: Path | None = None, download: bool | None = None) -> Package:
    """Download and unpack one Debian package into ``cache/debian/NAME`` (idempotent). ``download``:
    None means allowed unless ``EARMARK_OFFLINE`` is set; then only the cache is used."""
    cache = cache or default_cache()
    root = cache / "debian" / name
    marker = root / UNPACKED_MARKER
    if marker.is_file():
        return Package(name, marker.read_text().strip(), root)
    downloads = cache / "debs"
    downloads.mkdir(parents=True, exist_ok=True)
    debs = sorted(downloads.glob(f"{name}_*.deb"))
    if not debs and not download_allowed(download):
        raise PackageError(f"the Debian package {name} is not in the cache {cache} and downloads are off "
                           "(EARMARK_OFFLINE); fetch it first, e.g. `earmark data fetch --slice small`")
    if not debs:
        # root has no _apt user to drop privileges to in some containers
        _run(["apt-get", "download", "-o", "APT::Sandbox::User=root", name], downloads)
        debs = sorted(downloads.glob(f"{name}_*.deb"))
    if not debs:
        raise PackageError(f"apt-get download {name} wrote no {name}_*.deb in {downloads}")
    deb = debs[-1]
    version = _run(["dpkg-deb", "-f", str(deb), "Version"], downloads).strip()
    root.parent.mkdir(parents=True, exist_ok=True)
    unpack = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root.parent))
    try:
        _run(["dpkg", "-x", str(deb), str(unpack)], downloads)
        (unpack / UNPACKED_MARKER).write_text(version + "\n")
        if root.exists():
            shutil.rmtree(root)
        unpack.rename(root)
    finally:
        if unpack.exists():
            shutil.rmtree(unpack, ignore_errors=True)
    return Package(name, version, root)
