"""AVAGD on disk: the release's `<object>/<affordance>/` folders, the official CSV index, and the category splits.

A category folder holds `<stem>.jpg`, `<stem>_Function_mask.png`, `<stem>_Dependency_mask.png` (a missing
dependency mask means an empty one) and the category's sound clips. Images and clips of a category are not
paired one to one: any clip of a category goes with any image of it.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

AUDIO_SUFFIXES = (".mp3", ".wav", ".flac", ".ogg")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
FUNCTION_SUFFIX = "_Function_mask.png"
DEPENDENCY_SUFFIX = "_Dependency_mask.png"
CSV_COLUMNS = ("image", "audio", "mask_func", "mask_dep", "pkl")

# The paper's Table 12, as "affordance@object".
SEEN_CATEGORIES = (
    "smooth@wood planner; snap@camera; shake@bottle; open or close@blinds; unlock@combination lock; pump@air pump; "
    "cut@sickle; play@string instruments; pull off@pen; open@key; dig@hoe; play@soccer; "
    "release or tighten@handbrake; press@soap dispenser; press@button; cut@knife; turn on or off@lighter; "
    "carve@knife; plunge@plunger; press@pen; open or close@drawer; ride@bike; pour@water; move@mouse; "
    "unfold@utility knife; chop@axe; cut@bolt cutter; open or close@door; play@flute; "
    "open or close@washing machine; turn on or off@gas stove; play@piano; prise@bottle opener; press@stapler; "
    "mop@mop; adjust@wrench; play@volleyball; stir@muddler; drill@electric drill; knock@door; clean@window; "
    "turn on@chainsaw; sharpen@pocket pencil sharpener; box@punching bag; spread@trowel; twist@knob; pull@zipper; "
    "hit@hammer; open@can; play@brass instruments; flush@toilet; clip@nail clipper; flip@bottle cap; "
    "lock@padlock; play@badminton; open or close@wave oven; brake@bike; push@window; twist@bottle cap; "
    "draw or write@pen; slide@door; twist@nut; press@mouse; play@drum; brush@toothbrush; "
    "sharpen@srank pencil sharpener; play@tennis; play@harp; cut@scissors; open or close@fridge; twist@screw; "
    "press@keyboard; brush@brush; spray@bottle; peel@peeler; turn on or off@faucet; play@guitar; "
    "brush@paint roller; cut@handsaw; pull@joystick; plug in or out@plug; turn on or off@switch; "
    "fasten@seatbelt; dig@shovel"
).split("; ")
UNSEEN_CATEGORIES = (
    "sweep@broom; cut@cutting machine; shift@gears; scrape@spatula; hit@meat hammer; brush@paint brush; "
    "play@basketball; play@guzheng; play@table tennis; kick@shuttlecock; play@erhu; twist@valve; play@accordion; "
    "twist@bottle opener; cut@chainsaw; open or close@car door; lock@door; slide@window; press@duster balloon; "
    "cut@garden scissors; press@garlic press; drill@jack hammer; shake@rattle drum; lock@slidelock; row@boat; "
    "scroll@mouse; ring@bike; flip@book; play@pipa"
).split("; ")


def category_name(folder: Path) -> str:
    """`bottle_cap/twist` -> `twist@bottle cap`."""
    return f"{folder.name.replace('_', ' ')}@{folder.parent.name.replace('_', ' ')}"


def category_splits(root: Path) -> tuple[list[str], list[str]]:
    """Seen and unseen category names: the root's `splits.json` if present, else the paper's Table 12."""
    custom = root / "splits.json"
    if custom.is_file():
        splits = json.loads(custom.read_text())
        return list(splits["seen"]), list(splits["unseen"])
    return list(SEEN_CATEGORIES), list(UNSEEN_CATEGORIES)


@dataclass
class ImageRecord:
    image: Path
    function_mask: Path
    dependency_mask: Path | None  # None: no file, an empty mask


@dataclass
class CategoryFolder:
    name: str
    folder: Path
    images: list[ImageRecord] = field(default_factory=list)
    clips: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def scan_release(root: Path) -> list[CategoryFolder]:
    """Every `<object>/<affordance>/` folder under `root` that holds images or clips, sorted by name."""
    categories = []
    for folder in sorted(p for p in root.glob("*/*") if p.is_dir()):
        entry = CategoryFolder(category_name(folder), folder)
        for path in sorted(folder.iterdir()):
            suffix = path.suffix.lower()
            if suffix in AUDIO_SUFFIXES:
                entry.clips.append(path)
            elif suffix in IMAGE_SUFFIXES and not path.name.endswith(("_mask.png",)):
                function = folder / f"{path.stem}{FUNCTION_SUFFIX}"
                dependency = folder / f"{path.stem}{DEPENDENCY_SUFFIX}"
                if not function.is_file():
                    entry.problems.append(f"{path}: no function mask {function.name}")
                    continue
                entry.images.append(ImageRecord(path, function, dependency if dependency.is_file() else None))
        if entry.images or entry.clips:
            categories.append(entry)
    return categories


@dataclass(frozen=True)
class IndexRow:
    image: Path
    audio: Path
    function_mask: Path
    dependency_mask: Path | None
    log_mel: Path | None  # precomputed examples (official `pkl` column or our cache)

    @property
    def name(self) -> str:
        """Unique sample name as the released code builds it: image path with '/' -> '_', then the clip stem."""
        image = "_".join(self.image.with_suffix("").parts[-3:])
        return f"{image}_{self.audio.stem}"


def _resolve(base: Path, value: str) -> Path | None:
    return (base / value) if value else None


def read_index(path: str | Path, data_root: str | Path | None = None) -> list[IndexRow]:
    """Read a CSV index (ours or the official one). Relative paths are resolved against `data_root`, by default
    the CSV's own folder. Columns: image, audio, mask_func, mask_dep, and optionally pkl."""
    path = Path(path)
    base = Path(data_root) if data_root is not None else path.parent
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"image", "audio", "mask_func", "mask_dep"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: index is missing columns {sorted(missing)}")
        return [IndexRow(base / row["image"], base / row["audio"], base / row["mask_func"],
                         _resolve(base, row.get("mask_dep", "")), _resolve(base, row.get("pkl") or ""))
                for row in reader]


def write_index(path: Path, rows: list[IndexRow]) -> None:
    """Write rows with paths relative to the CSV's folder, atomically."""
    base = path.parent

    def relative(p: Path | None) -> str:
        return "" if p is None else os.path.relpath(p.resolve(), base.resolve())

    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            writer.writerow([relative(row.image), relative(row.audio), relative(row.function_mask),
                             relative(row.dependency_mask), relative(row.log_mel)])
    tmp.replace(path)
