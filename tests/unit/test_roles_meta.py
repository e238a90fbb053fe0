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
