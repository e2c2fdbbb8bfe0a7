"""
The module paths of earlier releases, kept importable so that what they pickled still loads.

Saved models and replay buffers name classes by module (``policy_class`` in a model's zip is
``sb3_rssm.dreamer.policies_v3.MlpPolicy`` in a file saved before DreamerV3 got its own folder). This module maps
every path that moved to the module that holds its contents now, through an import hook that resolves an old
name only when something asks for it: nothing is imported eagerly, and old user code such as
``from sb3_rssm.dreamer import DreamerV1`` keeps working too.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Sequence
from typing import Optional

#: old module path -> the module that holds its contents now
MOVED_MODULES: dict[str, str] = {
    "sb3_rssm.dreamer.dreamer_v1": "sb3_rssm.dreamer_v1.dreamer_v1",
    "sb3_rssm.dreamer.policies": "sb3_rssm.dreamer_v1.policies",
    "sb3_rssm.dreamer.dreamer_v3": "sb3_rssm.dreamer_v3.dreamer_v3",
    "sb3_rssm.dreamer.policies_v3": "sb3_rssm.dreamer_v3.policies",
    "sb3_rssm.dreamer.world_model_v3": "sb3_rssm.dreamer_v3.world_model",
    "sb3_rssm.common.categorical_rssm": "sb3_rssm.dreamer_v3.categorical_rssm",
    "sb3_rssm.common.networks_v3": "sb3_rssm.dreamer_v3.networks",
    "sb3_rssm.common.optimizers": "sb3_rssm.dreamer_v3.optimizers",
    "sb3_rssm.common.planning": "sb3_rssm.planet.planning",
}
#: old package -> (module, names) it exported, for ``from sb3_rssm.dreamer import ...``
MOVED_PACKAGES: dict[str, dict[str, str]] = {
    "sb3_rssm.dreamer": {
        "DreamerV1": "sb3_rssm.dreamer_v1",
        "DreamerV3": "sb3_rssm.dreamer_v3",
        "CnnPolicy": "sb3_rssm.dreamer_v1",
        "MlpPolicy": "sb3_rssm.dreamer_v1",
        "MultiInputPolicy": "sb3_rssm.dreamer_v1",
    }
}


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves the old paths of :data:`MOVED_MODULES` and :data:`MOVED_PACKAGES` to today's modules."""

    def find_spec(
        self, fullname: str, path: Optional[Sequence[str]] = None, target: Optional[types.ModuleType] = None
    ) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname in MOVED_MODULES or fullname in MOVED_PACKAGES:
            return importlib.util.spec_from_loader(fullname, self, is_package=fullname in MOVED_PACKAGES)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        if spec.name in MOVED_MODULES:
            # the module itself, not a copy: classes unpickled through the old path are today's classes
            return importlib.import_module(MOVED_MODULES[spec.name])
        package = types.ModuleType(spec.name, f"Old name of today's modules ({', '.join(sorted(MOVED_PACKAGES[spec.name]))}).")
        for name, module in MOVED_PACKAGES[spec.name].items():
            setattr(package, name, getattr(importlib.import_module(module), name))
        package.__path__ = []  # a package, so that its moved submodules resolve through this finder
        return package

    def exec_module(self, module: types.ModuleType) -> None:
        """Nothing to run: :meth:`create_module` returned a module that is already complete."""


def install() -> None:
    """Put the finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
