# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every role documents exactly the variables it defaults (meta/argument_specs.yml vs defaults/main.yml)."""
from pathlib import Path

import pytest
import yaml

ROLES = sorted(p for p in (Path(__file__).resolve().parents[2] / "roles").iterdir() if (p / "tasks").is_dir())


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_argument_specs_match_defaults(role):
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    assert set(defaults) == set(specs), (
        f"{role.name}: only in defaults: {sorted(set(defaults) - set(specs))}; "
        f"only in argument_specs: {sorted(set(specs) - set(defaults))}")
    for name, spec in specs.items():
        assert spec.get("description"), f"{role.name}: {name} has no description"
        assert name.startswith(role.name + "_"), f"{role.name}: public variable {name} lacks the role prefix"


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_templates_start_with_ansible_managed(role):
    for tpl in (role / "templates").glob("*.j2") if (role / "templates").is_dir() else []:
        assert tpl.read_text().startswith("{{ ansible_managed | comment }}"), tpl


# What each argument_specs type accepts as a literal default (bool is an int in Python: kept apart).
_SPEC_TYPES = {"str": (str,), "path": (str,), "int": (int,), "float": (int, float), "bool": (bool,),
               "list": (list,), "dict": (dict,)}


def _templated(value):
    return "{{" in repr(value) or "{%" in repr(value)


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_argument_specs_carry_the_defaults(role):
    """ansible-doc -t role shows each option's default: a literal default in defaults/main.yml is the spec's
    `default` (same value, a value of the spec's type); a templated one (derived from other variables) has no spec
    `default` and its description says what the default is."""
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    problems = []
    for name, value in defaults.items():
        spec = specs.get(name, {})
        description = spec.get("description") or ""
        description = " ".join(description) if isinstance(description, list) else description
        if _templated(value):
            if "default" in spec:
                problems.append(f"{name}: templated default {value!r} but the spec says default: {spec['default']!r}")
            if "default" not in description.lower():
                problems.append(f"{name}: templated default {value!r}, not named in the description")
            continue
        if "default" not in spec:
            problems.append(f"{name}: no default: in argument_specs (defaults/main.yml: {value!r})")
            continue
        if spec["default"] != value or type(spec["default"]) is not type(value):
            problems.append(f"{name}: argument_specs default {spec['default']!r} != defaults/main.yml {value!r}")
        accepted = _SPEC_TYPES.get(spec.get("type", "str"))
        if accepted and (not isinstance(value, accepted) or (bool not in accepted and isinstance(value, bool))):
            problems.append(f"{name}: default {value!r} is not a {spec.get('type')}")
        elements = _SPEC_TYPES.get(spec.get("elements", ""))
        if elements and isinstance(value, list) and not all(isinstance(v, elements) for v in value):
            problems.append(f"{name}: default {value!r} has elements that are not {spec['elements']}")
        chosen = value if isinstance(value, list) else [value]
        if spec.get("choices") and not all(v in spec["choices"] for v in chosen):
            problems.append(f"{name}: default {value!r} is not among choices {spec['choices']}")
    assert not problems, f"{role.name}:\n  " + "\n  ".join(problems)
