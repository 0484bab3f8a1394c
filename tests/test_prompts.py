"""Prompt families as registry entries (issue 22) and seed 003's prompts as its paper writes them (issue 23)."""
import pytest

from cogsynth.core import CogsynthError, RegistryKeyError, data_file
from cogsynth.prompts import (DOMAINS, EUROSAT_DOMAINS, PROMPT_FAMILIES, ClassInfo, PromptFamily, describe_classes, make_plan,
                              prompt_family, register_prompt_family)
import cogsynth.prompts as prompts


@pytest.fixture
def scratch_family():
    "Registers families for one test and removes them afterwards."
    names = []
    yield names
    for n in names: PROMPT_FAMILIES._entries.pop(n, None); PROMPT_FAMILIES._docs.pop(n, None)


def cifar(key):
    return next(c for c in describe_classes(data_file("cifar100_classes.txt").read_text().split(), wordnet="never") if c.key == key)


# ---------------------------------------------------------------- the registry (issue 22)
@pytest.mark.parametrize("name", list(PROMPT_FAMILIES))
def test_every_registered_family_expands(name):
    fam = prompt_family(name)
    assert isinstance(fam, PromptFamily) and fam.name == name and PROMPT_FAMILIES.doc(name)
    c = ClassInfo("n1", "a_b", hypernym="c_d", definition="an e_f")
    vs = fam.variants(c)
    assert vs and all(isinstance(p, str) and p.strip() and "{" not in p for p, _ in vs)


def test_families_carry_their_own_domains():
    assert PROMPT_FAMILIES["multi_domain"].domains == DOMAINS and len(DOMAINS) == 10
    assert PROMPT_FAMILIES["eurosat"].domains == EUROSAT_DOMAINS
    assert [p for p, _ in prompt_family("eurosat").variants(ClassInfo("river", "river"))] == [
        f"a satellite photo of a river in the style of a {d}" for d in ("realistic photo", "drawing", "painting", "sketch", "3D rendering")]


def test_a_new_family_is_one_registration(scratch_family):
    scratch_family.append("toy-style")
    register_prompt_family("toy-style", "a {domain} toy {name}", domains=("plastic", "wooden"), doc="toys")
    assert "toy-style" in PROMPT_FAMILIES and "toy-style" in PROMPT_FAMILIES.help() and "toy-style" in prompts.FAMILY_NAMES
    plan = make_plan(["pickup_truck"], 2, prompt="toy-style", size=8)        # the name is taken as it is, '-' and all
    assert [j.prompt for j in plan] and {j.prompt for j in plan} <= {"a plastic toy pickup truck", "a wooden toy pickup truck"}
    assert {j.family for j in plan} == {"toy-style"}


def test_a_family_built_by_a_decorated_function(scratch_family):
    scratch_family.append("seasons")
    @PROMPT_FAMILIES.register("seasons")
    def seasons():
        "a class in each season"
        return PromptFamily("anything", ("a {name} in {domain}",), domains=("spring", "winter"))
    fam = prompt_family("seasons")
    assert fam.name == "seasons" and [p for p, _ in fam.variants(ClassInfo("x", "fox"))] == ["a fox in spring", "a fox in winter"]


def test_unknown_family_names_the_choices():
    with pytest.raises(RegistryKeyError, match=r"prompt='mutli_domain' is not one of: c, c_hc, .*did you mean 'multi_domain'\?"):
        prompt_family("mutli_domain")
    with pytest.raises(CogsynthError, match="uses {domain} but its domain list is empty"):
        register_prompt_family("empty-domains", "a {domain} of a {name}", domains=())
    assert "empty-domains" not in PROMPT_FAMILIES


def test_thesis_notation_still_resolves():
    assert prompt_family("c, h_c inside b").name == "c_hc_b" and prompt_family("multi-domain").name == "multi_domain"


# ---------------------------------------------------------------- seed 003's prompts (issue 23)
def test_plain_class_names_read_as_words_in_every_family():
    truck = cifar("pickup_truck")
    assert (truck.key, truck.name, truck.folder) == ("pickup_truck", "pickup truck", "pickup_truck")
    raw = ClassInfo("pickup_truck", "pickup_truck", hypernym="motor_vehicle", definition="a truck")   # names given as they are
    for name in PROMPT_FAMILIES:
        for prompt, _ in prompt_family(name, backgrounds=["parking_lot"]).variants(raw):
            assert "pickup truck" in prompt and "pickup_truck" not in prompt and "motor_vehicle" not in prompt, (name, prompt)


def test_wordnet_lemmas_read_as_words():
    malamute = describe_classes(["n02110063"])[0]
    assert prompt_family("c").variants(malamute)[0][0] == "malamute, malemute, Alaskan malamute"


def test_base_prompt_is_the_papers():
    # seed 003's text: "an image of a {class}"; its create_dataset.py writes f"an image of {c}" (cogsynth follows the paper)
    assert prompt_family("base").variants(cifar("aquarium_fish"))[0][0] == "an image of a aquarium fish"
    assert [p for p, _ in prompt_family("all").variants(cifar("pickup_truck"))][:2] == ["an image of a pickup truck", "pickup truck"]


def test_random_guidance_is_drawn_per_image():
    # the paper draws a scale in [1, 5] for each image; create_dataset.py draws one per run
    plan = make_plan(["pickup_truck", "apple"], 30, prompt="base", guidance="random", size=8, seed=0)
    for key in ("pickup_truck", "apple"):
        scales = [j.guidance for j in plan if j.key == key]
        assert set(scales) == {1.0, 2.0, 3.0, 4.0, 5.0}, scales
    assert plan == make_plan(["pickup_truck", "apple"], 30, prompt="base", guidance="random", size=8, seed=0)
