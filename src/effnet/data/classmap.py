"""Class maps: which class index a model's output uses for each folder name (e.g. an ImageNet wnid).

A model pretrained on ImageNet-1k predicts index 0 for wnid ``n01440764`` (tench), whatever folders
an evaluation set happens to contain. torchvision's ``ImageFolder`` numbers the folders it finds in
sorted order instead, so on a folder holding only some classes, every label would be wrong. A
:class:`ClassMap` pins the index of each folder name, as the line order of ``imagenet-synsets.txt`` does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from effnet.errors import DataError

__all__ = ["IMAGENET_SYNSETS_ENV", "ClassMap", "find_imagenet_synsets"]

IMAGENET_SYNSETS_ENV = "EFFNET_IMAGENET_SYNSETS"
SHARED_DATA_ENV = "EFFNET_SHARED_DATA"  # the shared data folder (README "Sample inputs")
_SHARED_RELATIVE = Path("..", "shared", "data", "imagenet-synsets.txt")
_PACKAGED_NAME = "imagenet_synsets.txt"


@dataclass(frozen=True)
class ClassMap:
    """An ordered list of class ids (e.g. wnids) with a human-readable name each.

    The index of an id is its position, i.e. its 0-based line number in the file it came from.

    Attributes:
        ids: class ids in index order; unique.
        names: one human-readable name per id (not necessarily unique: ImageNet has two "crane"s).
        source: where the map came from, for error messages.
    """

    ids: tuple[str, ...]
    names: tuple[str, ...]
    source: str = "<memory>"
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.names):
            raise DataError(f"class map {self.source}: {len(self.ids)} ids but {len(self.names)} names; "
                            "give exactly one name per id")
        if not self.ids:
            raise DataError(f"class map {self.source} is empty; give at least one 'id name' line")
        index: dict[str, int] = {}
        for i, class_id in enumerate(self.ids):
            if class_id in index:
                raise DataError(f"class map {self.source}: id {class_id!r} appears at indices "
                                f"{index[class_id]} and {i}; each id must appear once")
            index[class_id] = i
        object.__setattr__(self, "_index", index)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str] | Traversable) -> ClassMap:
        """Read ``id name...`` lines; line number (0-based) = class index.

        Underscores in names become spaces (``great_white_shark`` -> ``great white shark``). A blank
        line other than at the end is an error, since it would shift every later index by one.
        """
        if isinstance(path, str | os.PathLike):
            path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(
                f"class map {path}: cannot be read ({err}); pass an existing UTF-8 text file"
            ) from None
        ids: list[str] = []
        names: list[str] = []
        for number, line in enumerate(text.rstrip("\n").split("\n"), start=1):
            parts = line.split(maxsplit=1)
            if not parts:
                raise DataError(f"class map {path}: line {number} is blank; every line must be 'id name', "
                                "since the line number is the class index")
            ids.append(parts[0])
            names.append(parts[1].strip().replace("_", " ") if len(parts) > 1 else parts[0])
        return cls(tuple(ids), tuple(names), source=str(path))

    @classmethod
    def imagenet(cls, path: str | os.PathLike[str] | None = None) -> ClassMap:
        """The 1000 ImageNet-1k classes in the standard index order (see :func:`find_imagenet_synsets`)."""
        # The packaged copy is a Traversable, read through importlib.resources so it works from a wheel.
        return cls.from_file(find_imagenet_synsets() if path is None else path)

    @classmethod
    def from_arg(cls, value: str) -> ClassMap:
        """A CLI/config value: ``"imagenet"`` for the ImageNet map, else a synsets file path."""
        return cls.imagenet() if value == "imagenet" else cls.from_file(value)

    def index(self, class_id: str) -> int:
        """Index of ``class_id``; DataError naming the id and the map when absent."""
        try:
            return self._index[class_id]
        except KeyError:
            raise DataError(
                f"{class_id!r} is not a class id of class map {self.source} ({len(self)} classes); "
                "check the spelling or use a class map that contains it"
            ) from None

    def name(self, index: int) -> str:
        """Human-readable name of class ``index``."""
        return self.names[self._checked(index)]

    def id(self, index: int) -> str:
        """Class id (e.g. wnid) of class ``index``."""
        return self.ids[self._checked(index)]

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, class_id: object) -> bool:
        return class_id in self._index

    def _checked(self, index: int) -> int:
        # Negative indices would silently count from the end, which is never a class index.
        if not 0 <= index < len(self.ids):
            raise DataError(f"class index {index} is outside class map {self.source} (0..{len(self) - 1}); "
                            "check the model's number of classes")
        return index


def find_imagenet_synsets() -> Path | Traversable:
    """Locate ``imagenet-synsets.txt``: env var, then the shared data folder, then the packaged copy.

    Order: ``$EFFNET_IMAGENET_SYNSETS`` (an error if it names a missing file: a typo there should not
    be hidden by a fallback); ``imagenet-synsets.txt`` in ``$EFFNET_SHARED_DATA``; then
    ``../shared/data/imagenet-synsets.txt`` from the repository root, then from the current directory;
    finally the copy shipped inside the package, so that an installed effnet always has a map.
    """
    env = os.environ.get(IMAGENET_SYNSETS_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise DataError(f"${IMAGENET_SYNSETS_ENV}={env} is not a file; point it at imagenet-synsets.txt "
                            "or unset it to use the packaged copy")
        return path
    repo_root = Path(__file__).resolve().parents[3]
    shared = os.environ.get(SHARED_DATA_ENV)
    candidates = [Path(shared).expanduser() / _SHARED_RELATIVE.name] if shared else []
    for candidate in [*candidates, repo_root / _SHARED_RELATIVE, Path.cwd() / _SHARED_RELATIVE]:
        if candidate.is_file():
            return candidate.resolve()
    return resources.files("effnet.data").joinpath(_PACKAGED_NAME)
