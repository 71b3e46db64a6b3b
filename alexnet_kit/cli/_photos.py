"""The photos named on a command line, and one line for each named path that holds none."""
from __future__ import annotations

import sys
from pathlib import Path


def named_photos(paths: list[str], walk: bool = False) -> tuple[list[str], int]:
    """(photos, problems): folders searched recursively; each named folder without a photo, and each named
    file that is no image (judged by its header when its name does not end like one), is reported on
    stderr in one line and counted (the command goes on with the rest and exits 1).

    ``walk``: absolute, sorted, unique paths, and a missing path is an error now (``index build``,
    ``features``); otherwise (``classify``) a missing file stays in the list, in order, and is
    reported as an unreadable photo when its turn comes."""
    from ..images import empty_folder_problem, find_images, is_image_path, not_an_image  # defers Pillow and numpy: the parser stays light

    photos, problems = [], 0
    for p in paths:
        path = Path(p).expanduser()
        found = find_images([path])
        why = (empty_folder_problem(path) if not found and path.is_dir() else
               not_an_image(path) if path.is_file() and not is_image_path(path) else None)
        if why:
            print(f"alexnet-kit: error: {why}", file=sys.stderr)
            problems += 1
        else:
            photos.extend(found)
    if walk:
        from ..search.builder import walk_photos  # defers torch: only the commands that walk need it

        missing = [p for p in paths if not Path(p).expanduser().exists()]
        photos = walk_photos(missing + photos)  # a missing path: one line, now
    return photos, problems
