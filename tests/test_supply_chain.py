"""Dependency ranges exclude releases published with a compromise, and none is installed."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]

#: (distribution, versions, the advisory): releases published with malicious code
COMPROMISED = [
    ("lightning", ("2.6.2", "2.6.3"), "GHSA-w37p-236h-pfx3"),
    ("pytorch-lightning", ("2.6.2", "2.6.3"), "GHSA-w37p-236h-pfx3"),
]


def requirements() -> list[Requirement]:
    """Every requirement of pyproject.toml: the dependencies and every extra's."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = [Requirement(r) for r in project["dependencies"]]
    return found + [Requirement(r) for extra in project.get("optional-dependencies", {}).values() for r in extra
                    if not r.startswith("experiments")]


def test_every_range_that_admits_a_compromised_package_excludes_its_releases_and_names_the_advisory():
    text = (ROOT / "pyproject.toml").read_text()
    for name, bad, advisory in COMPROMISED:
        ranges = [r for r in requirements() if r.name == name]
        assert ranges, f"{name} is not declared: its exclusion must be (it comes in with another dependency)"
        for requirement in ranges:
            assert not any(requirement.specifier.contains(v, prereleases=True) for v in bad), (requirement, bad)
        assert advisory in text  # the comment says why


def test_no_installed_distribution_is_a_compromised_release():
    for name, bad, advisory in COMPROMISED:
        try:
            installed = version(name)
        except PackageNotFoundError:
            continue
        assert installed not in bad, f"{name}=={installed} is a compromised release ({advisory}): reinstall"
        assert re.fullmatch(r"[0-9][0-9a-z.+-]*", installed)
