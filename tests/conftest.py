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
