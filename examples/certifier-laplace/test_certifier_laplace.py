"""The plugin's own tests: soundness is the kit's one call."""

from certifier.testing import assert_sound

import certifier_laplace


def test_laplace_is_sound():
    assert_sound("laplace", register=certifier_laplace)


def test_laplace_is_sound_with_its_own_scale():
    assert_sound("laplace", register=certifier_laplace, options={"scale": 0.1})
