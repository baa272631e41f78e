"""The regularisation small data sets need: `data.augment`'s kinds and strengths, label smoothing
and `train.ema`. Properties of each transform over several shapes, seeds and strengths; the
averaged weights against the average worked out by hand; a preempted run that keeps its average."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, run_cli
from trainer import config
from trainer.data import augment_ops, augment_spec
from trainer.data.pipeline import PipelineOptions, make_dataset
from trainer.data.source import Source, View, array_shard
from trainer.errors import UserError
from trainer.kerasflavor import keras, tf
from trainer.training import ema, soft_labels

NEW = ("translate", "zoom", "rotate", "brightness", "contrast", "noise", "mixup", "cutmix")
SHAPES = [(6, 9, 7, 1), (5, 8, 8, 3), (4, 3, 12, 2)]


def _apply(x, y, pairs, seed=1, index=0, classes=None):
    out, labels = augment_ops.apply(tf.constant(x), tf.constant(y), tuple(pairs), seed,
                                    tf.constant(index, tf.int64), classes or len(y))
    return out.numpy(), labels.numpy()


def _batch(shape, seed=0):
    x = np.random.default_rng(seed).normal(2.0, 3.0, size=shape).astype(np.float32)
    return x, np.arange(shape[0], dtype=np.int64)  # every sample its own class


# -- the config ----------------------------------------------------------------------------------

def test_augment_items_take_names_or_strengths_and_refuse_what_does_not_fit():
    assert augment_spec.parse(["rot90", "flip_up_down"]) == (("rot90", 1.0), ("flip_up_down", 1.0))
    assert augment_spec.parse(["rotate", {"zoom": 0.2, "mixup": 0}]) == (
        ("rotate", 10.0), ("zoom", 0.2), ("mixup", 0.0))
    loaded = config.load(None, ["data.augment=[flip_left_right, rotate: 15]"])
    assert augment_spec.parse(loaded.data.augment) == (("flip_left_right", 1.0), ("rotate", 15.0))
    for bad, said in ((["rotat"], "did you mean 'rotate'"), ([{"zoom": 0.9}], "from 0 to 0.5"),
                      ([{"rot90": 2}], "no strength"), (["noise", "noise"], "twice"),
                      ([{"noise": "lots"}], "strength"), ([3], "a string or a mapping")):
        with pytest.raises(UserError, match=said):
            config.from_dict({"data": {"augment": bad}})
    for key, value in (("data.augment", ["mixup"]), ("data.augment", [{"cutmix": 1}]),
                       ("train.label_smoothing", 0.1)):
        section, name = key.split(".")
        with pytest.raises(UserError, match="classification only"):
            config.from_dict({"task": "regression", section: {name: value}})


def test_a_bad_strength_is_one_error_line(tmp_path):
    done = run_cli("--output_dir", str(tmp_path), "--set", "data.augment=[zoom: 2]")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: invalid value 2 for 'data.augment' (zoom), --set, expected a strength from 0 to 0.5"]


# -- the transforms ------------------------------------------------------------------------------

def test_every_kind_at_strength_0_is_the_identity():
    for shape in SHAPES:
        x, y = _batch(shape)
        for name in NEW:
            out, labels = _apply(x, y, [(name, 0.0)])
            assert np.array_equal(out, x), name
            expected = np.eye(len(y))[y] if name in augment_spec.MIXING else y
            assert np.array_equal(labels, expected), name


def test_transforms_keep_shape_and_dtype_change_the_images_and_follow_the_seed():
    for shape in SHAPES:
        x, y = _batch(shape, seed=sum(shape))
        for name in NEW:
            pairs = augment_spec.parse([name])
            out, _ = _apply(x, y, pairs)
            assert out.shape == x.shape and out.dtype == np.float32, name
            assert np.isfinite(out).all() and not np.array_equal(out, x), name
            assert np.array_equal(out, _apply(x, y, pairs)[0]), name
            for other in (dict(seed=2), dict(index=1)):  # another seed, another batch
                assert not np.array_equal(out, _apply(x, y, pairs, **other)[0]), (name, other)


def test_mixup_blends_each_image_with_one_partner_by_its_label_weights():
    for seed in range(4):
        x, y = _batch((8, 5, 6, 2), seed)
        out, labels = _apply(x, y, [("mixup", 0.4 + seed)], seed=seed)
        assert np.allclose(labels.sum(1), 1, atol=1e-6) and (labels >= 0).all()
        for i in range(len(y)):
            own = labels[i, i]
            partner = [j for j in np.flatnonzero(labels[i] > 0) if j != i] or [i]
            assert len(partner) == 1 and 0 <= own <= 1
            j = partner[0]
            assert np.allclose(out[i], own * x[i] + (1 - own) * x[j], atol=1e-5)


def test_cutmix_pastes_one_box_whose_area_is_the_partner_label_weight():
    n, h, w = 8, 9, 12
    x = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None], (n, h, w, 1)).copy()
    y = np.arange(n)
    pasted_any = False
    for seed in range(6):
        out, labels = _apply(x, y, [("cutmix", 1.0)], seed=seed)
        assert np.allclose(labels.sum(1), 1, atol=1e-6)
        for i in range(n):
            changed = out[i, ..., 0] != i
            rows, cols = np.flatnonzero(changed.any(1)), np.flatnonzero(changed.any(0))
            if changed.any():  # one rectangle, from one partner
                pasted_any = True
                assert changed.sum() == len(rows) * len(cols)
                assert len(np.unique(out[i, ..., 0][changed])) == 1
                j = int(out[i, ..., 0][changed][0])
                assert math.isclose(labels[i, j], changed.mean(), rel_tol=1e-6)
            assert math.isclose(labels[i, i], 1 - changed.mean(), rel_tol=1e-6, abs_tol=1e-7)
    assert pasted_any


def test_mixup_with_cutmix_gives_each_sample_one_of_them():
    x, y = _batch((16, 6, 6, 1))
    out, labels = _apply(x, y, augment_spec.parse(["mixup", "cutmix"]), seed=3)
    boxes = 0
    for i in range(len(y)):
        j = int(np.argmax(np.where(np.arange(len(y)) == i, -1, labels[i])))
        same = np.isclose(out[i], x[i]) | np.isclose(out[i], x[j])
        boxes += bool(same.all()) and labels[i, i] < 1
    assert 0 < boxes < len(y)


def test_augmented_batches_repeat_from_the_seed_in_the_parallel_pipeline():
    x, y = _batch((40, 8, 8, 1))
    view = View(Source([array_shard(x, y % 3, "a")]))
    spec = augment_spec.parse(["flip_left_right", "translate", "zoom", "rotate", "brightness",
                               "contrast", "noise", "mixup", "cutmix"])

    def epochs(seed):
        opts = PipelineOptions(batch_size=8, shuffle=True, seed=seed, augment=spec, classes=3)
        return [(a.numpy(), b.numpy()) for a, b in make_dataset(view, y % 3, opts, epochs=1)]

    first, again, other = epochs(5), epochs(5), epochs(6)  # each read in parallel threads
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
               for a, b in zip(first, again))
    assert not np.array_equal(first[0][0], other[0][0])
    assert first[0][1].shape == (8, 3) and np.allclose(first[0][1].sum(1), 1, atol=1e-6)


# -- label smoothing -----------------------------------------------------------------------------

def test_the_loss_takes_indices_or_probabilities_and_smooths_as_asked():
    rng = np.random.default_rng(0)
    for classes in (2, 5):
        pred = tf.constant(rng.dirichlet(np.ones(classes), 6), tf.float32)
        y = rng.integers(0, classes, 6)
        onehot = np.eye(classes)[y]
        plain = keras.losses.SparseCategoricalCrossentropy()(y, pred).numpy()
        assert math.isclose(soft_labels.SoftCrossentropy()(y, pred).numpy(), plain, rel_tol=1e-5)
        assert math.isclose(soft_labels.SoftCrossentropy()(onehot, pred).numpy(), plain,
                            rel_tol=1e-5)
        for s in (0.1, 0.3):
            smoothed = onehot * (1 - s) + s / classes
            want = float(np.mean(-(smoothed * np.log(pred.numpy())).sum(1)))
            got = soft_labels.SoftCrossentropy(s)(y, pred).numpy()
            assert math.isclose(got, want, rel_tol=1e-5)
        accuracy = soft_labels.metric("accuracy")
        assert accuracy.__name__ == "accuracy"
        assert np.array_equal(accuracy(onehot * 0.7 + 0.3 / classes, pred).numpy(),
                              accuracy(y, pred).numpy())


# -- EMA -----------------------------------------------------------------------------------------

def _one_weight_model(momentum):
    """y = w * x, loss = mean(y): with x = 1 each SGD step lowers w by the learning rate."""
    model = keras.Sequential([keras.layers.Dense(1, use_bias=False, kernel_initializer="ones",
                                                 input_shape=(1,))])
    model.compile(optimizer=keras.optimizers.SGD(0.5, **ema.optimizer_options(momentum)),
                  loss=lambda y_true, y_pred: tf.reduce_mean(y_pred))
    return model


def test_validation_and_the_final_model_use_the_average_worked_out_by_hand():
    from trainer.callbacks.ema import AveragedValidation

    m, lr, steps = 0.75, 0.5, 3
    model = _one_weight_model(m)
    x, y = np.ones((steps, 1), np.float32), np.zeros((steps, 1), np.float32)
    seen = []

    class Weights(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(float(self.model.get_weights()[0][0, 0]))

    history = model.fit(x, y, batch_size=1, epochs=2, validation_data=(x[:1], y[:1]),
                        callbacks=[AveragedValidation(), Weights()], verbose=0, shuffle=False)
    raw, average = 1.0, 1.0  # the average starts at the weight the first step finds
    for epoch in range(2):
        for _ in range(steps):
            raw -= lr
            average = m * average + (1 - m) * raw
        assert math.isclose(seen[epoch], raw, rel_tol=1e-6)  # training goes on with its own
        assert math.isclose(history.history["val_loss"][epoch], average, rel_tol=1e-6)
        assert not math.isclose(average, raw)
    assert math.isclose(float(model.get_weights()[0][0, 0]), average, rel_tol=1e-6)


def test_the_swap_puts_the_training_weights_back_bit_for_bit():
    model = _one_weight_model(0.9)
    model.fit(np.ones((4, 1)), np.zeros((4, 1)), batch_size=1, verbose=0)
    model.trainable_variables[0].assign([[np.float32(0.1) / 3]])
    before = model.get_weights()[0].copy()
    with ema.averaged(model):
        inside = model.get_weights()[0].copy()
    assert not np.array_equal(inside, before)
    assert model.get_weights()[0].tobytes() == before.tobytes()
    with ema.averaged(_one_weight_model(0)):  # no average: nothing to swap
        pass


# -- a run that is preempted keeps its average ---------------------------------------------------

RUN = ["model.name=tiny_cnn", "train.epochs=3", "train.batch_size=8", "data.samples_per_class=24",
       "train.steps_per_execution=1", "train.early_stopping_patience=0", "train.ema=0.9",
       "train.label_smoothing=0.1", "output.plots=false", "output.report=false",
       "output.saved_model=false",
       "data.augment=[flip_left_right, translate, zoom, rotate, brightness, contrast, noise, "
       "mixup, cutmix]"]


def _job(out, name, sig="NONE", when=0, extra=()):
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tests", "preempted_job.py"), sig, str(when), str(out),
         f"name={name}", *RUN, *extra], cwd=ROOT, capture_output=True, text=True, timeout=400,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT))
    return done


def _arrays(found):
    """Weights as a list in a fixed order (by shape, then bytes), whatever they are named."""
    return sorted((np.asarray(a) for a in found), key=lambda a: (a.shape, a.tobytes()))


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(_arrays(a), _arrays(b)))


def test_a_run_preempted_mid_epoch_and_killed_at_an_epoch_keeps_its_average(tmp_path):
    from preemption_runs import assert_same_weights, weights

    whole = _job(tmp_path, "whole")
    assert whole.returncode == 0, whole.stderr[-3000:]
    reader = tf.train.load_checkpoint(str(tmp_path / "whole" / "checkpoints" / "epoch-0003"))
    keys = reader.get_variable_to_dtype_map()
    slots = [k for k in keys if k.startswith("optimizer/_variables/")]
    assert len(slots) == 3 * 4  # tiny_cnn's 4 weights: Adam's two slots and the average of each
    average = [reader.get_tensor(f"optimizer/_variables/{i}/.ATTRIBUTES/VARIABLE_VALUE")
               for i in range(1, 5)]  # created first, after the step counter
    trained = [reader.get_tensor(k) for k in keys if k.startswith("model/")
               and "optimizer" not in k and k.endswith("VARIABLE_VALUE")]
    assert not _same(average, trained)
    # 7 steps an epoch: SIGTERM in epoch 1, then SIGKILL in epoch 3 (back to epoch 2's checkpoint).
    cut = _job(tmp_path, "r", "SIGTERM", 4)
    assert "preempted: backup after epoch 1 batch 5/7" in cut.stdout + cut.stderr, cut.stderr[-3000:]
    killed = _job(tmp_path, "r", "SIGKILL", 12)
    assert killed.returncode == -9
    assert not (tmp_path / "r" / "model.h5").exists()
    last = _job(tmp_path, "r")
    assert last.returncode == 0, last.stderr[-3000:]
    assert "from its backup" not in last.stdout + last.stderr
    assert_same_weights(tmp_path / "r" / "model.h5", tmp_path / "whole" / "model.h5")
    # A re-run of the finished run without the best epoch saves the last epoch's average.
    again = _job(tmp_path, "whole", extra=["train.restore_best=false"])
    assert again.returncode == 0 and "evaluating only" in again.stdout + again.stderr
    assert _same(weights(tmp_path / "whole" / "model.h5").values(), average)
