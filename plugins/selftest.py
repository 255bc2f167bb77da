"""``certify selftest``: check a smoothing method's radii against exact ones on closed-form models."""

from __future__ import annotations

import json

import click

from certifier import hookimpl, method_options
from certifier.testing import DEFAULTS, check_soundness


@hookimpl
def register_commands(cli):
    @cli.command(name="selftest")
    @method_options(defaults=None)
    @click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True),
                  help=f"Certification alpha, large enough to see failures (default {DEFAULTS['alpha']}).")
    @click.option("-n", "n", type=click.IntRange(min=1), help=f"Estimation samples per input (default {DEFAULTS['n']}).")
    @click.option("--n0", type=click.IntRange(min=1), help=f"Selection samples per input (default {DEFAULTS['n0']}).")
    @click.option("--inputs", type=click.IntRange(min=1),
                  help=f"Inputs certified, spread over the checks and shapes (default {DEFAULTS['inputs']}).")
    @click.option("--thorough", is_flag=True, help="Five times the inputs and four times the samples.")
    @click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    def selftest_command(plugin, sigma, options, alpha, n, n0, inputs, thorough, seed, as_json):
        """Check a smoothing method's certificates against exact radii.

        Certifies small ONNX classifiers whose smoothed classifier's exact robust radius is
        known (linear, mean-intensity and one-pixel classifiers in closed form; every input
        within reach, by brute force, for exact methods), as the method declares, and counts
        violations: certificates for the wrong class or beyond the exact radius. A randomized
        method may have them at rate alpha (a one-sided binomial test); an exact one none.
        Exit status 1 when the method fails, crashes or declares no check. A method that
        needs a noise level and gets none certifies with sigma 0.25.

        \b
            certify selftest --plugin rs --sigma 0.25
            certify selftest --plugin uniform -o lambda 0.5 --thorough --json
        """
        report = check_soundness(plugin, sigma=sigma, options=dict(options), alpha=alpha, n=n, n0=n0, inputs=inputs,
                                 thorough=thorough, seed=seed)
        click.echo(json.dumps(report.as_dict(), indent=2) if as_json else report.table())
        if not report.passed:
            raise click.exceptions.Exit(1)
