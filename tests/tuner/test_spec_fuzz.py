"""Property: any malformed spec gives exit 2, one line on stderr, and writes nothing."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tuner.commands.cli import main

VALID = {
    "name": "fuzz",
    "data": {"dataset": "digits"},
    "search": {"num_samples": 2},
    "scheduler": {"type": "asha", "max_epochs": 2},
    "space": {
        "model": {"name": "simple_cnn", "width": {"int": [8, 16]}},
        "optimizer": {"choice": {"sgd": {"lr": {"loguniform": [1e-3, 1e-1]}}, "adam": {}}},
    },
}

junk = st.one_of(
    st.text(max_size=20),
    st.integers(),
    st.floats(allow_nan=True),
    st.lists(st.integers(), max_size=3),
    st.none(),
)
identifiers = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)


@st.composite
def malformed_specs(draw) -> bytes:
    """A valid spec with one thing broken, or something that isn't a spec at all."""
    spec = yaml.safe_load(yaml.safe_dump(VALID))
    kind = draw(st.sampled_from(["unknown_key", "bad_type", "bad_range", "bad_space", "raw"]))
    if kind == "unknown_key":
        section = draw(st.sampled_from(["", "data", "search", "scheduler", "resources"]))
        key = draw(identifiers.filter(lambda k: k not in _known(section)))
        (spec.setdefault(section, {}) if section else spec)[key] = draw(junk)
    elif kind == "bad_type":
        path = draw(
            st.sampled_from(
                [
                    ("search", "num_samples"),
                    ("scheduler", "max_epochs"),
                    ("data", "val_fraction"),
                    ("resources", "cpu"),
                ]
            )
        )
        spec.setdefault(path[0], {})[path[1]] = draw(
            st.one_of(
                st.text(min_size=1, alphabet="xyz"),
                st.lists(st.integers(), min_size=1),
                st.integers(max_value=-1),
            )
        )
    elif kind == "bad_range":
        lo = draw(st.floats(min_value=1e-3, max_value=10))
        hi = draw(st.floats(min_value=-10, max_value=lo, exclude_max=True))
        spec["space"]["dropout_rate"] = {"uniform": [lo, hi]}
        spec["space"]["model"]["dropout"] = {"uniform": [lo, hi]}
    elif kind == "bad_space":
        spec["space"]["optimizer"] = draw(
            st.sampled_from(
                [
                    {"choice": []},
                    {"choice": {"nadam": {}}},
                    {"loguniform": [0, 1]},
                    {"uniform": [1, 2], "int": [1, 2]},
                    {"int": [1.5, 2]},
                    {"choice": {"sgd": 3}},
                ]
            )
        )
    else:
        return draw(
            st.one_of(
                st.binary(min_size=1, max_size=200),
                st.sampled_from([b"[1, 2", b"- a\n- b\n", b"just text", b"{{}"]),
            )
        )
    return yaml.safe_dump(spec).encode()


def _known(section: str) -> set[str]:
    from tuner.spec import document as spec_module

    model = spec_module.Spec
    if section:
        model = model.model_fields[section].annotation
    return set(model.model_fields)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(malformed_specs())
def test_malformed_specs_exit_2_with_one_line_and_write_nothing(content: bytes):
    with tempfile.TemporaryDirectory() as directory:
        spec = Path(directory) / "spec.yaml"
        spec.write_bytes(content)
        err = io.StringIO()
        cwd = os.getcwd()
        os.chdir(directory)
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = main(["run", str(spec)])
        finally:
            os.chdir(cwd)
        message = err.getvalue()
        assert code == 2, message
        assert message.count("\n") == 1 and message.startswith("tuner: error: "), message
        assert sorted(p.name for p in Path(directory).iterdir()) == ["spec.yaml"]
