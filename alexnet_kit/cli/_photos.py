"""The photos named on a command line, and one line for each named folder that holds none."""
from __future__ import annotations

import sys
from pathlib import Path


def named_photos(paths: list[str], walk: bool = False) -> tuple[list[str], int]:
    """(photos, problems): folders searched recursively; each named folder without a photo is reported
    on stderr in one line and counted (the command goes on with the rest and exits 1).

    ``walk``: absolute, sorted, unique paths, and a missing path is an error now (``index build``,
    ``features``); otherwise (``classify``) a missing file stays in the list, in order, and is
    reported as an unreadable photo when its turn comes."""
    from ..images import empty_folder_problem, find_images

    photos, problems = [], 0
    for p in paths:
        found = find_images([Path(p).expanduser()])
        if not found and Path(p).expanduser().is_dir():
            print(f"alexnet-kit: error: {empty_folder_problem(Path(p).expanduser())}", file=sys.stderr)
            problems += 1
        photos.extend(found)
    if walk:
        from ..search.builder import walk_photos

        missing = [p for p in paths if not Path(p).expanduser().exists()]
        photos = walk_photos(missing + photos)  # a missing path: one line, now
    return photos, problems
