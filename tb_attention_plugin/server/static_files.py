"""Finds the frontend's files for `/static/<path>`, refusing anything outside the frontend folder.

An installed wheel carries the frontend as the package `tb_attention_plugin.frontend` (beside
this `server/` package); a source checkout (editable install) has it at the repository root,
`frontend/`. Files in subfolders (`lib/decode.js`, `ui/dom.js`, `views/head.js`) are served by their path.

Example:

>>> root = frontend_root()
>>> resolve(root, "../setup.py") is None
True
"""

import pathlib

CONTENT_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


def frontend_root():
    """The installed frontend package folder if present, else the checkout's `frontend/`."""
    package = pathlib.Path(__file__).resolve().parent.parent  # tb_attention_plugin/
    installed = package / "frontend"
    if installed.is_dir():
        return installed
    return package.parent / "frontend"


def resolve(root, relative):
    """Returns `(path, content_type)` of a servable file under `root`, or None.

    Refuses empty paths, absolute paths, `..`, hidden files, backslashes, NUL bytes, symlinks
    leading outside `root`, folders and file types the frontend does not use.
    """
    if not relative or "\\" in relative or "\x00" in relative or relative.startswith("/"):
        return None
    parts = relative.split("/")
    if any(part in ("", ".", "..") or part.startswith(".") for part in parts):
        return None
    content_type = CONTENT_TYPES.get(pathlib.PurePosixPath(relative).suffix.lower())
    if content_type is None:
        return None
    try:
        base = pathlib.Path(root).resolve()
        path = base.joinpath(*parts).resolve()
    except (OSError, ValueError, RuntimeError):
        return None
    if not path.is_relative_to(base) or not path.is_file():
        return None
    return path, content_type
