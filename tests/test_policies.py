"""Policy declarations: what each policy declares (kind, knobs), that everything is generated
from them, and that a registered subclass keeps its parent's kind."""

from __future__ import annotations

import math

import numpy as np
import pytest

from batchlab.errors import InputError
from batchlab.plots import step_kinds
from batchlab.simulate import (
    POLICIES,
    ContinuousPolicy,
    Knob,
    LinearStepTime,
    Policy,
    StaticPolicy,
    make_policy,
    register_policy,
    simulate,
)
from batchlab.simulate.policies import explorer_options, explorer_sliders

STEP = LinearStepTime(10, per_token_ms=0.1, per_seq_ms=1)


def test_builtins_declare_their_kind_and_knobs():
    assert list(POLICIES) == ["static", "dynamic", "adaptive", "continuous"]
    kinds = {name: cls.iteration_level for name, cls in POLICIES.items()}
    assert kinds == {"static": False, "dynamic": False, "adaptive": False, "continuous": True}
    for cls in POLICIES.values():
        names = [k.name for k in cls.knobs]
        assert len(set(names)) == len(names) and all(k.help for k in cls.knobs)
        policy = cls()
        assert list(policy.options()) == names  # options in declaration order
        assert policy.options() == {k.name: k.check(k.default) for k in cls.knobs}
    assert make_policy("adaptive").options()["target_tpot_ms"] == 50.0
    assert "target_latency_ms" not in make_policy("adaptive").options()


def test_knobs_check_their_values():
    k = Knob("x", int, 1, "a count", min_val=1)
    assert k.check(3) == 3 and k.check(16.0) == 16 and isinstance(k.check(np.int64(2)), int)
    for bad in (0, 2.5, True, "3", None, math.nan):
        with pytest.raises(InputError) as err:
            k.check(bad)
        assert err.value.field == "x"
    f = Knob("w", float, 0.5, "a share", min_val=0, max_val=1, include_boundaries="neither")
    for bad in (0, 1, 1.5, -0.1):
        with pytest.raises(InputError, match="in \\(0, 1\\)"):
            f.check(bad)
    assert Knob("t", float, None, "ms", min_val=0, allow_none=True).check(None) is None
    assert Knob("m", float, 1.0, "ms", min_val=0, allow_inf=True).check(math.inf) == math.inf
    edges = Knob("e", int, None, "edges", min_val=1, allow_none=True, sequence=True)
    assert edges.check([64, 128.0]) == (64, 128) and edges.check(None) is None
    with pytest.raises(InputError, match="list"):
        edges.check(64)


def test_options_are_checked_against_the_declarations():
    with pytest.raises(InputError, match="valid options: batch_size, timeout_ms") as err:
        make_policy("static", max_num_seqs=4)
    assert err.value.field == "max_num_seqs"
    with pytest.raises(InputError) as err:
        make_policy("continuous", watermark=1.0)
    assert err.value.field == "watermark"
    with pytest.raises(InputError, match="unknown policy"):
        make_policy("fifo")


def _df(n=40, seed=1):
    rng = np.random.default_rng(seed)
    import pandas as pd

    return pd.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(n)],
            "prompt_len": rng.integers(5, 300, n),
            "gen_len": rng.integers(1, 40, n),
            "arrival_s": np.sort(rng.uniform(0, 2, n)),
        }
    )


def test_a_registered_subclass_of_continuous_is_iteration_level():
    @register_policy
    class Greedy(ContinuousPolicy):
        """Continuous batching under another name (a user's policy)."""

        name = "greedy-test"

    try:
        assert POLICIES["greedy-test"] is Greedy and Greedy.iteration_level
        res = simulate(_df(), "greedy-test", step_time=STEP, kv_blocks=1000)
        ref = simulate(_df(), "continuous", step_time=STEP, kv_blocks=1000)
        assert res.padded is False
        assert math.isnan(res.summary()["batch_efficiency"])  # not a padded batch's 1.0
        assert "padded batch" not in set(step_kinds(res))
        np.testing.assert_array_equal(res.requests["finish_ms"], ref.requests["finish_ms"])
        # ...and it is simulated as the policy it extends
    finally:
        del POLICIES["greedy-test"]


def test_a_registered_subclass_of_static_is_padded_and_can_add_knobs():
    @register_policy
    class Fixed(StaticPolicy):
        """Static batching whose batch size is a multiple of ``quantum``."""

        name = "fixed-test"
        knobs = (*StaticPolicy.knobs, Knob("quantum", int, 2, "batch-size step", min_val=1))

        def validate(self):
            if self.batch_size % self.quantum:
                raise InputError("batch_size must be a multiple of quantum", field="quantum")

    try:
        res = simulate(_df(), "fixed-test", step_time=STEP, kv_blocks=1000, batch_size=4)
        assert res.padded is True and res.options == {
            "batch_size": 4,
            "timeout_ms": None,
            "quantum": 2,
        }
        assert 0 < res.summary()["batch_efficiency"] <= 1
        assert set(step_kinds(res)) == {"padded batch"}
        with pytest.raises(InputError, match="multiple"):
            make_policy("fixed-test", batch_size=3)
    finally:
        del POLICIES["fixed-test"]


def test_register_policy_refuses_bad_declarations():
    class Nameless(Policy):
        pass

    with pytest.raises(InputError, match="name"):
        register_policy(Nameless)

    class Twice(Policy):
        name = "twice-test"
        knobs = (Knob("a", int, 1, "a"), Knob("a", int, 2, "again"))

    with pytest.raises(InputError, match="unique"):
        register_policy(Twice)

    class BadDefault(Policy):
        name = "bad-default-test"
        knobs = (Knob("a", int, 0, "must be >= 1", min_val=1),)

    with pytest.raises(InputError):
        register_policy(BadDefault)
    assert not {"twice-test", "bad-default-test"} & set(POLICIES)


def test_explorer_controls_come_from_the_declarations():
    sliders = explorer_sliders(["static", "dynamic", "adaptive", "continuous"])
    assert list(sliders) == [
        "max_num_seqs",
        "max_wait_ms",
        "max_num_batched_tokens",
        "chunked_prefill",
    ]
    assert sliders["max_num_seqs"][1] == [
        ("static", "batch_size"),
        ("dynamic", "max_batch_size"),
        ("adaptive", "max_batch_size"),
        ("continuous", "max_num_seqs"),
    ]
    assert sliders["max_wait_ms"][1] == [
        ("static", "timeout_ms"),
        ("dynamic", "max_wait_ms"),
        ("adaptive", "max_wait_ms"),
    ]
    values = {"max_num_seqs": 6, "max_wait_ms": 30.0, "chunked_prefill": True}
    assert explorer_options("static", values) == {"batch_size": 6, "timeout_ms": 30.0}
    assert explorer_options("continuous", values) == {"max_num_seqs": 6, "chunked_prefill": True}
