"""Which files are videos: the one list of video file suffixes, and the search of folders for them.

Plain Python (no video library), so that the commands can name video inputs without
importing the decoder: ``extract_features.py``, ``import_annotations.py``, ``localize.py``.
"""
from __future__ import annotations

from pathlib import Path

from utils.errors import DataError
from utils.layout import check_video_name

#: Suffixes (lower case) of the files taken as videos.
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ts")


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def find_videos(inputs: list[str]) -> list[Path]:
    """Files given, and the video files under the folders given (sorted); names must be unique."""
    videos = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            videos += sorted(p for p in path.rglob("*") if p.is_file() and is_video(p))
        elif path.exists():
            videos.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    seen: dict[str, Path] = {}
    for video in videos:
        if video.stem in seen and seen[video.stem] != video:
            raise DataError(f"two videos named {video.stem}: {seen[video.stem]} and {video} (the file name without "
                            "extension is the video name)")
        check_video_name(video.stem, f"{video}")
        seen[video.stem] = video
    return list(seen.values())
