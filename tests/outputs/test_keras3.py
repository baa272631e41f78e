"""model.h5 loads in Keras 3 (`import keras`, TensorFlow's own `tf.keras` from 2.16 on) and
predicts what tf-keras predicts, for every registered architecture on both tasks."""

import json
import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np

from conftest import ROOT

KERAS3 = textwrap.dedent("""
    import json, sys
    import numpy as np
    import keras
    import tensorflow as tf
    assert keras.__version__.startswith("3."), keras.__version__
    assert tf.keras.models.load_model is keras.models.load_model  # one loader, either spelling
    out = {}
    for path in json.loads(sys.argv[1]):
        model = keras.models.load_model(path, compile=False)
        np.save(path + ".keras3.npy", model.predict(np.load(path + ".x.npy"), verbose=0))
        out[path] = [layer.__class__.__name__ for layer in model.layers]
    print(json.dumps(out))
""")

BRANCHING = (
    "from trainer.kerasflavor import keras\n"
    "def residual(input_shape, num_outputs):\n"
    "    inputs = keras.Input(input_shape)\n"
    "    x = keras.layers.Conv2D(4, 3, padding='same', activation='relu')(inputs)\n"
    "    y = keras.layers.Conv2D(4, 3, padding='same')(x)\n"
    "    x = keras.layers.Add()([x, keras.layers.Dropout(0.2)(y)])\n"
    "    x = keras.layers.GlobalAveragePooling2D()(x)\n"
    "    return keras.Model(inputs, keras.layers.Dense(num_outputs)(x), name='residual')\n")


def test_every_model_file_loads_in_keras3_with_the_same_predictions(tmp_path, monkeypatch):
    from trainer import config
    from trainer.backbones import SPECS  # tf-keras backbones: their own test file
    from trainer.models import REGISTRY, as_float32, build_model
    from trainer.outputs import modelfile
    from trainer.runtime import devices

    (tmp_path / "my_branching.py").write_text(BRANCHING)  # a user's graph that is not a chain
    monkeypatch.syspath_prepend(str(tmp_path))
    devices.seed_everything(0, False)  # as a run does: dropout layers then carry `rng_type`
    rng = np.random.default_rng(0)
    paths, expected = [], {}
    for task in ("classification", "regression"):
        for name in [*sorted(n for n in REGISTRY if n not in SPECS), "my_branching:residual"]:
            small = ["model.layer_param=4"] if name in ("raccoon", "penguin") else []
            cfg = config.load(None, [f"task={task}", f"model.name={name}", *small])
            shape = (64, 64, 1) if small else (24, 24, 3)
            outputs = 3 if task == "classification" else 2
            model = as_float32(build_model(cfg, shape, outputs, np.full(shape[-1], 0.5),
                                           np.full(shape[-1], 2.0)))
            path = str(tmp_path / f"{task}-{name.replace(':', '-')}.h5")
            meta = {"task": task, "class_names": ["a", "b", "c"] if outputs == 3 else None}
            modelfile.save(model, path, meta)
            x = rng.normal(size=(5, *shape)).astype(np.float32)
            np.save(path + ".x.npy", x)
            loaded, _ = modelfile.load(path)  # tf-keras, as trainer.predict loads it
            expected[path] = model.predict(x, verbose=0)
            np.testing.assert_allclose(loaded.predict(x, verbose=0), expected[path], atol=1e-6)
            paths.append(path)
            with h5py.File(path) as f:
                assert "rng_type" not in f.attrs["model_config"]
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    proc = subprocess.run([sys.executable, "-c", KERAS3, json.dumps(paths)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    layers = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(layers) == sorted(paths)
    for path in paths:
        np.testing.assert_allclose(np.load(path + ".keras3.npy"), expected[path], atol=1e-5,
                                   err_msg=path)
        assert "Dense" in layers[path] and "Functional" not in layers[path]
