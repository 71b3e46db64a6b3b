"""Which model and index a command uses when the user names none, and why (the rule, not the lookup:
:mod:`.resolve` turns the choice into a file).

One rule for every command, strongest first:

1. the command line: ``--model M`` / ``--index I``;
2. the environment: ``$ALEXNET_KIT_MODEL`` / ``$ALEXNET_KIT_INDEX``;
3. the config file ``~/.config/alexnet-kit/config.toml``
   (``$XDG_CONFIG_HOME``)::

       model = "torchvision"        # a pretrained name or a model file
       index = "holidays"           # an index name (see below) or folder
       offline = true               # never download (as ALEXNET_KIT_OFFLINE=1)

4. built in: the model is ``caffe``, BVLC's bvlc_alexnet, the paper's
   grouped network, downloaded once on first use (digest checked) and
   converted into the cache; the index is the one named ``default``.

A model is a file (checkpoint or exported artifact) or a pretrained name
(``caffe``, ``torchvision``, ``onnx-zoo``); an existing file of that name
wins. An index is a folder, or a short name for a folder in
``~/.local/share/alexnet-kit/indexes/`` (``$XDG_DATA_HOME``), where
``index build`` puts one given no ``--out``.

``ALEXNET_KIT_OFFLINE=1`` (or ``offline = true``) never downloads: a
pretrained model not yet in the cache is then one line naming the ways out.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

from .errors import FileProblem
from .paths import config_file, index_root

MODEL_ENV = "ALEXNET_KIT_MODEL"
INDEX_ENV = "ALEXNET_KIT_INDEX"
OFFLINE_ENV = "ALEXNET_KIT_OFFLINE"
BUILTIN_MODEL = "caffe"
BUILTIN_INDEX = "default"
BUILT_IN = "built in"  # a Choice's ``why`` when nothing chose
#: the folder 'no index yet' suggests indexing
EXAMPLE_FOLDER = "~/Pictures"
_KEYS = {"model": str, "index": str, "offline": bool}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Choice:
    """A setting's value and where it came from (``--model``, ``$ALEXNET_KIT_MODEL``, the config file, built in)."""

    value: str
    why: str

    @property
    def built_in(self) -> bool:
        return self.why == BUILT_IN


def read_config() -> dict:
    """The config file's settings ({} when there is none); a bad file is one line naming it."""
    path = config_file()
    if not path.is_file():
        return {}
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise FileProblem(path, f"not a readable TOML config file ({e})") from None
    for key, value in table.items():
        if key not in _KEYS:
            raise FileProblem(path, f"unknown setting {key!r} (known: {', '.join(_KEYS)})")
        if not isinstance(value, _KEYS[key]):
            raise FileProblem(path, f"{key} must be a {_KEYS[key].__name__}, not {value!r}")
    return table


def _choose(flag: str, given: str | os.PathLike | None, env: str, key: str, builtin: str) -> Choice:
    if given is not None and str(given) != "":
        return Choice(os.fspath(given), flag)
    if os.environ.get(env):
        return Choice(os.environ[env], f"${env}")
    value = read_config().get(key)
    if value:
        return Choice(value, f"{key} in {config_file()}")
    return Choice(builtin, BUILT_IN)


def model_choice(given: str | os.PathLike | None = None) -> Choice:
    """The model a command uses: ``given`` (its ``--model``), else the environment, the config file, ``caffe``."""
    return _choose("--model", given, MODEL_ENV, "model", BUILTIN_MODEL)


def index_choice(given: str | os.PathLike | None = None) -> Choice:
    """The index a command uses: ``given`` (its ``--index``), else the environment, the config file, ``default``."""
    return _choose("--index", given, INDEX_ENV, "index", BUILTIN_INDEX)


def offline() -> bool:
    """``$ALEXNET_KIT_OFFLINE`` set to 1/true/yes, else the config file's ``offline``."""
    env = os.environ.get(OFFLINE_ENV)
    if env is not None and env.strip() != "":
        return env.strip().lower() in ("1", "true", "yes", "on")
    return bool(read_config().get("offline", False))


def index_folder(value: str) -> Path:
    """The folder an index setting names: an existing path as it is, else a short name (``holidays``, not
    ``runs/photos.index`` or ``./x``) in the user's index folder, else the path."""
    path = Path(value).expanduser()
    return index_root() / value if not path.exists() and _NAME.fullmatch(value) else path
