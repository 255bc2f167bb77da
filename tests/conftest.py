import os

# Sealed tests: no third-party plugins from the environment, only the built-ins.
os.environ["CERTIFY_LOAD_PLUGINS"] = ""

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from certifier import hookimpl  # noqa: E402
from certifier.plugins import pm  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture
def register_methods():
    """Register throwaway smoothing methods for one test: ``register_methods(A, B)``."""
    plugins = []

    def register(*methods, name=None):
        class ThrowawayPlugin:
            __name__ = name or "throwaway-" + "-".join(m.name for m in methods)

            @hookimpl
            def register_methods(self, register):
                for method in methods:
                    register(method)

        plugin = ThrowawayPlugin()
        pm.register(plugin, name=plugin.__name__)
        plugins.append(plugin)
        return plugin

    try:
        yield register
    finally:
        for plugin in plugins:
            pm.unregister(plugin)


@pytest.fixture(scope="session")
def fashion():
    path = SHARED / "data" / "fashion_mnist.npz"
    if not path.exists():
        pytest.skip(f"{path} not found")
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray instance (2 CPUs) for every test that certifies on Ray; its address.
    Started by the first such test, stopped at the end of the session."""
    import logging

    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        ray.shutdown()
    context = ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    try:
        yield context.address_info["gcs_address"]
    finally:
        ray.shutdown()
