"""Package discovery (everything else is in pyproject.toml).

The stages live in top-level folders (train/, export/, apps/) so the layout
tells the architecture, but install as alexnet_kit.train, alexnet_kit.export
and alexnet_kit.apps, so no generic top-level name (`train`, `export`) lands
in site-packages. Subpackages are found, never listed by hand.
"""
import os

from setuptools import find_packages, setup

STAGES = {
    name: folder
    for name, folder in {"alexnet_kit.train": "train", "alexnet_kit.export": "export", "alexnet_kit.apps": "apps"}.items()
    if os.path.isfile(os.path.join(folder, "__init__.py"))
}

packages = find_packages(include=["alexnet_kit", "alexnet_kit.*"])
for name, folder in STAGES.items():
    packages += [name] + [f"{name}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir={"alexnet_kit": "alexnet_kit", **STAGES})
