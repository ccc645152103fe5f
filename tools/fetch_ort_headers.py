"""Fetch the ONNX Runtime C/C++ API headers from Debian's `libonnxruntime-dev` package.

ORT's Python wheels ship no headers, and the custom-op library needs only the headers (it never
links libonnxruntime: ORT hands it the API table at registration). Debian trixie packages
ORT 1.21's headers as an 85 KB `libonnxruntime-dev`; the C API only ever grows, so headers of
1.21 (ORT_API_VERSION 21) work with newer runtimes such as 1.31.

The package is fetched with `apt-get download` against a private apt state (own sources list,
lists and cache dirs under the destination), so the machine's apt setup is never touched and
no root is needed. The mirror is the one the machine's own apt sources already name: this
file deliberately contains no mirror host. The .deb is unpacked with `dpkg -x`.

Usage (CMake runs this at configure time; the include dir is printed as the last line):

    python tools/fetch_ort_headers.py --dest .ortdeps/ort-headers-1.21 \\
        ~/.cache/adpq-onnx/ort-headers-1.21
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGE = "libonnxruntime-dev"
SUITE = "trixie"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
HEADER = "onnxruntime_c_api.h"
MIRROR_ENV = "ADPQ_DEBIAN_MIRROR"  # overrides the mirror found in the apt sources


class FetchError(RuntimeError):
    pass


def _deb822_uris(text: str) -> list[str]:
    """`URIs:` of deb822 stanzas (sources.list.d/*.sources) that are `Types: deb`."""
    uris: list[str] = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, list[str]] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.split()
        if "deb" in fields.get("types", []) and fields.get("enabled", ["yes"])[0] != "no":
            uris += fields.get("uris", [])
    return uris


def _one_line_uris(text: str) -> list[str]:
    """URIs of `deb [options] URI suite components` lines (sources.list, *.list)."""
    uris: list[str] = []
    for line in text.splitlines():
        words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
        if len(words) >= 3 and words[0] == "deb":
            uris.append(words[1])
    return uris


def debian_mirrors() -> list[str]:
    """Mirror URIs of the main Debian archive named by this machine's apt sources."""
    uris: list[str] = []
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        uris += _deb822_uris(Path(path).read_text(errors="replace"))
    for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
        if os.path.isfile(path):
            uris += _one_line_uris(Path(path).read_text(errors="replace"))
    # The main archive ends in /debian; -security, -ports and third-party repos do not.
    main = [u.rstrip("/") for u in uris if u.rstrip("/").endswith("/debian")]
    return list(dict.fromkeys(main))


def _apt(state: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    opts = [
        f"-o=Dir::Etc::SourceList={state / 'sources.list'}",
        "-o=Dir::Etc::SourceParts=/dev/null",
        f"-o=Dir::State::Lists={state / 'lists'}",
        f"-o=Dir::Cache={state / 'cache'}",
        "-o=Debug::NoLocking=1",
        "-qq",
    ]
    if os.geteuid() == 0:
        # The private dirs are not readable by apt's `_apt` sandbox user; stay root.
        opts.append("-o=APT::Sandbox::User=root")
    return subprocess.run(["apt-get", *opts, *args], cwd=cwd, text=True, capture_output=True)


def _download_deb(mirror: str, work: Path) -> Path:
    """apt-get update + download against a private state; tries the keyring, then trusted."""
    for sub in ("lists/partial", "cache/archives/partial"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    errors = []
    for trust in (f"signed-by={KEYRING}", "trusted=yes"):
        if trust.startswith("signed-by") and not os.path.isfile(KEYRING):
            continue
        (work / "sources.list").write_text(f"deb [{trust}] {mirror} {SUITE} main\n")
        update = _apt(work, ["update"], work)
        if update.returncode != 0 or "NO_PUBKEY" in update.stderr:
            errors.append(f"apt-get update [{trust}]: {update.stderr.strip()[-400:]}")
            continue
        download = _apt(work, ["download", PACKAGE], work)
        debs = sorted(work.glob(f"{PACKAGE}_*.deb"))
        if download.returncode == 0 and debs:
            return debs[-1]
        errors.append(
            f"apt-get download [{trust}]: {download.stderr.strip()[-400:]} "
            f"(after apt-get update: {update.stderr.strip()[-400:] or 'no messages'})"
        )
    raise FetchError(f"could not download {PACKAGE} from {mirror}:\n  " + "\n  ".join(errors))


def _include_dir(dest: Path) -> Path:
    return dest / "usr" / "include" / "onnxruntime"


def _writable(dest: Path) -> bool:
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(dest.parent, os.W_OK)


def fetch_any(dests: list[Path]) -> Path:
    """The include dir of the first dest that already holds the headers, else download them
    into the first dest whose parent is writable."""
    for dest in dests:
        if (_include_dir(dest) / HEADER).is_file():
            return _include_dir(dest)
    for dest in dests:
        if _writable(dest):
            return fetch(dest)
    raise FetchError("none of these is writable: " + ", ".join(map(str, dests)))


def fetch(dest: Path) -> Path:
    """Unpack the headers into dest (once) and return the include dir."""
    include = _include_dir(dest)
    if (include / HEADER).is_file():
        return include
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            raise FetchError(f"{tool} not found: this is not a Debian-like machine")
    mirrors = [os.environ[MIRROR_ENV]] if os.environ.get(MIRROR_ENV) else debian_mirrors()
    if not mirrors:
        raise FetchError(
            "no Debian archive mirror (a URI ending in /debian) in /etc/apt sources; "
            f"set {MIRROR_ENV}"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    with tempfile.TemporaryDirectory(prefix="adpq-apt-", dir=dest.parent) as tmp:
        for mirror in mirrors:
            try:
                deb = _download_deb(mirror, Path(tmp))
            except FetchError as e:
                errors.append(str(e))
                continue
            unpacked = Path(tmp) / "root"
            subprocess.run(["dpkg", "-x", str(deb), str(unpacked)], check=True)
            if not (_include_dir(unpacked) / HEADER).is_file():
                raise FetchError(f"{deb.name} holds no usr/include/onnxruntime/{HEADER}")
            # Keep the headers and the copyright; usr/lib holds only CMake/pkg-config files and
            # a dangling libonnxruntime.so link to a library this package does not ship.
            shutil.rmtree(unpacked / "usr" / "lib", ignore_errors=True)
            shutil.rmtree(dest, ignore_errors=True)
            os.replace(unpacked, dest)  # atomic: a half-unpacked dest is never seen
            return include
    raise FetchError("\n".join(errors))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--dest",
        type=Path,
        nargs="+",
        required=True,
        help="directories to look in, then to unpack into (first writable)",
    )
    args = parser.parse_args(argv)
    try:
        include = fetch_any([d.resolve() for d in args.dest])
    except (FetchError, OSError, subprocess.CalledProcessError) as e:
        print(f"fetch_ort_headers: {e}", file=sys.stderr)
        return 1
    print(include)
    return 0


if __name__ == "__main__":
    sys.exit(main())
