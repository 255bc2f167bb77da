"""The smoothing methods and commands that ship with onnx-certifier.

Each module is a plugin registered through the ``certifier`` entry-point group,
exactly as a third-party plugin would be.
"""
