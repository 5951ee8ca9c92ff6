"""The benchmark's arithmetic and structures (its timings are measured by ``make bench``)."""

import gc

import numpy as np
import pytest

from den_tf import bench, builders


def test_speedup_ratio_from_given_timings():
    # Plain network 2 s, structure 1 s at a quarter of the FLOPs: 2x of the ideal 4x.
    assert bench.speedup_ratio(2.0, 1.0, 0.25) == pytest.approx(0.5)
    assert bench.speedup_ratio(1.0, 0.25, 0.25) == pytest.approx(1.0)
    assert bench.speedup_ratio(1.0, 1.25, 1.0) == pytest.approx(0.8)
    for bad in ((0.0, 1.0, 0.5), (1.0, -1.0, 0.5), (1.0, 1.0, 0.0), (1.0, 1.0, 1.5)):
        with pytest.raises(ValueError):
            bench.speedup_ratio(*bad)


def test_partition_free_ratio_is_the_flops_weighted_harmonic_mean():
    # Half the blocks at a quarter of the FLOPs and ratio 0.5 (time 0.5 of the plain
    # network's), half at the full FLOPs and ratio 1 (time 1): FLOPs 0.625 in time 0.75.
    assert bench.partition_free_ratio([0.5, 0.5], [0.25, 1.0], [0.5, 1.0]) == pytest.approx(
        0.625 / 0.75)
    # Every level at one ratio: that ratio, whatever the shares.
    assert bench.partition_free_ratio([0.1, 0.6, 0.3], [0.01, 0.3, 1.0],
                                      [0.8] * 3) == pytest.approx(0.8)
    # A level nobody chose does not count.
    assert bench.partition_free_ratio([0.0, 1.0], [0.25, 1.0], [0.1, 0.9]) == pytest.approx(0.9)
    for bad in (([0.5, 0.5], [0.25], [0.5, 1.0]), ([0.5, 0.6], [0.25, 1.0], [0.5, 1.0]),
                ([1.5, -0.5], [0.25, 1.0], [0.5, 1.0]), ([0.5, 0.5], [0.25, 1.0], [0.0, 1.0])):
        with pytest.raises(ValueError):
            bench.partition_free_ratio(*bad)


@pytest.mark.parametrize("levels", [2, 3, 4, 5])
def test_selector_like_probabilities(levels):
    p = np.array(bench.selector_like_probabilities(levels))
    assert p.shape == (levels,) and p.sum() == pytest.approx(1.0) and (p > 0).all()
    if levels == 4:
        assert tuple(p) == bench.SELECTOR_LIKE
    if levels > 2:  # most of the mass between the lowest and the top level
        assert p[1:-1].sum() > 0.5


def test_mean_seconds_times_each_call_after_one_untimed(monkeypatch):
    """The timed calls run with the garbage collector held off (the untimed one with it on),
    and it is on again after."""
    calls = []
    clock = iter([10.0, 16.0])
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(clock))
    assert bench.mean_seconds(lambda i: calls.append((i, gc.isenabled())), 3) == pytest.approx(2.0)
    assert calls == [(0, True), (0, False), (1, False), (2, False)]
    assert gc.isenabled()
    monkeypatch.setattr(bench.time, "perf_counter", lambda: 0.0)
    gc.disable()  # a collector that was off stays off
    try:
        bench.mean_seconds(lambda i: None, 1)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_structure_kinds(tiny_evaluator):
    estimator = tiny_evaluator.estimator
    kinds = bench._structures(estimator, batch=6, count=3)
    h, n = estimator.levels, estimator.n_blocks
    assert sorted(kinds) == sorted(["full", *[f"level_{lv}" for lv in range(1, h - 1)],
                                    "random_uniform", "selector_like"])
    assert "level_0" in bench._structures(estimator, batch=6, count=3, lowest_level=0)
    assert (bench._structures(estimator, 6, 3, lowest_level=0)["level_0"][0].numpy() == 0).all()
    for structures in kinds.values():
        assert len(structures) == 3 and all(z.shape == (6, n) for z in structures)
    assert (kinds["full"][0].numpy() == h - 1).all()
    assert len({z.numpy().tobytes() for z in kinds["selector_like"]}) == 3


def _predictions(path, structure, task, **extra):
    np.savez(path, structure=np.asarray(structure), task=np.asarray(task), **extra)
    return str(path)


def test_load_trained_structures_checks_the_file(tmp_path):
    """A run's predictions.npz loads as int32 structures and tasks; a missing file or array,
    structures of another number of blocks and levels out of range fail, naming the file and
    what the network needs."""
    good = _predictions(tmp_path / "good.npz", [[0, 2, 1], [1, 1, 2]], [0, 1],
                        label=np.zeros(2))
    structures, tasks = bench.load_trained_structures(good, n_blocks=3, levels=3)
    assert structures.dtype == np.int32 and structures.tolist() == [[0, 2, 1], [1, 1, 2]]
    assert tasks.tolist() == [0, 1]
    with pytest.raises(ValueError, match="no file"):
        bench.load_trained_structures(str(tmp_path / "absent.npz"), 3, 3)
    np.savez(tmp_path / "baseline.npz", task=np.zeros(2), label=np.zeros(2))
    with pytest.raises(ValueError, match=r"has no \['structure'\]"):
        bench.load_trained_structures(str(tmp_path / "baseline.npz"), 3, 3)
    with pytest.raises(ValueError, match=r"shape \(2, 3\).*\[images, 4\]"):
        bench.load_trained_structures(good, n_blocks=4, levels=3)
    with pytest.raises(ValueError, match="a task per image"):
        bench.load_trained_structures(
            _predictions(tmp_path / "tasks.npz", [[0, 1, 1]] * 2, [0, 0, 1]), 3, 3)
    with pytest.raises(ValueError, match="levels 0 to 2; .* levels 0 to 1"):
        bench.load_trained_structures(good, n_blocks=3, levels=2)


def test_trained_kinds_are_numbered_in_the_order_given(tmp_path):
    """Each run's predictions become the kind ``trained_selector_<i>``, i from 1 in the order
    of the paths; a bad file among them fails as it fails alone."""
    first = _predictions(tmp_path / "a.npz", [[0, 1]], [0])
    second = _predictions(tmp_path / "b.npz", [[1, 1], [0, 0]], [1, 1])
    kinds = bench.trained_kinds([second, first], n_blocks=2, levels=2)
    assert list(kinds) == ["trained_selector_1", "trained_selector_2"]
    assert kinds["trained_selector_1"][0].tolist() == [[1, 1], [0, 0]]
    assert kinds["trained_selector_2"][1].tolist() == [0]
    assert bench.trained_kinds([], 2, 2) == {}
    with pytest.raises(ValueError, match="no file"):
        bench.trained_kinds([first, str(tmp_path / "absent.npz")], 2, 2)


def test_trained_structure_batches_by_hand():
    """Batches of consecutive images of one task, the tasks taking turns; a task's last
    partial batch is left out, and the batches repeat when more are asked for."""
    structures = np.arange(9)[:, None] * np.ones((1, 2), np.int32)  # row r: (r, r)
    tasks = np.array([0, 0, 0, 0, 0, 1, 1, 1, 2])
    batches = bench.trained_structure_batches(structures, tasks, batch=2, count=5)
    assert [b[:, 0].tolist() for b in batches] == [[0, 1], [5, 6], [2, 3], [0, 1], [5, 6]]
    assert [b[:, 0].tolist() for b in bench.trained_structure_batches(
        structures, tasks, batch=1, count=4)] == [[0], [5], [8], [1]]
    with pytest.raises(ValueError, match=r"no task has 6 images.*\[5, 3, 1\]"):
        bench.trained_structure_batches(structures, tasks, batch=6, count=1)


def test_strategy_lines_time_both_steps():
    """One line per strategy: one device, and MirroredStrategy over the two logical CPU
    devices of the test session, each with both steps' images/s."""
    from den_tf.datasets import synthetic

    config = builders.base_config()
    config.tasks = ",".join(t.name for t in synthetic.TASKS)
    config.model.backbone_args.update(depth=8, widths=(8, 8, 16), stem_channels=8)
    config.model.trunk_size = config.selector.trunk_size = 16
    config.selector.update(widths=(8,), stem_channels=8)
    lines = bench.strategies(config, batch_size=4, steps=1)
    assert set(lines) == {"one_device_1_replicas", "mirrored_2_replicas"}
    for line in lines.values():
        assert set(line) == {"estimator_step_images_per_s", "selector_step_images_per_s"}
        assert all(v > 0 for v in line.values())


@pytest.mark.parametrize("batch", [2, 1])
def test_inference_rows(tiny_evaluator, monkeypatch, batch):
    """One row per structure kind and path, each timed on its own path and structures, with
    FLOPs fractions from the cost table and the ratio from the (here fixed) timings: the
    reference takes 2 s a call, every other 1 s. Fixed-structure rows (a tuple per call, each
    traced before the timing) exist for the kinds whose batches share one structure."""
    import tensorflow as tf

    estimator = tiny_evaluator.estimator
    calls = []  # (path, highest level of the structure) of each timed function's call
    untimed = []  # the fixed path's structures, given before the timing
    fake = {path: (lambda x, z, path=path: calls.append((path, int(np.max(z)))) or tf.zeros([1]))
            for path in ("masked", "sliced", "folded", "fixed")}
    fixed = fake["fixed"]
    fake["fixed"] = lambda x, z: (untimed.append(z), fixed(x, z))[1]
    monkeypatch.setattr(bench, "_paths", lambda estimator, task: fake)
    timed = []

    def mean_seconds(fn, count):
        calls.clear()
        fn(0)
        timed.append(calls[0] if calls else ("plain", None))
        return 2.0 if len(timed) == 1 else 1.0

    monkeypatch.setattr(bench, "mean_seconds", mean_seconds)
    n = estimator.n_blocks
    trained = {"trained_selector_1": (np.ones((4, n), np.int32),  # every block at level 1
                                      np.zeros(4, np.int64))}
    rows = bench.inference(estimator, bench.plain.PlainNetwork(estimator), batch=batch, calls=2,
                           trained=trained)
    fixed_kinds = ["full", "level_1"] + (["random_uniform", "selector_like"] if batch == 1
                                         else []) + ["trained_selector_1"]
    assert list(rows) == ["plain_network", "full_masked", "full_sliced", "selector_like_sliced",
                          "full_folded", "level_1_folded", "random_uniform_folded",
                          "selector_like_folded", "trained_selector_1_folded"] + [
                              f"{k}_fixed" for k in fixed_kinds]
    top = estimator.levels - 1
    assert [path for path, _ in timed] == ["plain", "masked", "sliced", "sliced", "folded",
                                           "folded", "folded", "folded", "folded"] + [
                                               "fixed"] * len(fixed_kinds)
    assert timed[8] == ("folded", 1)
    assert rows["trained_selector_1_folded"]["flops_fraction"] == pytest.approx(
        rows["level_1_folded"]["flops_fraction"])
    assert [timed[i][1] for i in (1, 2, 4, 5, 9, 10)] == [top, top, top, 1, top, 1]
    assert all(isinstance(z, tuple) and len(z) == estimator.n_blocks for z in untimed)
    assert {(top,) * estimator.n_blocks, (1,) * estimator.n_blocks} <= set(untimed)
    for name, row in rows.items():
        assert row["speedup"] == pytest.approx(1.0 if name == "plain_network" else 2.0)
        assert row["ratio"] == pytest.approx(row["speedup"] * row["flops_fraction"])
    for name in ("full_masked", "full_sliced", "full_folded", "full_fixed"):
        assert rows[name]["flops_fraction"] == pytest.approx(1.0)
    assert 0 < rows["level_1_folded"]["flops_fraction"] < 1
    assert rows["level_1_fixed"]["flops_fraction"] == rows["level_1_folded"]["flops_fraction"]


def test_folding_alternates_the_paths_and_divides_their_times(tiny_evaluator, monkeypatch):
    """Rounds alternate which path goes first; the ratio is folded over sliced per round
    (here 1.5 s against 2.0 s every round: 0.75 with a zero-width interval)."""
    import tensorflow as tf

    order = []
    fake = {path: (lambda x, z, path=path: order.append(path) or tf.zeros([1]))
            for path in ("masked", "sliced", "folded")}
    monkeypatch.setattr(bench, "_paths", lambda estimator, task: fake)
    times = {"sliced": 2.0, "folded": 1.5}
    monkeypatch.setattr(bench, "mean_seconds", lambda fn, calls: (fn(0), times[order[-1]])[1])
    rows = bench.folding(tiny_evaluator.estimator, batch=2, calls=3, rounds=4)
    assert list(rows) == ["full", "level_1", "selector_like"]
    assert order[:4] == ["sliced", "folded", "folded", "sliced"]
    for row in rows.values():
        assert row["sliced_ms"] == pytest.approx(2000.0)
        assert row["folded_ms"] == pytest.approx(1500.0)
        assert row["folded_over_sliced_time"] == pytest.approx(0.75)
        assert row["folded_over_sliced_time_half_width"] == pytest.approx(0.0)


def _fake_choice_paths(monkeypatch, record):
    """The choice part's four paths replaced by ``record(path)``'s functions."""
    monkeypatch.setattr(bench, "_paths", lambda estimator, task: {
        "folded": record("folded"), "fixed": record("fixed")})
    monkeypatch.setattr(bench, "_compact_path", lambda estimator, task: record("compact"))
    monkeypatch.setattr(bench, "_plain_path", lambda reference, task, pieces=1: record(
        "plain" if pieces == 1 else f"plain_in_{pieces}"))


def test_choice_alternates_four_paths_and_takes_ratios_per_round(tiny_evaluator, monkeypatch):
    """At batch 1 the plain network, the folded path, the fixed graphs and the compact
    networks alternate (the order reversed every other round); each ratio is plain time / path
    time x FLOPs fraction per round (here 3.0 s, 2.0 s, 1.5 s and 1.2 s every round), and every
    fixed or compact structure is traced before the timing."""
    import tensorflow as tf

    estimator = tiny_evaluator.estimator
    order, traced = [], []

    def record(path):
        def run(x, z=None):
            order.append(path)
            if path in ("fixed", "compact"):
                assert isinstance(z, tuple) and len(z) == estimator.n_blocks
                traced.append((path, z))
            return tf.zeros([1])
        return run

    _fake_choice_paths(monkeypatch, record)
    times = {"plain": 3.0, "folded": 2.0, "fixed": 1.5, "compact": 1.2}

    timed_paths = []

    def timed(fn, calls):
        before = len(traced)
        fn(0)
        if order[-1] in ("fixed", "compact"):  # the structure was traced before the timing
            assert traced[-1] in traced[:before]
        timed_paths.append(order[-1])
        return times[order[-1]]

    monkeypatch.setattr(bench, "mean_seconds", timed)
    rows = bench.choice(estimator, reference=None, batch=1, calls=3, rounds=4)
    assert list(rows) == ["full", "level_0", "level_1", "selector_like"]
    assert timed_paths[:16] == ["plain", "folded", "fixed", "compact",
                                "compact", "fixed", "folded", "plain"] * 2
    assert len(timed_paths) == 4 * 16
    assert rows["full"]["flops_fraction"] == pytest.approx(1.0)
    assert 0 < rows["level_0"]["flops_fraction"] < rows["level_1"]["flops_fraction"] < 1
    for row in rows.values():
        assert row["plain_ms"] == pytest.approx(3000.0)
        assert row["folded_ratio"] == pytest.approx(1.5 * row["flops_fraction"])
        assert row["fixed_ratio"] == pytest.approx(2.0 * row["flops_fraction"])
        assert row["compact_ratio"] == pytest.approx(2.5 * row["flops_fraction"])
        assert row["compact_ms"] == pytest.approx(1200.0)
        for path in ("folded", "fixed", "compact"):
            assert row[f"{path}_ratio_half_width"] == pytest.approx(0.0)
    # A batch of mixed structures has no graph of its own: plain and folded alternate.
    timed_paths.clear()
    rows = bench.choice(estimator, reference=None, batch=4, calls=3, rounds=4)
    assert timed_paths == (["plain", "folded", "fixed", "compact",
                            "compact", "fixed", "folded", "plain"] * 2 * 3
                           + ["plain", "folded", "folded", "plain"] * 2)
    assert "fixed_ratio" not in rows["selector_like"]
    assert "compact_ratio" not in rows["selector_like"]
    assert "plain_in_chunks" not in rows  # a batch no larger than a chunk
    assert "plain_halves_ms" not in rows["full"]
    assert "folded_ratio_against_halves" not in rows["full"]
    row = rows["selector_like"]
    assert row["folded_ratio"] == pytest.approx(1.5 * row["flops_fraction"])


def test_choice_estimates_a_mixed_batch_from_the_uniform_levels_round_by_round(
        tiny_evaluator, monkeypatch):
    """The selector-like row's partition-free ratios: per round, the time a mixed batch would
    take from each uniform level's time in that round, weighted by the share of (instance,
    block) pairs at the level. Here the plain network takes 3 s; a uniform level l takes
    (l + 1) s on the folded path in even rounds and 2 (l + 1) s in odd ones, half that on the
    compact path."""
    import tensorflow as tf

    estimator = tiny_evaluator.estimator
    h = estimator.levels
    calls = []

    def record(path):
        def run(x, z=None):
            calls.append((path, None if z is None else int(np.max(z))))
            return tf.zeros([1])
        return run

    _fake_choice_paths(monkeypatch, record)
    rounds_seen = {}

    def timed(fn, count):
        fn(0)
        path, level = calls[-1]
        if path == "plain":
            return 3.0
        key = (path, level)
        r = rounds_seen[key] = rounds_seen.get(key, -1) + 1
        seconds = (level + 1) * (1 if r % 2 == 0 else 2)
        return seconds / 2 if path == "compact" else seconds

    monkeypatch.setattr(bench, "mean_seconds", timed)
    # Two trained selectors' structures, three batches of 5 each (instances with every block
    # at level 0 or every block at the top level): level shares 0.4 and 0.6, then 0.6 and 0.4.
    trained = {
        f"trained_selector_{i}": (np.tile(pattern, 3)[:, None]
                                  * np.ones((1, estimator.n_blocks), np.int32),
                                  np.zeros(15, np.int64))
        for i, pattern in ((1, [0, h - 1, h - 1, 0, h - 1]), (2, [0, h - 1, 0, 0, h - 1]))}
    rows = bench.choice(estimator, reference=None, batch=5, calls=3, rounds=4, trained=trained)
    assert list(rows) == ["full", *[f"level_{lv}" for lv in range(h - 1)], "selector_like",
                          "trained_selector_1", "trained_selector_2"]
    mixed = bench._structures(estimator, 5, 3)["selector_like"]
    levels = np.concatenate([z.numpy().ravel() for z in mixed])
    fractions = [rows[f"level_{level}"]["flops_fraction"] for level in range(h - 1)]
    fractions.append(1.0)
    for kind, shares in (("selector_like", [np.mean(levels == level) for level in range(h)]),
                         ("trained_selector_1", [0.4] + [0.0] * (h - 2) + [0.6]),
                         ("trained_selector_2", [0.6] + [0.0] * (h - 2) + [0.4])):
        flops = sum(s * f for s, f in zip(shares, fractions))
        for path, scale in (("folded", 1.0), ("compact", 0.5)):
            estimates = []
            for slow in (1, 2, 1, 2):
                seconds = sum(s * (level + 1) * slow * scale for level, s in enumerate(shares))
                estimates.append(flops * 3.0 / seconds)
            assert rows[kind][f"partition_free_{path}_ratio"] == pytest.approx(
                np.mean(estimates))
            assert rows[kind][f"partition_free_{path}_ratio_half_width"] > 0
    assert "partition_free_folded_ratio" not in rows["level_1"]


def test_choice_takes_ratios_against_the_plain_network_in_halves_above_the_chunk_size(
        tiny_evaluator, monkeypatch):
    """Above ``CHUNK`` images the plain network also runs in two halves in one graph in every
    round, and each path's ratio is also taken against it; and the plain network runs the
    batch in chunks (the last one the remainder), alternated with the whole batch. Here a
    whole batch takes 3 s on the plain network, 2.7 s in halves and 2.4 s in chunks; the
    folded path 2 s, the fixed graph 1.5 s and the compact network 1.2 s."""
    import tensorflow as tf

    estimator = tiny_evaluator.estimator
    sizes = []

    def record(path):
        def run(x, z=None):
            sizes.append((path, int(x.shape[0])))
            return tf.zeros([1])
        return run

    _fake_choice_paths(monkeypatch, record)
    batch = 2 * bench.CHUNK + 6
    times = {"plain": 3.0, "plain_in_2": 2.7, "folded": 2.0, "fixed": 1.5, "compact": 1.2}
    timed_paths = []

    def timed(fn, calls):
        sizes.clear()
        fn(0)
        if sizes == [("plain", bench.CHUNK)] * 2 + [("plain", 6)]:
            return 2.4
        (path, size), = sizes
        assert size == batch
        timed_paths.append(path)
        return times[path]

    monkeypatch.setattr(bench, "mean_seconds", timed)
    rows = bench.choice(estimator, reference=None, batch=batch, calls=2, rounds=4)
    assert timed_paths[:10] == ["plain", "plain_in_2", "folded", "fixed", "compact",
                                "compact", "fixed", "folded", "plain_in_2", "plain"]
    for kind in ("full", "level_0", "level_1", "selector_like"):
        row = rows[kind]
        assert row["plain_ms"] == pytest.approx(3000.0)
        assert row["plain_halves_ms"] == pytest.approx(2700.0)
        fraction = row["flops_fraction"]
        assert row["folded_ratio"] == pytest.approx(1.5 * fraction)
        assert row["folded_ratio_against_halves"] == pytest.approx(1.35 * fraction)
        assert row["folded_ratio_against_halves_half_width"] == pytest.approx(0.0)
    assert rows["level_1"]["fixed_ratio_against_halves"] == pytest.approx(
        1.8 * rows["level_1"]["flops_fraction"])
    assert rows["level_1"]["compact_ratio_against_halves"] == pytest.approx(
        2.25 * rows["level_1"]["flops_fraction"])
    assert "fixed_ratio_against_halves" not in rows["selector_like"]
    chunks = rows["plain_in_chunks"]
    assert chunks["chunk"] == bench.CHUNK
    assert chunks["whole_ms"] == pytest.approx(3000.0)
    assert chunks["chunks_ms"] == pytest.approx(2400.0)
    assert chunks["chunks_over_whole_time"] == pytest.approx(0.8)
    assert chunks["chunks_over_whole_time_half_width"] == pytest.approx(0.0)
    assert "halves_ms" not in chunks


def test_plain_path_in_pieces_computes_the_whole_batch(tiny_evaluator):
    """The plain network on two parts of a batch in one graph (an odd batch: 4 and 3
    images) gives the whole batch's logits, in order."""
    import tensorflow as tf

    estimator = tiny_evaluator.estimator
    reference = bench.plain.PlainNetwork(estimator)
    bench.plain.copy_weights(estimator, reference)
    images = tf.random.stateless_normal([7, 16, 16, 3], seed=(1, 2))
    whole = bench._plain_path(reference, 0)(images).numpy()
    halves = bench._plain_path(reference, 0, pieces=2)(images).numpy()
    assert halves.shape == whole.shape == (7, 5)
    np.testing.assert_allclose(halves, whole, rtol=1e-5, atol=1e-5)
    assert not np.allclose(whole[:3], whole[4:])  # the halves differ: order matters


def test_compact_path_runs_the_structures_compact_network(tiny_evaluator):
    """The compact path computes the estimator's function under the structure it is given."""
    import tensorflow as tf

    estimator = tiny_evaluator.estimator
    size = estimator.tasks[0].input_size
    images = tf.random.normal([2, size, size, 3], seed=3)
    compact = bench._compact_path(estimator, 0)
    for z in [(1,) * estimator.n_blocks, tuple(i % estimator.levels
                                               for i in range(estimator.n_blocks))]:
        expected = estimator(images, task=0, structure=z, execution="sliced")
        np.testing.assert_allclose(compact(images, z), expected, atol=1e-4)


def test_exported_speed_times_the_signature_for_each_batch(monkeypatch):
    """Per batch size, task 0's exported signature (at batch 1 the one-image signature) and
    the same function in process, each timed on its batch, and their time ratio from the
    (here given) timings: 3 s a call exported, 2 s in process."""
    from den_tf import backbones
    from den_tf.estimator import Estimator
    from den_tf.selector import Selector
    from den_tf.tasks import SYNTHETIC_TASKS

    tasks = list(SYNTHETIC_TASKS[:2])
    estimator = Estimator(backbones.wrn(depth=8, widths=(8, 8, 16), stem_channels=8), tasks,
                          levels=3, trunk_size=16)
    selector = Selector(tasks, estimator.n_blocks, estimator.levels, widths=(8,),
                        trunk_size=16, stem_channels=8)
    logits = []

    def given_seconds(run, calls):
        logits.append(run(0))
        return 3.0 if len(logits) % 2 else 2.0

    monkeypatch.setattr(bench, "mean_seconds", given_seconds)
    result = bench.exported_speed(estimator, selector, [2, 1], lambda batch: 1)
    classes = tasks[0].num_classes
    assert [x.shape for x in logits] == [(2, classes), (2, classes), (1, classes), (1, classes)]
    for batch in (2, 1):
        row = dict(result[f"batch_{batch}"])
        name = bench.export.signature_name(tasks[0].name)
        assert row.pop("signature") == name + ("_single" if batch == 1 else "")
        assert row == pytest.approx({
            "exported_images_per_s": batch / 3.0, "in_process_images_per_s": batch / 2.0,
            "exported_over_in_process_time": 1.5})
    np.testing.assert_allclose(logits[0], logits[1], atol=1e-5)
    np.testing.assert_allclose(logits[2], logits[3], atol=1e-5)
