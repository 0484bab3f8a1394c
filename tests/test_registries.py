"""Every extension point is a `cogsynth.core.Registry` (issue 22): found by walking the package, not by a list that
could miss a new one. Each registry is non-empty, every entry is found by its name and documented in one line,
listing with wildcards works, and an unknown name is `check_choice`'s error with the closest name."""
import importlib, pkgutil

import pytest

import cogsynth
from cogsynth.core import CogsynthError, Registry

def all_registries() -> dict[str, Registry]:
    found = {}
    for m in pkgutil.iter_modules(cogsynth.__path__):
        if m.name.startswith("_"): continue
        mod = importlib.import_module(f"cogsynth.{m.name}")
        for name, obj in vars(mod).items():
            if isinstance(obj, Registry) and obj.__class__ is Registry: found.setdefault(id(obj), (f"{m.name}.{name}", obj))
    return dict(found.values())

REGISTRIES = all_registries()

def test_every_extension_point_is_a_registry():
    names = {n.split(".")[-1] for n in REGISTRIES}
    assert {"DATASETS", "CLASS_SETS", "RECIPES", "AUGMENTATIONS", "HEADS", "PROMPT_FAMILIES", "PROTOCOLS", "SOLVERS",
            "TESTSETS", "TRANSFER_DATASETS"} <= names, names

@pytest.mark.parametrize("where", sorted(REGISTRIES))
def test_each_registry_finds_documents_and_lists_its_entries(where):
    reg = REGISTRIES[where]
    names = list(reg)
    assert names, f"{where} is empty"
    for n in names:
        assert reg[n] is reg.lookup(n) and n in reg
        assert reg.doc(n).strip(), f"{where}[{n!r}] has no one-line description"
    assert reg.list("*") == names and reg.list(names[0]) == [names[0]]
    assert reg.help() == ", ".join(names)
    typo = names[0][:-1] + ("x" if names[0][-1] != "x" else "y")
    if typo not in reg:
        with pytest.raises(CogsynthError, match="is not one of") as e: reg[typo]
        assert isinstance(e.value, KeyError)
