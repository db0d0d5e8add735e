"""rollbot's image as the tests build it: the Dockerfile FROM a Debian made with debootstrap.

Docker Hub is out of reach on this machine, so the official python image cannot be pulled. The
base is Debian bookworm (minbase, python3, python3-venv) from the Debian mirror apt already uses,
turned into an image with ``docker import`` and passed as ``--build-arg BASE``. It is built once
per Docker engine and kept (a few minutes the first time); the rollbot image is built per session.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE_IMAGE = "rollbot-test-base:bookworm-python3"
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Two pytest processes (two checkouts) must not debootstrap the same base at once.
BASE_LOCK = Path(tempfile.gettempdir()) / "rollbot-test-base-image.lock"
APT_SOURCES = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
# The machine's own extra CAs (a TLS-inspecting egress proxy, say): the base trusts what the
# machine trusts, so that pip inside `docker build` reaches PyPI the way the host's pip does.
LOCAL_CAS = Path("/usr/local/share/ca-certificates")


class ImageError(RuntimeError):
    pass


def docker(*args: str, timeout: float = 300, stdin: int | None = None,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    """The docker CLI; a failure says which command and what docker printed."""
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}  # the engine here has no buildx: classic builder
    out = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                         stdin=stdin, env=env)
    if check and out.returncode != 0:
        raise ImageError(f"`docker {' '.join(args)}` failed with status {out.returncode}:\n"
                         f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


def debian_mirror(sources: Iterable[Path]) -> str:
    """The URI apt uses for Debian bookworm itself (not -security, not third-party repositories)."""
    for path in sources:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        # deb822 stanzas (*.sources): URIs and Suites fields of one paragraph.
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(.+)$", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and SUITE in suites.group(1).split():
                return uris.group(1).split()[0]
        # One-line format: deb [options] URI SUITE COMPONENTS…
        for line in text.splitlines():
            m = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line)
            if m and m.group(2) == SUITE:
                return m.group(1)
    return DEFAULT_MIRROR


def image_exists(tag: str) -> bool:
    return docker("image", "inspect", tag, check=False, timeout=60).returncode == 0


def ensure_base_image() -> str:
    """The local Debian base image, made once (debootstrap, then docker import)."""
    with BASE_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if image_exists(BASE_IMAGE):
            return BASE_IMAGE
        rootfs = Path(tempfile.mkdtemp(prefix="rollbot-base-"))
        rootfs.chmod(0o755)  # it becomes the image's /: mkdtemp's 0700 would lock every user out
        try:
            _debootstrap(rootfs)
            with subprocess.Popen(["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."],
                                  stdout=subprocess.PIPE) as tar:
                assert tar.stdout is not None
                docker("import", "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:"
                       "/usr/sbin:/usr/bin:/sbin:/bin", "--change", 'CMD ["/bin/bash"]',
                       "-", BASE_IMAGE, stdin=tar.stdout.fileno(), timeout=600)
            if tar.returncode != 0:
                raise ImageError(f"tar of the debootstrapped {rootfs} failed")
        finally:
            shutil.rmtree(rootfs, ignore_errors=True)
        return BASE_IMAGE


def _debootstrap(rootfs: Path) -> None:
    mirror = debian_mirror(APT_SOURCES)
    out = subprocess.run(
        ["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
         SUITE, str(rootfs), mirror], capture_output=True, text=True, timeout=1200)
    if out.returncode != 0:
        raise ImageError(f"debootstrap {SUITE} from {mirror} failed (status {out.returncode}):\n"
                         f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    cas = sorted(LOCAL_CAS.glob("*.crt")) if LOCAL_CAS.is_dir() else []
    if cas:
        target = rootfs / LOCAL_CAS.relative_to("/")
        target.mkdir(parents=True, exist_ok=True)
        for ca in cas:
            shutil.copy(ca, target / ca.name)
        subprocess.run(["chroot", str(rootfs), "update-ca-certificates"], capture_output=True,
                       text=True, timeout=120, check=True)
    # The apt lists and caches debootstrap left: half of minbase's size, useless in an image.
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in (rootfs / cache).glob("*"):
            if entry.is_file():
                entry.unlink()


def build_image(tag: str, *, base: str) -> str:
    """``docker build`` of the repository's Dockerfile, as a user would, FROM ``base``."""
    docker("build", "--network", "host", "--force-rm", "--build-arg", f"BASE={base}",
           "-t", tag, str(ROOT), timeout=1200)
    return tag
