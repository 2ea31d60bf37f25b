"""Where FlashMM finds things: shipped profiles by name, bundled recordings, the package.

Kept free of heavy imports: ``flashmm status`` resolves its profile through here.
"""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGE_DATA = PACKAGE_DIR / "data"
PACKAGE_PROFILES = PACKAGE_DIR / "profiles"
PACKAGE_SWEEPS = PACKAGE_DIR / "sweeps"
DEFAULT_CONFIG = "paper"
BUNDLED_PREFIX = "bundled:"


def profile_names() -> list[str]:
    """Names of the profiles shipped with FlashMM (``--config NAME``)."""
    return sorted(p.stem for p in PACKAGE_PROFILES.glob("*.yaml"))


def find_profile(path: str | Path | None = None) -> Path:
    """The profile file for ``--config``: a path, else a shipped profile by name.

    ``paper`` and ``configs/paper.yaml`` both find the shipped paper profile from any
    folder; a file of that name in the current directory wins.
    """
    p = Path(path or DEFAULT_CONFIG).expanduser()
    if p.exists() or p.is_absolute():
        return p
    if (PROJECT_ROOT / p).exists():
        return PROJECT_ROOT / p
    name = p.stem if p.suffix in (".yaml", ".yml") and p.parent.name in ("", "configs") else None
    if name is None and p.suffix == "" and len(p.parts) == 1:
        name = p.name
    if name and (PACKAGE_PROFILES / f"{name}.yaml").exists():
        return PACKAGE_PROFILES / f"{name}.yaml"
    return p


def find_sweep(path: str | Path) -> Path:
    """A sweep file: a path, else a shipped one (``sweeps/example.yaml`` or ``example``)."""
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute():
        return p
    if (PROJECT_ROOT / p).exists():
        return PROJECT_ROOT / p
    for candidate in (PACKAGE_SWEEPS / p.name, PACKAGE_SWEEPS / f"{p.name}.yaml"):
        if candidate.is_file():
            return candidate
    return p


def resolve_path(path: str) -> Path:
    """A recording path: ``bundled:NAME`` (a file shipped with FlashMM; a unique prefix
    such as ``bundled:nexo`` will do), else the current directory, then the project root."""
    if path.startswith(BUNDLED_PREFIX):
        return bundled_file(path[len(BUNDLED_PREFIX) :])
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    alt = PROJECT_ROOT / p
    return alt if alt.exists() else p


def bundled_names() -> list[str]:
    return sorted(f.name for f in PACKAGE_DATA.glob("*.gz"))


def bundled_file(name: str) -> Path:
    """A recording shipped with FlashMM by file name or unique prefix (``nexo``, ``eth``)."""
    if (PACKAGE_DATA / name).is_file():
        return PACKAGE_DATA / name
    matches = [n for n in bundled_names() if n.startswith(name)] if name else []
    return PACKAGE_DATA / (matches[0] if len(matches) == 1 else name)
