"""Project-level promises: the plugin folder is not a package, compose is valid, CI runs the README's tests."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import ROOT


def test_transformers_folder_is_not_an_importable_package():
    assert not (ROOT / "transformers/__init__.py").exists()
    spec = importlib.util.find_spec("transformers")
    # if something named `transformers` is importable, it is not our plugin folder
    assert spec is None or spec.origin is None or not spec.origin.startswith(str(ROOT / "transformers"))
    assert (ROOT / "transformers/README.md").is_file()


def test_compose_file_has_the_broker_with_management_and_the_gateway():
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    rabbit = data["services"]["rabbitmq"]
    assert (
        "management" in rabbit["image"]
        and "15672:15672" in rabbit["ports"]
        and "5672:5672" in rabbit["ports"]
    )
    gateway = data["services"]["gateway"]
    assert gateway["build"] == "." and gateway["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    assert gateway["environment"]["CISIS_AMQP_URL"].startswith("amqp://")


def test_docker_compose_config_accepts_the_file():
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose is not installed (.ci/run installs Debian's when it can)")
    result = subprocess.run(
        [exe, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci/run").read_text()
    assert "make test" in ci
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
