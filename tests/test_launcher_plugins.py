"""The launcher plugins Hydra discovers import without the optional extras."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_the_ray_launcher_without_ray_imports_and_names_what_to_install() -> None:
    # A fresh interpreter in which Hydra's Ray launcher cannot be imported (as after `make
    # install` alone): Hydra's scan of the plugins must not warn, and choosing the launcher
    # must say what is missing.
    script = textwrap.dedent(
        """
        import sys, warnings
        sys.modules["hydra_plugins.hydra_ray_launcher"] = None  # import fails: not installed
        warnings.simplefilter("error")
        from hydra.core.plugins import Plugins
        from hydra.plugins.launcher import Launcher
        names = [c.__name__ for c in Plugins.instance().discover(Launcher)]
        assert "ResilientRayLauncher" in names, names
        from hydra_plugins.xent_tf_launcher.ray_launcher import ResilientRayLauncher
        try:
            ResilientRayLauncher(ray={}, memory_mb=1)
        except ImportError as error:
            print(error)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    message = done.stdout.strip()
    assert message.startswith("hydra/launcher=ray needs Ray and Hydra's Ray launcher (")
    assert "hydra_plugins.hydra_ray_launcher" in message
    assert message.endswith("): make install-scale")
