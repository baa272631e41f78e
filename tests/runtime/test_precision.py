"""Mixed precision, XLA and replica-aware batching: what can be checked on a CPU."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from trainer import config, models
from trainer.training import compiling
from trainer.backbones import SPECS
from trainer.outputs import modelfile
from trainer.runtime import devices
from trainer.runtime.devices import Accelerators
from trainer.kerasflavor import keras, tf

from conftest import ROOT, blob_images, run_job, write_npz

CPU_ONLY = Accelerators(cpus=2, gpus=())
CPU_BF16 = Accelerators(cpus=2, gpus=(), cpu_bf16=True)
V100 = Accelerators(cpus=8, gpus=({"name": "Tesla V100", "compute_capability": (7, 0)},))
A100 = Accelerators(cpus=8, gpus=({"name": "A100", "compute_capability": (8, 0)},), cpu_bf16=False)
K80 = Accelerators(cpus=8, gpus=({"name": "Tesla K80", "compute_capability": (3, 7)},),
                   cpu_bf16=True)  # a GPU machine computes on its GPU, whatever its CPU has


@pytest.mark.parametrize("setting, acc, policy", [
    ("auto", CPU_ONLY, "float32"), ("auto", CPU_BF16, "mixed_bfloat16"),
    ("auto", V100, "mixed_float16"), ("auto", A100, "mixed_bfloat16"), ("auto", K80, "float32"),
    ("float16", CPU_ONLY, "mixed_float16"), ("bfloat16", CPU_ONLY, "mixed_bfloat16"),
    ("off", V100, "float32"),
])
def test_precision_policy_follows_the_hardware(setting, acc, policy):
    assert devices.precision_policy(setting, acc) == policy


@pytest.mark.parametrize("flags, expected", [
    ("fpu vme avx512f avx512_bf16 amx_tile", True), ("fpu amx_bf16 amx_tile", True),
    ("fpu avx2 avx512f avx512_vnni", False)])
def test_bfloat16_cpus_are_found_by_their_flags(tmp_path, flags, expected):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: x\nflags\t\t: {flags}\n\n")
    assert devices._cpu_has_bf16(str(info)) is expected
    assert devices._cpu_has_bf16(str(tmp_path / "missing")) is False


def test_deterministic_ops_are_a_cpu_default_only():
    assert devices.deterministic("auto", CPU_BF16) is True
    assert devices.deterministic("auto", A100) is False
    assert devices.deterministic(True, A100) is True and devices.deterministic(False, CPU_ONLY) is False


def test_xla_is_a_gpu_default_only():
    assert devices.use_xla("auto", CPU_ONLY) is False
    assert devices.use_xla("auto", V100) is True
    assert devices.use_xla(True, CPU_ONLY) is True and devices.use_xla(False, V100) is False
    # this machine, whatever it has: the GPUs TensorFlow sees, no more and no fewer
    assert len(devices.accelerators().gpus) == len(tf.config.list_physical_devices("GPU"))


@pytest.mark.parametrize("name", sorted(n for n in models.REGISTRY if n not in SPECS))
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_float16_graph_keeps_outputs_and_loss_in_float32(name, task):
    cfg = config.from_dict({"task": task, "model": {"name": name, "layer_param": 2}
                            if name in ("raccoon", "penguin") else {"name": name}})
    model = models.build_model(cfg, (32, 32, 1), 3, np.zeros(1, np.float32), np.ones(1, np.float32),
                               policy="mixed_float16")
    compiling.compile_model(model, cfg.train)
    body = model.get_layer(name)
    computing = [layer for layer in body.layers if layer.weights]
    assert computing and all(layer.compute_dtype == "float16" for layer in computing)
    assert all(w.dtype == tf.float32 for w in model.weights)  # variables stay float32
    assert model.get_layer("standardize").compute_dtype == "float32"
    assert model.layers[-1].compute_dtype == "float32" and model.output.dtype == tf.float32
    assert isinstance(model.optimizer, keras.mixed_precision.LossScaleOptimizer)
    # the loss is computed from the float32 outputs
    y = np.zeros((2,), np.int64) if task == "classification" else np.zeros((2, 3), np.float32)
    loss = model.compiled_loss(tf.constant(y), model(np.zeros((2, 32, 32, 1), np.float32)))
    assert loss.dtype == tf.float32
    # the default policy is restored for whatever is built next
    assert keras.mixed_precision.global_policy().name == "float32"


def test_bfloat16_run_saves_a_float32_model_that_agrees(tmp_path):
    x, label, _ = blob_images(200, size=16, seed=4)
    write_npz(tmp_path / "d", "s.npz", x, label)
    result, cfg = run_job(tmp_path / "out", "name=bf16", "data.format=npz",
                          f"data.train={tmp_path / 'd' / 's.npz'}", "model.name=shapes_cnn",
                          "train.mixed_precision=bfloat16", "train.epochs=3",
                          "train.steps_per_execution=4")
    assert result.metrics["test"]["accuracy"] > 0.7  # it trained, in bf16
    training = json.loads(open(result.outputs["metrics"]).read())["training"]
    assert training["precision_policy"] == "mixed_bfloat16"
    assert training["steps_per_execution"] == 4
    # the utilisation, against the bfloat16 peak
    # 3 passes x 2 FLOPs per multiply-add: three 3x3 convolutions at 16x16, 8x8, 4x4, the dense head
    assert training["train_flops_per_sample"] == 3 * 2 * (16 * 16 * 9 * 12 + 8 * 8 * 9 * 12 * 12
                                                          + 4 * 4 * 9 * 12 * 24 + 384 * 2)
    assert 0 < training["mfu"] < 1 and training["matmul_peak_flops"] > 1e9
    assert training["xla"] is devices.use_xla("auto", devices.accelerators())  # a GPU's default
    loaded, _ = modelfile.load(result.outputs["model"])
    assert {layer.dtype_policy.name for layer in models._all_layers(loaded)} == {"float32"}
    stats = loaded.get_layer("standardize").get_config()
    bf16 = models.build_model(cfg, (16, 16, 1), 2, np.array(stats["mean"], np.float32).ravel(),
                              np.array(stats["variance"], np.float32).ravel(), policy="mixed_bfloat16")
    bf16.set_weights(loaded.get_weights())
    probe = blob_images(64, size=16, seed=99)[0][..., None]
    p32 = loaded.predict(probe, verbose=0)
    p16 = bf16.predict(probe, verbose=0)
    assert p32.dtype == np.float32
    diff = float(np.abs(p32 - p16).max())
    print(f"bf16 vs fp32: max |dp| = {diff:.4f}, argmax agreement = "
          f"{(p32.argmax(1) == p16.argmax(1)).mean():.3f}")
    assert diff < 0.05  # bfloat16 keeps 8 bits of mantissa: about 2-3 significant digits


def test_regression_head_is_float32_and_saves_as_float32():
    cfg = config.from_dict({"task": "regression", "model": {"name": "hexagonal_cnn"}})
    model = models.build_model(cfg, (32, 32, 1), 2, policy="mixed_float16")
    assert model.layers[-1].name == "outputs" and model.output.dtype == tf.float32
    plain = models.as_float32(model)
    assert all(layer.compute_dtype == "float32" for layer in models._all_layers(plain))
    probe = np.random.default_rng(0).normal(size=(4, 32, 32, 1)).astype(np.float32)
    np.testing.assert_allclose(plain.predict(probe, verbose=0), model.predict(probe, verbose=0),
                               atol=0.05)


def test_global_batch_and_scaled_learning_rate_on_two_replicas(tmp_path, blob_npz):
    """Seed 002's multi-device path: two logical CPU devices under MirroredStrategy, in a fresh
    process (logical devices must be configured before TensorFlow starts)."""
    script = textwrap.dedent(f"""
        from trainer.kerasflavor import tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from trainer import config, job
        from trainer.runtime import logs
        from trainer.runtime.platform import Platform
        logs.setup_logging()
        cfg = config.load(None, ["name=m", "data.format=npz", "data.train={blob_npz}",
                                 "model.name=tiny_cnn", "train.epochs=1", "train.strategy=mirrored",
                                 "train.batch_size=8", "train.learning_rate=0.01",
                                 "train.scale_lr_with_replicas=true",
                                 "train.lr_schedule=constant"], output_dir={str(tmp_path)!r})
        job.run(cfg, Platform())
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "global batch: 16 (8 per replica x 2); learning rate: 0.02 (scaled with replicas)" in proc.stdout
    training = json.loads((tmp_path / "m" / "metrics.json").read_text())["training"]
    assert (training["replicas"], training["global_batch"], training["learning_rate"]) == (2, 16, 0.02)
    # the optimizer really ran at the scaled rate: read it back from the saved checkpoint
    state = json.loads((tmp_path / "m" / "checkpoints" / "state.json").read_text())
    reader = tf.train.load_checkpoint(str(tmp_path / "m" / "checkpoints" / state["last"]))
    lr_keys = [k for k in reader.get_variable_to_shape_map() if "learning_rate" in k]
    assert lr_keys and reader.get_tensor(lr_keys[0]) == pytest.approx(0.02)
