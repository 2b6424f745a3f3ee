"""Debian binaries the tests drive for real.

A test that needs one calls :func:`binary`: it gets the path, or the test skips with the
package to install, or, when the binary's REQUIRE_* variable is 1 (as `.ci/run` sets), fails.
"""

from __future__ import annotations

import os
import shutil

import pytest

# binary -> (environment variable that makes it mandatory, Debian package that ships it)
PACKAGES: dict[str, tuple[str, str]] = {
    "prometheus": ("REQUIRE_PROMETHEUS", "prometheus"),
    "promtool": ("REQUIRE_PROMETHEUS", "prometheus"),
    "prometheus-alertmanager": ("REQUIRE_PROMETHEUS", "prometheus-alertmanager"),
    "amtool": ("REQUIRE_PROMETHEUS", "prometheus-alertmanager"),
    "prometheus-blackbox-exporter": ("REQUIRE_BLACKBOX", "prometheus-blackbox-exporter"),
    "nginx": ("REQUIRE_NGINX", "nginx-light"),
    "chromium": ("REQUIRE_BROWSER", "chromium"),
    "chromedriver": ("REQUIRE_BROWSER", "chromium-driver"),
    "kubectl": ("REQUIRE_KUBECTL", "kubernetes-client"),
}


def binary(name: str) -> str:
    """The binary's path; skip (or fail under its REQUIRE_* variable) when it is absent."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is not None:
        return path
    env, package = PACKAGES[name]
    if os.environ.get(env) == "1":
        pytest.fail(f"{name} is not installed (Debian package {package}) but {env}=1")
    pytest.skip(f"{name} is not installed: apt-get install {package} (or set {env}=1 to fail)")
