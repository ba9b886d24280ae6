"""deploy/constraints.txt: the image installs every dependency, direct or not, at a pinned version."""

from __future__ import annotations

import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy import DEPLOY, DOCKERFILE, ROOT

CONSTRAINTS = DEPLOY / "constraints.txt"


def _pins() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"deploy/constraints.txt: not name==version: {line!r}"
            pins[canonicalize_name(name)] = version
    return pins


def test_every_direct_dependency_is_pinned_within_its_range():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = _pins()
    extras = project["optional-dependencies"]
    runtime = project["dependencies"] + extras["worker"] + extras["sink"] + extras["replay"]
    for requirement in map(Requirement, runtime):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in deploy/constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"deploy/constraints.txt pins {requirement.name}=={pins[name]}, outside pyproject.toml's {requirement.specifier}"
        )
    test_only = {canonicalize_name(Requirement(text).name) for text in extras["test"]}
    assert not (test_only | {"tickwire"}) & pins.keys()


def test_the_image_installs_with_the_constraints():
    text = DOCKERFILE.read_text()
    assert re.search(r"^COPY .*\bdeploy/constraints\.txt\b", text, re.MULTILINE)
    assert re.search(r"\bpip install -c constraints\.txt '\.\[all\]'", text)
